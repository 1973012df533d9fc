"""Jobs: one run of a service's script for one event or one HTTP request."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from conveyor.model.event import ObjectEvent, ObjectInfo
from conveyor.model.service import Service


class JobState(StrEnum):
    """Where a job is. Every backend reports in these states and nothing else."""

    QUEUED = "queued"
    """Recorded in the ledger, waiting for capacity."""
    RUNNING = "running"
    """Handed to a backend: staging in, running the script or staging out."""
    SUCCEEDED = "succeeded"
    """The script exited 0 and every output was stored."""
    FAILED = "failed"
    """The script exited non-zero, or staging, the image or the engine failed."""
    TIMED_OUT = "timed_out"
    """Killed when it ran past the service's `timeout`."""
    CANCELLED = "cancelled"
    """Stopped on request, or its service was deleted before it ran."""
    DEAD = "dead"
    """Failed every attempt it was allowed (or went past the lineage limit); kept with its logs and
    cause until `conveyor retry` replays it."""
    UNKNOWN = "unknown"
    """The backend cannot say; never treated as finished."""


TERMINAL_STATES = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED, JobState.DEAD}
)
FAILED_STATES = frozenset({JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED, JobState.DEAD})

Failure = Literal["script", "timeout", "infrastructure", "input", "unavailable"]
"""Why an attempt failed: the script (non-zero exit), its time limit, the platform around it (storage,
engine, image), its input (the object vanished, an unsafe key), or a store that did not answer at all
(`unavailable`: down or restarting; also the container engine, or a full disk under the data
directory). Only `infrastructure` is retried unless the service opts in to retrying script failures;
`input` never is. An `unavailable` job waits for what it needs, however long, and the wait is not an
attempt: it never makes the job a dead letter."""

ENGINE = "engine"
"""`JobOutcome.waiting_for` when the backend's container engine did not answer."""
DISK = "disk"
"""`JobOutcome.waiting_for` when the disk under the data directory is full."""
CLUSTER = "cluster"
"""`JobOutcome.waiting_for` when a cluster's API (Kubernetes) did not answer a submit."""
QUOTA = "quota"
"""`JobOutcome.waiting_for` when a Kubernetes namespace's ResourceQuota has no room for the job's pod."""
_AWAITED = {
    ENGINE: "the container engine, which does not answer",
    DISK: "free space under the data directory",
    QUOTA: "room in the Kubernetes namespace's ResourceQuota",
    CLUSTER: "the cluster's API, which does not answer",
}


def job_id_prefix(service: str, given: str) -> str:
    """The start of the service's job ids (`<service>-<uuid4>`) that `given` stands for: a whole id,
    the short id `conveyor jobs` shows (`<service>-<first hex>`), or the start of the uuid alone, as
    users copy it from logs and paths."""
    return given if given.startswith(f"{service}-") else f"{service}-{given}"


OSCAR_STATUS = {
    JobState.QUEUED: "Pending",
    JobState.RUNNING: "Running",
    JobState.SUCCEEDED: "Succeeded",
    JobState.FAILED: "Failed",
    JobState.TIMED_OUT: "Failed",
    JobState.CANCELLED: "Failed",
    JobState.DEAD: "Failed",
    JobState.UNKNOWN: "Unknown",
}


class JobSpec(BaseModel):
    """Everything a backend needs to run one job. Secrets are filled in, so never log it whole."""

    job_id: str
    service: Service
    event: ObjectEvent | None = None
    request_path: Path | None = None
    """Body of an HTTP invocation (`/run`, `/job`) when the job is not about a stored object."""
    sync: bool = False
    """A caller waits for the response (`/run`): the supervisor builds one."""
    attempt: int = 1
    depth: int = 0
    """Lineage depth (see JobRecord.depth); stamped on the outputs."""
    work_dir: Path
    log_path: Path
    batch: list[JobSpec] = Field(default_factory=list)
    """The other jobs of the same service run together with this one (see Service.batch); each
    ends with its own outcome in JobOutcome.members. Empty: this job runs alone."""

    @property
    def inputs(self) -> list[JobSpec]:
        """Every job this run serves: this one, then its batch."""
        return [self, *self.batch]


class JobOutcome(BaseModel):
    """How a job ended, as the supervisor saw it."""

    state: JobState
    exit_code: int | None = None
    message: str = ""
    failure: Failure | None = None
    outputs: list[ObjectInfo] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    response: bytes | None = None
    members: dict[str, JobOutcome] = Field(default_factory=dict)
    """A batch's outcome for each of its jobs (JobSpec.inputs), by job id."""
    waiting_for: str | None = None
    """With failure `unavailable`: what did not answer: a store (`minio.default`, `s3.ceph`), ENGINE or DISK."""

    @property
    def waiting_for_store(self) -> str | None:
        """The store the job waits for (None when it waits for the engine or the disk, or nothing)."""
        return None if self.waiting_for in _AWAITED else self.waiting_for

    def awaited(self) -> str:
        """What the job waits for, in words."""
        return _AWAITED.get(self.waiting_for or "", f"{self.waiting_for or 'its store'}, which does not answer")


class JobHandle(BaseModel):
    """A backend's receipt for a submitted job."""

    job_id: str
    backend: str
    native_id: str = ""


class JobStatus(BaseModel):
    handle: JobHandle
    state: JobState
    outcome: JobOutcome | None = None
    """Present once the state is terminal."""


class JobRecord(BaseModel):
    """A job as the ledger keeps it: what `conveyor jobs` and the API show."""

    job_id: str
    service: str
    state: JobState
    attempt: int = 1
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    message: str = ""
    trigger: ObjectInfo | None = None
    """The object whose arrival started the job; None for HTTP invocations."""
    outputs: list[ObjectInfo] = Field(default_factory=list)
    parent_job: str | None = None
    """The job that wrote the triggering object, when a job of this platform did."""
    depth: int = 0
    """How many jobs lie between this one and a file a user put (0 for those)."""
    not_before: datetime | None = None
    """A queued retry waits until then."""

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None
