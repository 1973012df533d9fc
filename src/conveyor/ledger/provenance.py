"""Where an object came from and what became of it, from the ledger alone.

Two tables hold provenance: an event row (with its job) says an object version started a job,
and a job_outputs row says a job wrote an object version. Upward, an object version was
written by a job, which was started by another object version, and so on until an object no job
wrote: one a user put. Downward, an object version started jobs, which wrote objects, which
started more jobs.

The trace walks both ways one level at a time, with one batched query per table and level, so a
fan-out of thousands of jobs costs a few queries, not one per job. Every walk is bounded
(MAX_LEVELS) and remembers the jobs it has shown, so loops through the buckets end.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from conveyor.ledger.store import Ledger
from conveyor.ledger.tables import EventRow, JobOutputRow, JobRow
from conveyor.model.event import ObjectRef
from conveyor.model.job import JobState
from conveyor.model.kinds import DEFAULT_PROVIDER

MAX_LEVELS = 64
"""Jobs followed in each direction from the traced object; the lineage limit is far below."""
BATCH = 500
"""Values in one `IN (...)`: well under every database's limit on bound parameters."""

Cut = Literal["seen", "limit"]
"""Why a job's further history is not shown: it appears earlier in the same walk (a loop), or
the walk reached MAX_LEVELS."""

ObjectKey = tuple[str, str, str, str]
"""(provider, bucket, key, etag): one version of one object."""
T = TypeVar("T")


class JobSummary(BaseModel):
    job_id: str
    service: str
    state: JobState
    attempt: int = 1
    depth: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str = ""


class UpstreamObject(BaseModel):
    """An object version a job was started for."""

    ref: ObjectRef
    etag: str
    produced_by: UpstreamJob | None = None
    """None when no job of this platform wrote it: a user (or another program) put it."""


class UpstreamJob(BaseModel):
    """The job that wrote an object version, and what it was started for."""

    job: JobSummary
    trigger: UpstreamObject | None = None
    """None for a job started by an HTTP invocation (or cut)."""
    cut: Cut | None = None


class DownstreamObject(BaseModel):
    """An object version a job wrote."""

    ref: ObjectRef
    etag: str
    size: int | None = None
    consumed_by: list[DownstreamJob] = Field(default_factory=list)


class DownstreamJob(BaseModel):
    """A job an object version started, and what it wrote."""

    job: JobSummary
    outputs: list[DownstreamObject] = Field(default_factory=list)
    cut: Cut | None = None


class ObjectVersion(BaseModel):
    """One version (etag) of the traced object."""

    etag: str
    size: int | None = None
    seen_at: datetime | None = None
    """When the ledger first heard of this version (an event received, or its writer finishing)."""
    produced_by: UpstreamJob | None = None
    """None when no job of this platform wrote it: a user (or another program) put it."""
    consumed_by: list[DownstreamJob] = Field(default_factory=list)


class ObjectTrace(BaseModel):
    """Every version of an object the ledger knows, oldest first; empty when it knows none."""

    ref: ObjectRef
    versions: list[ObjectVersion] = Field(default_factory=list)


def trace(ledger: Ledger, bucket: str, key: str, provider: str = DEFAULT_PROVIDER) -> ObjectTrace:
    """Provenance of `bucket/key`: for each version, the chain of jobs up to a user's upload,
    and the tree of jobs it started and what they wrote."""
    ref = ObjectRef(provider=provider, bucket=bucket, key=key)
    with ledger.read_session() as session:
        versions = _versions(session, ref)
        keys = {_version_key(ref, etag) for etag, _, _ in versions}
        upstream = _walk_up(session, keys)
        downstream = _walk_down(session, keys)
    return ObjectTrace(
        ref=ref,
        versions=[
            ObjectVersion(
                etag=etag,
                size=size,
                seen_at=seen_at,
                produced_by=upstream.job_that_wrote(_version_key(ref, etag), level=1, seen=set()),
                consumed_by=downstream.jobs_started_by(_version_key(ref, etag), level=1, seen=set()),
            )
            for etag, size, seen_at in versions
        ],
    )


# ---- the walks: queries one level at a time, then trees built in memory ----------------------


@dataclass
class _Upstream:
    writer_of: dict[ObjectKey, JobRow] = field(default_factory=dict)
    trigger_of: dict[str, EventRow] = field(default_factory=dict)
    """The event row of each job met, by job id."""

    def job_that_wrote(self, key: ObjectKey, *, level: int, seen: set[str]) -> UpstreamJob | None:
        writer = self.writer_of.get(key)
        if writer is None:
            return None
        summary = _summary(writer)
        if writer.id in seen:
            return UpstreamJob(job=summary, cut="seen")
        seen.add(writer.id)
        if writer.event_id is None:  # an HTTP invocation: the chain starts here
            return UpstreamJob(job=summary)
        event = self.trigger_of.get(writer.id)
        if event is None or level >= MAX_LEVELS:  # the walk did not go further up
            return UpstreamJob(job=summary, cut="limit")
        trigger = UpstreamObject(
            ref=ObjectRef(provider=event.provider, bucket=event.bucket, key=event.key),
            etag=event.etag,
            produced_by=self.job_that_wrote(_event_key(event), level=level + 1, seen=seen),
        )
        return UpstreamJob(job=summary, trigger=trigger)


