"""Jobs and their logs: OSCAR's /system/logs routes and Conveyor's richer /conveyor/v1/jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from conveyor.api.deps import AdminDep, PlatformDep
from conveyor.model.job import OSCAR_STATUS, JobRecord, JobState
from conveyor.platform.platform import Platform

router = APIRouter(dependencies=[AdminDep])

OSCAR_PAGE = 70
"""OSCAR's JOB_LISTING_LIMIT."""


def _require_service(platform: Platform, service: str) -> None:
    if platform.ledger.fetch_service(service) is None and not platform.ledger.count_jobs(service):
        raise HTTPException(404, f"the service {service!r} does not exist")


def _page_cursor(page: str | None) -> int | None:
    if not page:
        return None
    try:
        return int(page)
    except ValueError:
        raise HTTPException(400, f"page {page!r} is not a page token from a previous answer") from None


@router.get("/system/logs/{service}", tags=["jobs"])
def oscar_jobs(service: str, platform: PlatformDep, page: str | None = None) -> dict[str, Any]:
    _require_service(platform, service)
    rows = platform.ledger.list_jobs(service, limit=OSCAR_PAGE + 1, before_seq=_page_cursor(page))
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
def job_log(service: str, job_id: str, platform: PlatformDep) -> str:
    record = platform.ledger.fetch_job(job_id)
    if record is None or record.service != service:
        raise HTTPException(404, f"no job {job_id!r} in service {service!r}")
    return platform.read_log(service, job_id) or ""


@router.delete("/system/logs/{service}", status_code=204, tags=["jobs"])
def delete_jobs(service: str, platform: PlatformDep, all: bool = False) -> Response:
    removed = platform.ledger.delete_jobs(service, only_succeeded=not all)
    platform.remove_logs(service, removed)
    return Response(status_code=204)


@router.delete("/system/logs/{service}/{job_id}", status_code=204, tags=["jobs"])
def delete_job(service: str, job_id: str, platform: PlatformDep) -> Response:
    if not platform.ledger.delete_job(service, job_id):
        raise HTTPException(404, f"no job {job_id!r} in service {service!r}")
    platform.remove_logs(service, [job_id])
    return Response(status_code=204)


@router.get("/conveyor/v1/jobs", tags=["conveyor"])
def list_jobs(
    platform: PlatformDep,
    service: str | None = None,
    status: list[JobState] = Query(default=[]),  # noqa: B008 - FastAPI's way to declare a list query
    limit: int = Query(default=100, ge=1, le=10_000),
    before: int | None = None,
    id_prefix: str | None = None,
) -> dict[str, Any]:
    """Newest first; pass `next` back as `before` for the next page. `id_prefix` finds short ids."""
    rows = platform.ledger.list_jobs(service, states=status, limit=limit + 1, before_seq=before, id_prefix=id_prefix)
    page = rows[:limit]
    return {
        "jobs": [record.model_dump(mode="json") for _, record in page],
        "next": page[-1][0] if len(rows) > limit else None,
    }


class RetryRequest(BaseModel):
    service: str
    jobs: list[str] = Field(default_factory=list)
    """Job ids (or unique prefixes) to replay; empty with `dead` means every dead job."""
    dead: bool = False


@router.post("/conveyor/v1/retry", tags=["conveyor"])
def retry_jobs(request: RetryRequest, platform: PlatformDep) -> dict[str, list[str]]:
    """Replay finished jobs as a new attempt (dead letters, or any failed job by id)."""
    if not request.jobs and not request.dead:
        raise HTTPException(400, "name the jobs to retry, or ask for every dead job with dead=true")
    _require_service(platform, request.service)
    job_ids = [_full_job_id(platform, request.service, given) for given in request.jobs]
    replayed = platform.ledger.replay(request.service, job_ids, dead=request.dead)
    platform.dispatcher.wake()
    return {"replayed": replayed}


class CancelRequest(BaseModel):
    service: str
    jobs: list[str] = Field(default_factory=list)
    """Job ids (or unique prefixes) to cancel; empty with `queued` means every queued job."""
    queued: bool = False


@router.post("/conveyor/v1/cancel", tags=["conveyor"])
def cancel_jobs(request: CancelRequest, platform: PlatformDep) -> dict[str, dict[str, str]]:
    """Cancel queued or running jobs: a queued one never starts, a running one is stopped (scancel on
    Slurm); either ends `cancelled` and is not retried. Finished jobs are left as they are."""
    if not request.jobs and not request.queued:
        raise HTTPException(400, "name the jobs to cancel, or ask for every queued job with queued=true")
    _require_service(platform, request.service)
    job_ids = [_full_job_id(platform, request.service, given) for given in request.jobs]
    if request.queued:
        job_ids += [record.job_id for _, record in platform.ledger.list_jobs(
            request.service, states=[JobState.QUEUED], limit=1_000_000)]  # fmt: skip
    answers = {job_id: platform.dispatcher.cancel(job_id) or "already finished" for job_id in dict.fromkeys(job_ids)}
    return {"cancelled": answers}


def _full_job_id(platform: Platform, service: str, given: str) -> str:
    matches = platform.ledger.list_jobs(service, limit=2, id_prefix=given)
    if not matches:
        raise HTTPException(404, f"no job of service {service!r} starts with {given!r}")
    if len(matches) > 1 and matches[0][1].job_id != given:
        raise HTTPException(400, f"{given!r} matches several jobs of {service!r}: give more of the id")
    return matches[0][1].job_id


@router.get("/conveyor/v1/jobs/{job_id}", tags=["conveyor"])
def read_job(job_id: str, platform: PlatformDep) -> JobRecord:
    record = platform.ledger.fetch_job(job_id)
    if record is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return record
