"""The status board: what the platform is, whether it is ready, what it can run and how busy it is,
from figures that cost the same whatever the ledger and the store hold (counts by state, the store's
own counters).

Ready means every part Conveyor depends on answers: its own store, the ledger, each enabled
backend, and that the data directory's disk has room for jobs. A store behind a service that does not
answer (a Ceph or an S3 that is down) makes only that service's jobs wait: it is listed, and the
platform stays ready.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from conveyor.backends.base import Resources
from conveyor.backends.registry import Backends
from conveyor.control.credentials import StoreAccess
from conveyor.dispatch.disk import DiskGate
from conveyor.dispatch.outages import Outages
from conveyor.ledger.store import Ledger
from conveyor.model.job import JobState
from conveyor.model.kinds import DEFAULT_PROVIDER


@dataclass(frozen=True)
class StoreFigures:
    buckets: int
    objects: int
    """From the store's counters (see EmbeddedSeaweed.object_count), not from a listing."""


@dataclass(frozen=True)
class PlatformFigures:
    resources: Resources | None
    """Of the local backend, the one whose machine this is."""
    jobs: dict[JobState, int]
    """Jobs of every service, by state."""
    store: StoreFigures


@dataclass(frozen=True)
class Readiness:
    problems: dict[str, str]
    """What keeps the platform from working, by part (`store`, `ledger`, `backend local`, `disk`): why."""
    waiting: dict[str, str]
    """Stores behind services that do not answer, and why: their services' jobs wait."""

    @property
    def ready(self) -> bool:
        return not self.problems


class StatusBoard:
    def __init__(
        self,
        *,
        backends: Backends,
        ledger: Ledger,
        store: StoreAccess,
        store_figures: Callable[[], StoreFigures],
        api_url: str,
        started_at: datetime,
        running_jobs: Callable[[], int],
        warnings: list[str],
        store_problem: Callable[[], str | None] = lambda: None,
        outages: Outages | None = None,
        disk: DiskGate | None = None,
    ) -> None:
        self._backends = backends
        self._ledger = ledger
        self.store = store
        """The platform's own store as clients reach it (OSCAR's `minio_provider`)."""
        self._store_figures = store_figures
        self.api_url = api_url
        self.started_at = started_at
        self._running_jobs = running_jobs
        self.warnings = warnings
        self._store_problem = store_problem
        """Why the platform's own store is not serving (its watchdog knows); None while it is."""
        self._outages = outages
        self._disk = disk

    def readiness(self) -> Readiness:
        problems: dict[str, str] = {}
        waiting = {outage.provider: outage.reason for outage in self._outages.current()} if self._outages else {}
        store = self._store_problem() or waiting.pop(DEFAULT_PROVIDER, None)
        if store:
            problems["store"] = store
        try:
            self._ledger.ping()
        except SQLAlchemyError as error:
            problems["ledger"] = f"the ledger cannot be read: {error.__class__.__name__}: {error}".splitlines()[0]
        for kind, backend in self._backends.items():
            if problem := backend.problem():
                problems[f"backend {kind}"] = problem
        if self._disk is not None and (low := self._disk.holding()):
            problems["disk"] = low
        return Readiness(problems=problems, waiting=waiting)

    def figures(self) -> PlatformFigures:
        local = self._backends.get("local")
        jobs: dict[JobState, int] = {}
        for states in self._ledger.count_jobs().values():
            for state, number in states.items():
                jobs[state] = jobs.get(state, 0) + number
        return PlatformFigures(
            resources=local.resources() if local is not None else None, jobs=jobs, store=self._store_figures()
        )

    def summary(self) -> dict[str, Any]:
        """Conveyor's own status: where it answers, how jobs run, what runs now, jobs by service and state."""
        counts = self._ledger.count_jobs()
        return {
            "api_url": self.api_url,
            "s3_endpoint": self.store.endpoint,
            "backend": self._backends[self._backends.default].describe(),
            "backends": {kind: backend.describe() for kind, backend in self._backends.items()},
            "jobs_running": self._running_jobs(),
            "warnings": self.warnings,
            "jobs": {service: {state.value: n for state, n in states.items()} for service, states in counts.items()},
        }
