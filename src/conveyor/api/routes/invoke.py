"""Invoking a service over HTTP: `/run` waits for the result, `/job` returns at once (OSCAR's routes)."""

from __future__ import annotations

import asyncio
import secrets

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from conveyor.api.deps import BASIC_CHALLENGE, CatalogDep, CredentialsDep, JobsDep, bearer_token, is_admin
from conveyor.control.catalog import ServiceCatalog
from conveyor.control.credentials import Credentials
from conveyor.events.s3_records import parse_s3_records
from conveyor.model.job import JobState
from conveyor.model.service import Service

router = APIRouter(tags=["invoke"])

JOB_ID_HEADER = "X-Conveyor-Job-Id"
SYNC_GRACE_S = 30


def authorize(request: Request, catalog: ServiceCatalog, credentials: Credentials, name: str) -> Service:
    """The service's token as Bearer (what OSCAR accepts), or the admin's Basic auth (what newer oscar-cli sends)."""
    if is_admin(request, credentials):
        return catalog.require(name)
    service = catalog.fetch(name)
    token = bearer_token(request)
    if token is None or service is None or not secrets.compare_digest(token, service.token):
        raise HTTPException(401, "", headers=BASIC_CHALLENGE)
    return service


@router.post("/run/{name}")
async def run_sync(
    name: str, request: Request, catalog: CatalogDep, credentials: CredentialsDep, jobs: JobsDep
) -> Response:
    service = authorize(request, catalog, credentials, name)
    body = await request.body()
    invocation = await run_in_threadpool(jobs.invoke, service, body, sync=True)
    assert invocation.outcome is not None
    headers = {JOB_ID_HEADER: invocation.job_id}
    try:
        outcome = await asyncio.wait_for(
            asyncio.wrap_future(invocation.outcome), timeout=service.timeout + SYNC_GRACE_S
        )
    except TimeoutError:
        jobs.stop_waiting(invocation.job_id)
        raise HTTPException(504, f"job {invocation.job_id} did not finish in time", headers=headers) from None
    if outcome.state == JobState.SUCCEEDED:
        return Response(content=outcome.response or b"", media_type="text/plain", headers=headers)
    detail = f"job {invocation.job_id} {outcome.state}: {outcome.message}\n".encode() + (outcome.response or b"")
    return Response(content=detail, status_code=500, media_type="text/plain", headers=headers)


@router.post("/job/{name}", status_code=201)
async def run_async(
    name: str, request: Request, catalog: CatalogDep, credentials: CredentialsDep, jobs: JobsDep
) -> Response:
    """A storage event body is processed as if its object had just been stored; anything else is the input."""
    service = authorize(request, catalog, credentials, name)
    body = await request.body()
    events = parse_s3_records(body)
    if events:
        job_ids = await run_in_threadpool(jobs.submit_events, service, events)
    else:
        invocation = await run_in_threadpool(jobs.invoke, service, body, sync=False)
        job_ids = [invocation.job_id]
    return Response(status_code=201, headers={JOB_ID_HEADER: ",".join(job_ids)})
