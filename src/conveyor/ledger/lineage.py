"""The ledger's provenance queries: which jobs wrote, were started by and wrote again which
object versions. The walks and the trees built from the answers live in provenance.py.

Each query takes a whole level of a walk at once, in `IN (...)` batches of BATCH values, so a
fan-out of thousands of jobs costs a few statements, not one per job. Answers are plain values,
never rows of the ORM.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, TypeVar

from sqlalchemy import Connection, Row, func, select

from conveyor.ledger.tables import EventRow, JobOutputRow, JobRow
from conveyor.model.event import ObjectRef
from conveyor.model.job import JobState

EVENTS = EventRow.__table__
JOBS = JobRow.__table__
OUTPUTS = JobOutputRow.__table__

BATCH = 500
"""Values in one `IN (...)`: well under every database's limit on bound parameters."""
T = TypeVar("T")


class ObjectKey(NamedTuple):
    """One version of one object."""

    provider: str
    bucket: str
    key: str
    etag: str

    @classmethod
    def of(cls, ref: ObjectRef, etag: str) -> ObjectKey:
        return cls(ref.provider, ref.bucket, ref.key, etag)

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(provider=self.provider, bucket=self.bucket, key=self.key)


@dataclass(frozen=True, slots=True)
class VersionSeen:
    """A version of an object the ledger knows, from its events or its writers' outputs."""

    etag: str
    size: int | None
    seen_at: datetime | None
    """When the ledger first heard of it (an event received, or its writer finishing)."""


@dataclass(frozen=True, slots=True)
class LineageJob:
    """A job as provenance shows it, with the two links a walk follows from it."""

    job_id: str
    service: str
    state: JobState
    attempt: int
    depth: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    message: str
    event_id: int | None
    """The event that started it; None for an HTTP invocation."""
    parent_job: str | None
    """The job the store stamped on the object that started it."""


@dataclass(frozen=True, slots=True)
class LineageOutput:
    """An object version a job wrote."""

    version: ObjectKey
    size: int | None


