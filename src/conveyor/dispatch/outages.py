"""Stores that do not answer, and the jobs that wait for them instead of failing.

    a job's store did not answer (failure `unavailable`) ─▶ report(provider) ─┐
    the embedded store's watchdog saw it exit ──────────▶ declare(provider) ──┴─▶ the store is down
    dispatcher ─ holding(service)? ─▶ the jobs of services that read or write it stay queued
    prober thread ─ every PROBE_S, a HEAD of a missing key on each store that is down ─▶ any answer,
        even a refusal ─▶ the store is up again: listeners are told (jobs resume, a reconciliation
        round looks for uploads whose notification was lost meanwhile)

A store is down from the first job that could not reach it until a probe gets an answer: an answer
means it is up, and a job that fails then fails for a reason of its own, counted as usual.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from conveyor.errors import ConveyorError, StorageUnreachable
from conveyor.listeners import Listeners
from conveyor.model.event import ObjectRef
from conveyor.model.service import Service
from conveyor.storage.registry import ProviderRegistry

log = logging.getLogger(__name__)

PROBE_S = 1.0
"""How often a store that is down is asked again."""
PROBE_KEY = ".conveyor-probe"
"""A key no one writes: the probe asks for it, and any answer, a 404 above all, means the store is up."""
PROBE_BUCKET = "conveyor-probe"


@dataclass
class Outage:
    provider: str
    reason: str
    since: float = field(default_factory=time.monotonic)
    service: Service | None = None
    """A service that names the store, whose settings reach it (None for the platform's own store)."""
    bucket: str = PROBE_BUCKET

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.since


Listener = Callable[[Outage], None]


class Outages:
    def __init__(self, storage: ProviderRegistry, *, probe_s: float = PROBE_S) -> None:
        self._storage = storage
        self._probe_s = probe_s
        self._down: dict[str, Outage] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_down: Listeners[Outage] = Listeners("the store outages")
        self._on_up: Listeners[Outage] = Listeners("the store outages")

    def on_down(self, listener: Listener) -> None:
        self._on_down.add(listener)

    def on_up(self, listener: Listener) -> None:
        """Called when a store answers again, with its outage (how long it lasted)."""
        self._on_up.add(listener)

    # ---- what jobs and watchdogs say --------------------------------------------------------

    def report(self, provider: str, service: Service, reason: str) -> None:
        """A job of `service` could not reach `provider`."""
        bucket = next((io.bucket for io in service.paths if io.storage_provider == provider), None)
        self._mark_down(Outage(provider, reason, service=service, bucket=bucket or PROBE_BUCKET))

    def declare(self, provider: str, reason: str) -> None:
        """The store is known to be down (its process exited) before any job fails on it."""
        self._mark_down(Outage(provider, reason))

    def clear(self, provider: str) -> None:
        """The store is known to be up again (its process is back)."""
        with self._lock:
            outage = self._down.pop(provider, None)
        if outage is not None:
            self._on_up.tell(outage)

    # ---- what the dispatcher asks ------------------------------------------------------------

    def holding(self, service: Service) -> str | None:
        """The store that is down which the service reads or writes, if any: its jobs wait."""
        if not self._down:  # the usual case, without a lock
            return None
        with self._lock:
            return next(
                (io.storage_provider for io in service.paths if io.storage_provider in self._down),
                None,
            )

    def current(self) -> list[Outage]:
        with self._lock:
            return list(self._down.values())

    # ---- probing ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._probe_loop, name="store-outages", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _probe_loop(self) -> None:
        while not self._stopping.wait(self._probe_s):
            for outage in self.current():
                if self._answers(outage):
                    self.clear(outage.provider)

    def _answers(self, outage: Outage) -> bool:
        try:
            store = self._storage.provider(outage.provider, outage.service)
            store.stat(ObjectRef(provider=outage.provider, bucket=outage.bucket, key=PROBE_KEY))
        except StorageUnreachable:
            return False
        except ConveyorError:
            return True  # it answered, if only to refuse: it is up
        return True

    def _mark_down(self, outage: Outage) -> None:
        with self._lock:
            if outage.provider in self._down:
                return
            self._down[outage.provider] = outage
        self._on_down.tell(outage)
