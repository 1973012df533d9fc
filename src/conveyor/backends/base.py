"""The backend interface.

    dispatcher ── can_accept(job)? ── submit(job) ──▶ JobHandle
         ▲                                              │ the job runs: supervisor + script
         └── listener() ◀── state changed ── status(handles) ──▶ [JobStatus] (terminal ones carry the outcome)

A backend decides *where* a job runs; the supervisor (the same everywhere) decides *what* runs.
`submit` returns a handle or raises SubmitError; it never returns None. An unknown native state
stays UNKNOWN, never "finished".
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

from conveyor.model.job import JobHandle, JobOutcome, JobSpec, JobState, JobStatus
from conveyor.model.service import Service

if TYPE_CHECKING:
    from conveyor.layout import DataLayout
    from conveyor.settings import Settings
    from conveyor.storage.registry import ProviderRegistry
    from conveyor.storage.s3 import S3Credentials
    from conveyor.supervisor.remote import RemoteStaging

log = logging.getLogger(__name__)

Listener = Callable[[], None]
Notice = Callable[[str, str], None]
"""(level, message): what `conveyor up` prints as it happens; level is `warning`, `note` or `error`."""


def log_notice(level: str, message: str) -> None:
    """Without a platform to print notices, the backend's own log has them."""
    log.log({"warning": logging.WARNING, "error": logging.ERROR}.get(level, logging.INFO), "%s", message)


@dataclass(frozen=True)
class BackendContext:
    """What a platform hands every backend it builds (`Backend.create`)."""

    settings: Settings
    layout: DataLayout
    storage: ProviderRegistry
    """The stores jobs read and write, for backends whose supervisor runs in this process."""
    platform_store: S3Credentials
    """The platform's own store as jobs that run elsewhere (Slurm nodes) reach it."""
    notice: Notice = log_notice
    """Tells the operator what happens to the backend (its engine goes away, comes back)."""
    staging: RemoteStaging | None = None
    """The platform's API as a door for jobs' pods to stage files (backends whose pods have no store access)."""
    api_url: str | None = None
    """The platform's API URL (its public one when set)."""


@dataclass(frozen=True)
class Resources:
    """What a backend's jobs may use together, and what its running jobs hold now."""

    cpus: float
    memory: int
    used_cpus: float
    used_memory: int


class Tracked(Protocol):
    """A job a backend follows until it ends: its outcome once it has one."""

    outcome: JobOutcome | None


def statuses_of(handles: list[JobHandle], tracked: dict[str, Any]) -> list[JobStatus]:
    """For backends that record each job's end as it happens (a watch, a poller): running until the
    job has an outcome, then that outcome once, after which the job is forgotten; unknown when not
    followed. `tracked` maps job ids to Tracked entries; call it under the lock that guards it."""
    statuses = []
    for handle in handles:
        entry: Tracked | None = tracked.get(handle.job_id)
        if entry is None:
            statuses.append(JobStatus(handle=handle, state=JobState.UNKNOWN))
        elif entry.outcome is None:
            statuses.append(JobStatus(handle=handle, state=JobState.RUNNING))
        else:
            del tracked[handle.job_id]
            statuses.append(JobStatus(handle=handle, state=entry.outcome.state, outcome=entry.outcome))
    return statuses


class Backend(ABC):
    name: ClassVar[str]
    """Registry key: the same string as the module, the settings section and the FDL value."""
    full_per_service: ClassVar[bool] = False
    """True: `can_accept` refuses a job for its service's sake (an admission limit per service), so
    jobs of other services may still start; False: a refusal means the whole backend is full."""
    runs_batches: ClassVar[bool] = False
    """True: a submitted JobSpec may carry a batch (JobSpec.batch) and its outcome one outcome per job
    (JobOutcome.members). The dispatcher forms batches only for such backends."""

    def __init__(self) -> None:
        self._listener: Listener = lambda: None

    @classmethod
    @abstractmethod
    def create(cls, context: BackendContext) -> Self:
        """The backend as the platform's settings configure it (its own section of them)."""

    def set_listener(self, listener: Listener) -> None:
        """`listener` is called (from any thread) whenever a job may have changed state."""
        self._listener = listener

    @abstractmethod
    def describe(self) -> str:
        """One line saying how jobs run here (engine, version, limits)."""

    def notices(self) -> list[str]:
        """What `conveyor up` should say about this backend (e.g. a fallback it took)."""
        return []

    def problem(self) -> str | None:
        """Why the backend cannot run jobs now (its engine or controller does not answer); None when it can."""
        return None

    def resources(self) -> Resources | None:
        """CPU and memory for jobs, and what running jobs hold; None when the backend cannot tell."""
        return None

    def warnings_for(self, service: Service) -> list[str]:
        """What a user deploying `service` here should know (e.g. an image that will be ignored)."""
        return []

    def refusal_for(self, service: Service) -> str | None:
        """Why this backend can never run the service's jobs as configured (a missing namespace, a
        permission it lacks): `apply` refuses the service with it. None when it can, or cannot tell."""
        return None

    @abstractmethod
    def can_accept(self, job: JobSpec) -> bool:
        """Whether the backend has room to start `job` now."""

    def may_have_room(self) -> bool:
        """False when no job at all could start now: the dispatcher then skips reading the queue."""
        return True

    @abstractmethod
    def submit(self, job: JobSpec) -> JobHandle: ...

    def adopt(self, job: JobSpec) -> JobHandle | None:
        """Take over a job an earlier platform process started and did not see end.

        Returns a handle when the job is still running or left a result to collect; None when
        nothing of it survived, so it must run again. Backends that cannot tell return None.
        """
        return None

    def recovered(self) -> None:  # noqa: B027 - optional hook
        """Every job an earlier platform left was adopted or queued again: tidy what nobody adopted."""

    @abstractmethod
    def status(self, handles: list[JobHandle]) -> list[JobStatus]: ...

    @abstractmethod
    def cancel(self, handles: list[JobHandle]) -> list[bool]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop accepting jobs and release resources."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