class Lineage:
    """Provenance queries on the one read transaction of a Ledger.lineage block."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def versions(self, ref: ObjectRef) -> list[VersionSeen]:
        """Every version of `ref` in events or job outputs, oldest first."""
        merged: dict[str, tuple[int | None, datetime | None]] = {}
        heard = self._connection.execute(
            select(EVENTS.c.etag, func.max(EVENTS.c.size), func.min(EVENTS.c.received_at))
            .where(EVENTS.c.provider == ref.provider, EVENTS.c.bucket == ref.bucket, EVENTS.c.key == ref.key)
            .group_by(EVENTS.c.etag)
        )
        written = self._connection.execute(
            select(OUTPUTS.c.etag, func.max(OUTPUTS.c.size), func.min(JOBS.c.finished_at))
            .join(JOBS, JOBS.c.id == OUTPUTS.c.job_id)
            .where(OUTPUTS.c.provider == ref.provider, OUTPUTS.c.bucket == ref.bucket, OUTPUTS.c.key == ref.key)
            .group_by(OUTPUTS.c.etag)
        )
        for etag, size, seen_at in [*heard, *written]:
            known_size, known_at = merged.get(etag, (None, None))
            earliest = min((t for t in (known_at, seen_at) if t is not None), default=None)
            merged[etag] = (known_size if known_size is not None else size, earliest)
        versions = [VersionSeen(etag, size, seen_at) for etag, (size, seen_at) in merged.items()]
        return sorted(versions, key=lambda v: (v.seen_at is None, v.seen_at or datetime.min, v.etag))

    def writers(self, objects: set[ObjectKey]) -> dict[ObjectKey, LineageJob]:
        """The job that wrote each object version: from job_outputs (the latest writer, as the
        lineage check does), else the producer the store stamped on it, kept as its consumers' parent."""
        writers: dict[ObjectKey, LineageJob] = {}
        for buckets, keys in _by_key(objects):
            rows = self._connection.execute(
                select(*_OUTPUT_VERSION, *_JOB_COLUMNS)
                .join(JOBS, JOBS.c.id == OUTPUTS.c.job_id)
                .where(OUTPUTS.c.bucket.in_(buckets), OUTPUTS.c.key.in_(keys))
                .order_by(JOBS.c.seq)
            )
            for row in rows:
                written = ObjectKey(row.provider, row.bucket, row.key, row.etag)
                if written in objects:
                    writers[written] = _job_from(row)  # ordered by seq: the latest wins
        # Outputs are recorded when their job finishes; the stamp names the writer before that.
        unknown = objects - writers.keys()
        parents = {
            obj: parent
            for obj, jobs in self.consumers(unknown).items()
            if (parent := next((job.parent_job for job in jobs if job.parent_job), None))
        }
        jobs_by_id = self._jobs_by_id(set(parents.values()))
        writers.update({obj: jobs_by_id[parent] for obj, parent in parents.items() if parent in jobs_by_id})
        return writers

    def consumers(self, objects: set[ObjectKey]) -> dict[ObjectKey, list[LineageJob]]:
        """The jobs each object version started (through its events), oldest first."""
        events: dict[int, ObjectKey] = {}
        for buckets, keys in _by_key(objects):
            rows = self._connection.execute(
                select(EVENTS.c.id, *_EVENT_VERSION).where(EVENTS.c.bucket.in_(buckets), EVENTS.c.key.in_(keys))
            )
            for event_id, *version in rows:
                if (read := ObjectKey(*version)) in objects:
                    events[event_id] = read
        consumers: dict[ObjectKey, list[LineageJob]] = {}
        for chunk in _chunks(sorted(events)):
            rows = self._connection.execute(
                select(*_JOB_COLUMNS).where(JOBS.c.event_id.in_(chunk)).order_by(JOBS.c.seq)
            )
            for job in map(_job_from, rows):
                if job.event_id is not None:
                    consumers.setdefault(events[job.event_id], []).append(job)
        return consumers

    def triggers(self, jobs: Iterable[LineageJob]) -> dict[str, ObjectKey]:
        """The object version whose event started each job, by job id (HTTP invocations have none)."""
        job_of_event = {job.event_id: job.job_id for job in jobs if job.event_id is not None}
        triggers: dict[str, ObjectKey] = {}
        for chunk in _chunks(sorted(job_of_event)):
            rows = self._connection.execute(select(EVENTS.c.id, *_EVENT_VERSION).where(EVENTS.c.id.in_(chunk)))
            for event_id, *version in rows:
                triggers[job_of_event[event_id]] = ObjectKey(*version)
        return triggers

    def outputs(self, job_ids: set[str]) -> dict[str, list[LineageOutput]]:
        """What each job wrote, in the order it was recorded."""
        outputs: dict[str, list[LineageOutput]] = {}
        for chunk in _chunks(sorted(job_ids)):
            rows = self._connection.execute(
                select(OUTPUTS.c.job_id, *_OUTPUT_VERSION, OUTPUTS.c.size)
                .where(OUTPUTS.c.job_id.in_(chunk))
                .order_by(OUTPUTS.c.id)
            )
            for job_id, *version, size in rows:
                outputs.setdefault(job_id, []).append(LineageOutput(ObjectKey(*version), size))
        return outputs

    def _jobs_by_id(self, job_ids: set[str]) -> dict[str, LineageJob]:
        jobs: dict[str, LineageJob] = {}
        for chunk in _chunks(sorted(job_ids)):
            rows = self._connection.execute(select(*_JOB_COLUMNS).where(JOBS.c.id.in_(chunk)))
            jobs.update({job.job_id: job for job in map(_job_from, rows)})
        return jobs


_EVENT_VERSION = (EVENTS.c.provider, EVENTS.c.bucket, EVENTS.c.key, EVENTS.c.etag)
_OUTPUT_VERSION = (OUTPUTS.c.provider, OUTPUTS.c.bucket, OUTPUTS.c.key, OUTPUTS.c.etag)
_JOB_COLUMNS = (
    JOBS.c.id.label("job_id"),
    JOBS.c.service,
    JOBS.c.status,
    JOBS.c.attempt,
    JOBS.c.depth,
    JOBS.c.created_at,
    JOBS.c.started_at,
    JOBS.c.finished_at,
    JOBS.c.message,
    JOBS.c.event_id,
    JOBS.c.parent_job_id,
)


def _job_from(row: Row) -> LineageJob:
    return LineageJob(
        job_id=row.job_id,
        service=row.service,
        state=JobState(row.status),
        attempt=row.attempt,
        depth=row.depth,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        message=row.message or "",
        event_id=row.event_id,
        parent_job=row.parent_job_id,
    )


def _by_key(objects: set[ObjectKey]) -> Iterator[tuple[list[str], list[str]]]:
    """(buckets, keys) batches to select rows by; callers keep the rows that match exactly.

    Filtering on bucket and key alone lets the database use its (bucket, key) index; provider and
    etag are compared in Python, where a tuple comparison is portable.
    """
    keys = sorted({obj.key for obj in objects})
    buckets = sorted({obj.bucket for obj in objects})
    for chunk in _chunks(keys):
        yield buckets, chunk


def _chunks(values: list[T]) -> Iterator[list[T]]:
    for start in range(0, len(values), BATCH):
        yield values[start : start + BATCH]