@dataclass
class _Downstream:
    consumers_of: dict[ObjectKey, list[JobRow]] = field(default_factory=dict)
    outputs_of: dict[str, list[JobOutputRow]] = field(default_factory=dict)

    def jobs_started_by(self, key: ObjectKey, *, level: int, seen: set[str]) -> list[DownstreamJob]:
        return [self._job(job, level=level, seen=seen) for job in self.consumers_of.get(key, [])]

    def _job(self, job: JobRow, *, level: int, seen: set[str]) -> DownstreamJob:
        summary = _summary(job)
        if job.id in seen:
            return DownstreamJob(job=summary, cut="seen")
        seen.add(job.id)
        outputs = self.outputs_of.get(job.id, [])
        if level >= MAX_LEVELS:
            return DownstreamJob(job=summary, cut="limit" if outputs else None)
        return DownstreamJob(
            job=summary,
            outputs=[
                DownstreamObject(
                    ref=ObjectRef(provider=o.provider, bucket=o.bucket, key=o.key),
                    etag=o.etag,
                    size=o.size,
                    consumed_by=self.jobs_started_by(_output_key(o), level=level + 1, seen=seen),
                )
                for o in outputs
            ],
        )


def _walk_up(session: Session, versions: set[ObjectKey]) -> _Upstream:
    """Writers of the versions, the events that started them, their writers… up MAX_LEVELS jobs."""
    found = _Upstream()
    frontier, looked, jobs_met = set(versions), set(versions), set[str]()
    for level in range(1, MAX_LEVELS + 1):
        if not frontier:
            break
        writers = _writers(session, frontier)
        found.writer_of.update(writers)
        new_jobs = {job.id: job for job in writers.values() if job.id not in jobs_met}
        jobs_met.update(new_jobs)
        if level == MAX_LEVELS:
            break  # the last level's jobs are shown cut: their triggers are not followed
        triggers = _triggers(session, new_jobs.values())
        found.trigger_of.update(triggers)
        frontier = {_event_key(event) for event in triggers.values()} - looked
        looked |= frontier
    return found


def _walk_down(session: Session, versions: set[ObjectKey]) -> _Downstream:
    """Jobs the versions started, what those wrote, the jobs that started… down MAX_LEVELS jobs."""
    found = _Downstream()
    frontier, looked, jobs_met = set(versions), set(versions), set[str]()
    for _ in range(MAX_LEVELS):
        if not frontier:
            break
        consumers = _consumers(session, frontier)
        found.consumers_of.update(consumers)
        new_ids = {job.id for jobs in consumers.values() for job in jobs} - jobs_met
        jobs_met |= new_ids
        outputs = _outputs(session, new_ids)
        found.outputs_of.update(outputs)
        frontier = {_output_key(o) for rows in outputs.values() for o in rows} - looked
        looked |= frontier
    return found


# ---- queries, each batched over a whole level ---------------------------------------------


def _versions(session: Session, ref: ObjectRef) -> list[tuple[str, int | None, datetime | None]]:
    """(etag, size, first seen) of every version in events or job outputs, oldest first."""
    merged: dict[str, tuple[int | None, datetime | None]] = {}
    heard = session.execute(
        select(EventRow.etag, func.max(EventRow.size), func.min(EventRow.received_at))
        .where(EventRow.provider == ref.provider, EventRow.bucket == ref.bucket, EventRow.key == ref.key)
        .group_by(EventRow.etag)
    )
    written = session.execute(
        select(JobOutputRow.etag, func.max(JobOutputRow.size), func.min(JobRow.finished_at))
        .join(JobRow, JobRow.id == JobOutputRow.job_id)
        .where(JobOutputRow.provider == ref.provider, JobOutputRow.bucket == ref.bucket, JobOutputRow.key == ref.key)
        .group_by(JobOutputRow.etag)
    )
    for etag, size, seen_at in [*heard, *written]:
        known_size, known_at = merged.get(etag, (None, None))
        earliest = min((t for t in (known_at, seen_at) if t is not None), default=None)
        merged[etag] = (known_size if known_size is not None else size, earliest)
    versions = [(etag, size, seen_at) for etag, (size, seen_at) in merged.items()]
    return sorted(versions, key=lambda v: (v[2] is None, v[2] or datetime.min, v[0]))


