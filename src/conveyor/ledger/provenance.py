"""Where an object came from and what became of it, from the ledger alone.

Two tables hold provenance: an event row (with its job) says an object version started a job,
and a job_outputs row says a job wrote an object version. Upward, an object version was
written by a job, which was started by another object version, and so on until an object no job
wrote: one a user put. Downward, an object version started jobs, which wrote objects, which
started more jobs.

The trace walks both ways one level at a time, asking the ledger's lineage queries (lineage.py)
for a whole level at once, so a fan-out of thousands of jobs costs a few queries, not one per
job. Every walk is bounded (MAX_LEVELS) and remembers the jobs it has shown, so loops through
the buckets end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from conveyor.ledger.lineage import Lineage, LineageJob, LineageOutput, ObjectKey
from conveyor.ledger.store import Ledger
from conveyor.model.event import ObjectRef
from conveyor.model.job import JobState
from conveyor.model.kinds import DEFAULT_PROVIDER

MAX_LEVELS = 64
"""Jobs followed in each direction from the traced object; the lineage limit is far below."""

Cut = Literal["seen", "limit"]
"""Why a job's further history is not shown: it appears earlier in the same walk (a loop), or
the walk reached MAX_LEVELS."""


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
    with ledger.lineage() as lineage:
        versions = lineage.versions(ref)
        keys = {ObjectKey.of(ref, version.etag) for version in versions}
        upstream = _walk_up(lineage, keys)
        downstream = _walk_down(lineage, keys)
    return ObjectTrace(
        ref=ref,
        versions=[
            ObjectVersion(
                etag=version.etag,
                size=version.size,
                seen_at=version.seen_at,
                produced_by=upstream.job_that_wrote(ObjectKey.of(ref, version.etag), level=1, seen=set()),
                consumed_by=downstream.jobs_started_by(ObjectKey.of(ref, version.etag), level=1, seen=set()),
            )
            for version in versions
        ],
    )


# ---- the walks: queries one level at a time, then trees built in memory ----------------------


@dataclass
class _Upstream:
    writer_of: dict[ObjectKey, LineageJob] = field(default_factory=dict)
    trigger_of: dict[str, ObjectKey] = field(default_factory=dict)
    """The object version that started each job met, by job id."""

    def job_that_wrote(self, key: ObjectKey, *, level: int, seen: set[str]) -> UpstreamJob | None:
        writer = self.writer_of.get(key)
        if writer is None:
            return None
        summary = _summary(writer)
        if writer.job_id in seen:
            return UpstreamJob(job=summary, cut="seen")
        seen.add(writer.job_id)
        if writer.event_id is None:  # an HTTP invocation: the chain starts here
            return UpstreamJob(job=summary)
        started_by = self.trigger_of.get(writer.job_id)
        if started_by is None or level >= MAX_LEVELS:  # the walk did not go further up
            return UpstreamJob(job=summary, cut="limit")
        trigger = UpstreamObject(
            ref=started_by.ref,
            etag=started_by.etag,
            produced_by=self.job_that_wrote(started_by, level=level + 1, seen=seen),
        )
        return UpstreamJob(job=summary, trigger=trigger)


@dataclass
class _Downstream:
    consumers_of: dict[ObjectKey, list[LineageJob]] = field(default_factory=dict)
    outputs_of: dict[str, list[LineageOutput]] = field(default_factory=dict)

    def jobs_started_by(self, key: ObjectKey, *, level: int, seen: set[str]) -> list[DownstreamJob]:
        return [self._job(job, level=level, seen=seen) for job in self.consumers_of.get(key, [])]

    def _job(self, job: LineageJob, *, level: int, seen: set[str]) -> DownstreamJob:
        summary = _summary(job)
        if job.job_id in seen:
            return DownstreamJob(job=summary, cut="seen")
        seen.add(job.job_id)
        outputs = self.outputs_of.get(job.job_id, [])
        if level >= MAX_LEVELS:
            return DownstreamJob(job=summary, cut="limit" if outputs else None)
        return DownstreamJob(
            job=summary,
            outputs=[
                DownstreamObject(
                    ref=output.version.ref,
                    etag=output.version.etag,
                    size=output.size,
                    consumed_by=self.jobs_started_by(output.version, level=level + 1, seen=seen),
                )
                for output in outputs
            ],
        )


def _walk_up(lineage: Lineage, versions: set[ObjectKey]) -> _Upstream:
    """Writers of the versions, the events that started them, their writers… up MAX_LEVELS jobs."""
    found = _Upstream()
    frontier, looked, jobs_met = set(versions), set(versions), set[str]()
    for level in range(1, MAX_LEVELS + 1):
        if not frontier:
            break
        writers = lineage.writers(frontier)
        found.writer_of.update(writers)
        new_jobs = {job.job_id: job for job in writers.values() if job.job_id not in jobs_met}
        jobs_met.update(new_jobs)
        if level == MAX_LEVELS:
            break  # the last level's jobs are shown cut: their triggers are not followed
        triggers = lineage.triggers(new_jobs.values())
        found.trigger_of.update(triggers)
        frontier = set(triggers.values()) - looked
        looked |= frontier
    return found


def _walk_down(lineage: Lineage, versions: set[ObjectKey]) -> _Downstream:
    """Jobs the versions started, what those wrote, the jobs that started… down MAX_LEVELS jobs."""
    found = _Downstream()
    frontier, looked, jobs_met = set(versions), set(versions), set[str]()
    for _ in range(MAX_LEVELS):
        if not frontier:
            break
        consumers = lineage.consumers(frontier)
        found.consumers_of.update(consumers)
        new_ids = {job.job_id for jobs in consumers.values() for job in jobs} - jobs_met
        jobs_met |= new_ids
        outputs = lineage.outputs(new_ids)
        found.outputs_of.update(outputs)
        frontier = {output.version for written in outputs.values() for output in written} - looked
        looked |= frontier
    return found


def _summary(job: LineageJob) -> JobSummary:
    return JobSummary(
        job_id=job.job_id,
        service=job.service,
        state=job.state,
        attempt=job.attempt,
        depth=job.depth,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        message=job.message,
    )


UpstreamObject.model_rebuild()
UpstreamJob.model_rebuild()
DownstreamObject.model_rebuild()
DownstreamJob.model_rebuild()
