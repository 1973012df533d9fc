"""Backends by kind: the classes that implement each kind, and the set a platform runs.

`BACKENDS` maps every kind of `model.kinds.BACKEND_KINDS` to its class as `module:Class` (kombu's
`TRANSPORT_ALIASES`: a module is imported only when its kind is used, so a platform without Slurm
never loads it). `Backends` is what a platform built from them: the dispatcher submits through it,
the catalog asks it whether a service's backend runs here, the status reports what it describes.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Iterator

from conveyor.backends.base import Backend, BackendContext
from conveyor.errors import BackendUnavailable
from conveyor.model.kinds import BACKEND_KINDS
from conveyor.model.service import Service

BACKENDS: dict[str, str] = {
    "local": "conveyor.backends.local.backend:LocalBackend",
    "slurm": "conveyor.backends.slurm.backend:SlurmBackend",
    "kubernetes": "conveyor.backends.kubernetes.backend:KubernetesBackend",
}
"""Backend kind → its class, as `module:Class`."""

log = logging.getLogger(__name__)


def backend_class(kind: str) -> type[Backend]:
    if kind not in BACKENDS:
        hint = difflib.get_close_matches(kind, BACKENDS, n=1)
        did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
        raise BackendUnavailable(f"there is no backend {kind!r} (known: {', '.join(BACKEND_KINDS)}){did_you_mean}")
    module_name, _, attribute = BACKENDS[kind].partition(":")
    found: type[Backend] = getattr(importlib.import_module(module_name), attribute)
    return found


class Backends:
    """The backends enabled on one platform, by kind; `default` runs services that name none."""

    def __init__(self, enabled: dict[str, Backend], default: str) -> None:
        self._enabled = enabled
        self.default = default

    @classmethod
    def build(cls, kinds: list[str], default: str, context: BackendContext) -> Backends:
        """Each kind's backend from its settings; the ones built are closed again if one fails."""
        built: dict[str, Backend] = {}
        try:
            for kind in kinds:
                built[kind] = backend_class(kind).create(context)
        except BaseException:
            cls(built, default).close()
            raise
        return cls(built, default)

    def kind_for(self, service: Service) -> str:
        return service.backend or self.default

    def for_service(self, service: Service) -> Backend | None:
        """Where the service's jobs run; None when its backend is not enabled here."""
        return self._enabled.get(self.kind_for(service))

    def cannot_run(self, service: Service) -> str | None:
        """Why the service's jobs cannot run here (its backend is not enabled, or refuses it), or None."""
        kind = self.kind_for(service)
        if kind in self._enabled:
            return self._enabled[kind].refusal_for(service)
        return (
            f"backend {kind!r} is not enabled on this platform: set `enabled = true` under [{kind}] in "
            f"conveyor.toml (or CONVEYOR_{kind.upper()}__ENABLED=true) and restart"
        )

    def __getitem__(self, kind: str) -> Backend:
        return self._enabled[kind]

    def get(self, kind: str) -> Backend | None:
        return self._enabled.get(kind)

    def items(self) -> Iterator[tuple[str, Backend]]:
        return iter(self._enabled.items())  # built once, never changed: no copy needed

    def __iter__(self) -> Iterator[Backend]:
        return iter(self._enabled.values())

    def __len__(self) -> int:
        return len(self._enabled)

    def notices(self) -> list[str]:
        return [notice for backend in self for notice in backend.notices()]

    def close(self) -> None:
        for kind, backend in self.items():
            try:
                backend.close()
            except Exception:  # close the others all the same
                log.exception("closing the %s backend failed", kind)