def _writers(session: Session, objects: set[ObjectKey]) -> dict[ObjectKey, JobRow]:
    """The job that wrote each object version: from job_outputs (the latest writer, as the lineage
    check does), else the producer the store stamped on it, kept as its consumers' parent."""
    writers: dict[ObjectKey, JobRow] = {}
    for buckets, keys in _by_key(objects):
        rows = session.execute(
            select(JobOutputRow.provider, JobOutputRow.bucket, JobOutputRow.key, JobOutputRow.etag, JobRow)
            .join(JobRow, JobRow.id == JobOutputRow.job_id)
            .where(JobOutputRow.bucket.in_(buckets), JobOutputRow.key.in_(keys))
            .order_by(JobRow.seq)
        )
        for provider, bucket, key, etag, job in rows:
            if (provider, bucket, key, etag) in objects:
                writers[provider, bucket, key, etag] = job  # ordered by seq: the latest wins
    # Outputs are recorded when their job finishes; the stamp names the writer before that.
    unknown = objects - writers.keys()
    parents = {
        obj: parent
        for obj, jobs in _consumers(session, unknown).items()
        if (parent := next((job.parent_job_id for job in jobs if job.parent_job_id), None))
    }
    rows_by_id = _jobs_by_id(session, set(parents.values()))
    writers.update({obj: rows_by_id[parent] for obj, parent in parents.items() if parent in rows_by_id})
    return writers


def _consumers(session: Session, objects: set[ObjectKey]) -> dict[ObjectKey, list[JobRow]]:
    """The jobs each object version started (through its events), oldest first."""
    events: dict[int, ObjectKey] = {}
    for buckets, keys in _by_key(objects):
        rows = session.execute(
            select(EventRow.id, EventRow.provider, EventRow.bucket, EventRow.key, EventRow.etag).where(
                EventRow.bucket.in_(buckets), EventRow.key.in_(keys)
            )
        )
        for event_id, provider, bucket, key, etag in rows:
            if (provider, bucket, key, etag) in objects:
                events[event_id] = (provider, bucket, key, etag)
    consumers: dict[ObjectKey, list[JobRow]] = {}
    for chunk in _chunks(sorted(events)):
        for job in session.scalars(select(JobRow).where(JobRow.event_id.in_(chunk)).order_by(JobRow.seq)):
            if job.event_id is not None:
                consumers.setdefault(events[job.event_id], []).append(job)
    return consumers


def _triggers(session: Session, jobs: Iterable[JobRow]) -> dict[str, EventRow]:
    """The event row that started each job, by job id (HTTP invocations have none)."""
    job_of_event = {job.event_id: job.id for job in jobs if job.event_id is not None}
    triggers: dict[str, EventRow] = {}
    for chunk in _chunks(sorted(job_of_event)):
        for event in session.scalars(select(EventRow).where(EventRow.id.in_(chunk))):
            triggers[job_of_event[event.id]] = event
    return triggers


def _outputs(session: Session, job_ids: set[str]) -> dict[str, list[JobOutputRow]]:
    outputs: dict[str, list[JobOutputRow]] = {}
    for chunk in _chunks(sorted(job_ids)):
        rows = session.scalars(select(JobOutputRow).where(JobOutputRow.job_id.in_(chunk)).order_by(JobOutputRow.id))
        for row in rows:
            outputs.setdefault(row.job_id, []).append(row)
    return outputs


def _jobs_by_id(session: Session, job_ids: set[str]) -> dict[str, JobRow]:
    rows: dict[str, JobRow] = {}
    for chunk in _chunks(sorted(job_ids)):
        rows.update({job.id: job for job in session.scalars(select(JobRow).where(JobRow.id.in_(chunk)))})
    return rows


def _by_key(objects: set[ObjectKey]) -> Iterator[tuple[list[str], list[str]]]:
    """(buckets, keys) batches to select rows by; callers keep the rows that match exactly.

    Filtering on bucket and key alone lets the database use its (bucket, key) index; provider and
    etag are compared in Python, where a tuple comparison is portable.
    """
    keys = sorted({obj[2] for obj in objects})
    buckets = sorted({obj[1] for obj in objects})
    for chunk in _chunks(keys):
        yield buckets, chunk


def _chunks(values: list[T], size: int = BATCH) -> Iterator[list[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _summary(job: JobRow) -> JobSummary:
    return JobSummary(
        job_id=job.id,
        service=job.service,
        state=JobState(job.status),
        attempt=job.attempt,
        depth=job.depth,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        message=job.message or "",
    )


def _version_key(ref: ObjectRef, etag: str) -> ObjectKey:
    return (ref.provider, ref.bucket, ref.key, etag)


def _event_key(event: EventRow) -> ObjectKey:
    return (event.provider, event.bucket, event.key, event.etag)


def _output_key(output: JobOutputRow) -> ObjectKey:
    return (output.provider, output.bucket, output.key, output.etag)


UpstreamObject.model_rebuild()
UpstreamJob.model_rebuild()
DownstreamObject.model_rebuild()
DownstreamJob.model_rebuild()
