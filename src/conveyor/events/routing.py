"""Which services an object event triggers: those with an input path the object lies under."""

from __future__ import annotations

import threading
from collections import defaultdict

from conveyor.model.event import ObjectRef
from conveyor.model.service import Service


class InputIndex:
    """Input paths by (provider, bucket), rebuilt whenever services change.

    Lookups happen once per event on the hot path; rebuilds only on apply and delete.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: dict[tuple[str, str], list[tuple[str, str]]] = {}

    def rebuild(self, services: list[Service]) -> None:
        paths: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for service in services:
            for io in service.input:
                paths[(io.storage_provider, io.bucket)].append((io.folder, service.name))
        with self._lock:
            self._paths = dict(paths)

    def services_for(self, ref: ObjectRef) -> list[str]:
        """Services whose input contains the object; a service appears once however many match."""
        if not ref.key or ref.key.endswith("/"):
            return []
        with self._lock:
            candidates = self._paths.get((ref.provider, ref.bucket), [])
        matched: list[str] = []
        for folder, service in candidates:
            if (not folder or ref.key.startswith(folder + "/")) and service not in matched:
                matched.append(service)
        return matched
