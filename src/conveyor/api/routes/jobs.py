"""Jobs and their logs: OSCAR's /system/logs routes and Conveyor's richer /conveyor/v1/jobs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from conveyor.api.deps import AdminDep, JobsDep
from conveyor.model.event import utcnow
from conveyor.model.job import OSCAR_STATUS, JobRecord, JobState

router = APIRouter(dependencies=[AdminDep])

OSCAR_PAGE = 70
"""OSCAR's JOB_LISTING_LIMIT."""


def _page_cursor(page: str | None) -> int | None:
    if not page:
        return None
    try:
        return int(page)
    except ValueError:
        raise HTTPException(400, f"page {page!r} is not a page token from a previous answer") from None


@router.get("/system/logs/{service}", tags=["jobs"])
def oscar_jobs(service: str, jobs: JobsDep, page: str | None = None) -> dict[str, Any]:
    jobs.require_service(service)
    rows = jobs.find(service, limit=OSCAR_PAGE + 1, before=_page_cursor(page))
    answer: dict[str, Any] = {"jobs": {record.job_id: _oscar_job(record) for _, record in rows[:OSCAR_PAGE]}}
    if len(rows) > OSCAR_PAGE:
        answer["next_page"] = str(rows[OSCAR_PAGE - 1][0])
    return answer


def _oscar_job(record: JobRecord) -> dict[str, str]:
    job = {"status": OSCAR_STATUS[record.state], "creation_time": record.created_at.isoformat()}
    if record.started_at:
        job["start_time"] = record.started_at.isoformat()
    if record.finished_at:
        job["finish_time"] = record.finished_at.isoformat()
    return job


@router.get("/system/logs/{service}/{job_id}", response_class=PlainTextResponse, tags=["jobs"])
def job_log(service: str, job_id: str, jobs: JobsDep) -> str:
    jobs.fetch_in(service, job_id)
    return jobs.read_log(service, job_id) or ""


@router.delete("/system/logs/{service}", status_code=204, tags=["jobs"])
def delete_jobs(service: str, jobs: JobsDep, all: bool = False) -> Response:
    jobs.delete_finished(service, failed_too=all)
    return Response(status_code=204)


@router.delete("/system/logs/{service}/{job_id}", status_code=204, tags=["jobs"])
def delete_job(service: str, job_id: str, jobs: JobsDep) -> Response:
    jobs.delete(service, job_id)
    return Response(status_code=204)


class JobCounts(BaseModel):
    since: datetime
    """The moment counted from, on the platform's clock: pass it back to count the same jobs again."""
    jobs: dict[str, dict[JobState, int]]
    """{service: {state: n}}: jobs created since `since`, and every job still queued or running."""


@router.get("/conveyor/v1/jobs/counts", tags=["conveyor"])
def count_jobs(
    jobs: JobsDep,
    since: datetime | None = None,
    within_s: float = Query(default=60.0, ge=0),
) -> JobCounts:
    """What `conveyor wait` judges: jobs created since `since` (default: `within_s` seconds ago on the
    platform's clock, so a client's clock does not matter) and those still queued or running."""
    moment = since or utcnow() - timedelta(seconds=within_s)
    return JobCounts(since=moment, jobs=jobs.counts(since=moment))


@router.get("/conveyor/v1/jobs", tags=["conveyor"])
def list_jobs(
    jobs: JobsDep,
    service: str | None = None,
    status: list[JobState] = Query(default=[]),  # noqa: B008 - FastAPI's way to declare a list query
    limit: int = Query(default=100, ge=1, le=10_000),
    before: int | None = None,
    id_prefix: str | None = None,
) -> dict[str, Any]:
    """Newest first; pass `next` back as `before` for the next page. `id_prefix` finds short ids."""
    rows = jobs.find(service, states=status, limit=limit + 1, before=before, id_prefix=id_prefix)
    page = rows[:limit]
    return {
        "jobs": [record.model_dump(mode="json") for _, record in page],
        "next": page[-1][0] if len(rows) > limit else None,
    }


class RetryRequest(BaseModel):
    service: str
    jobs: list[str] = Field(default_factory=list)
    """Job ids (or unique prefixes) to replay; empty with `dead` / `failed` means every such job."""
    dead: bool = False
    failed: bool = False
    """Every failed or timed-out job of the service."""


class RetryAnswer(BaseModel):
    replayed: list[str]
    not_retried: dict[str, str]
    """State → how many finished jobs in it were left, and how to retry them (when none were named)."""


@router.post("/conveyor/v1/retry", tags=["conveyor"])
def retry_jobs(request: RetryRequest, jobs: JobsDep) -> RetryAnswer:
    """Replay finished jobs as a new attempt (dead letters, failed jobs, or any job by id)."""
    retried = jobs.retry(request.service, request.jobs, dead=request.dead, failed=request.failed)
    return RetryAnswer(replayed=retried.replayed, not_retried=retried.not_retried)


class CancelRequest(BaseModel):
    service: str
    jobs: list[str] = Field(default_factory=list)
    """Job ids (or unique prefixes) to cancel; empty with `queued` means every queued job."""
    queued: bool = False


@router.post("/conveyor/v1/cancel", tags=["conveyor"])
def cancel_jobs(request: CancelRequest, jobs: JobsDep) -> dict[str, dict[str, str]]:
    """Cancel queued or running jobs: a queued one never starts, a running one is stopped (scancel on
    Slurm); either ends `cancelled` and is not retried. Finished jobs are left as they are."""
    return {"cancelled": jobs.cancel(request.service, request.jobs, queued=request.queued)}


@router.get("/conveyor/v1/jobs/{job_id}", tags=["conveyor"])
def read_job(job_id: str, jobs: JobsDep) -> JobRecord:
    return jobs.fetch(job_id)
