"""Invoking a service over HTTP: `/run` waits for the result, `/job` returns at once (OSCAR's routes)."""

from __future__ import annotations

import asyncio
import secrets

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool

from conveyor.api.deps import BASIC_CHALLENGE, PlatformDep, bearer_token, is_admin
from conveyor.events.s3_records import parse_s3_records
from conveyor.model.event import ObjectEvent
from conveyor.model.job import JobState
from conveyor.model.service import Service
from conveyor.platform.platform import Platform

router = APIRouter(tags=["invoke"])

JOB_ID_HEADER = "X-Conveyor-Job-Id"
SYNC_GRACE_S = 30


def authorize(request: Request, platform: Platform, name: str) -> Service:
    """The service's token as Bearer (what OSCAR accepts), or the admin's Basic auth (what newer oscar-cli sends)."""
    service = platform.ledger.fetch_service(name)
    if is_admin(request, platform):
        if service is None:
            raise HTTPException(404, f"the service {name!r} does not exist")
        return service
    token = bearer_token(request)
    if token is None or service is None or not secrets.compare_digest(token, service.token):
        raise HTTPException(401, "", headers=BASIC_CHALLENGE)
    return service


@router.post("/run/{name}")
async def run_sync(name: str, request: Request, platform: PlatformDep) -> Response:
    service = authorize(request, platform, name)
    body = await request.body()
    job_id, waiter = await run_in_threadpool(platform.invoke, service.name, body, sync=True)
    assert waiter is not None
    try:
        outcome = await asyncio.wait_for(asyncio.wrap_future(waiter), timeout=service.timeout + SYNC_GRACE_S)
    except TimeoutError:
        platform.dispatcher.forget(job_id)
        raise HTTPException(504, f"job {job_id} did not finish in time", headers={JOB_ID_HEADER: job_id}) from None
    headers = {JOB_ID_HEADER: job_id}
    if outcome.state == JobState.SUCCEEDED:
        return Response(content=outcome.response or b"", media_type="text/plain", headers=headers)
    detail = f"job {job_id} {outcome.state}: {outcome.message}\n".encode() + (outcome.response or b"")
    return Response(content=detail, status_code=500, media_type="text/plain", headers=headers)


@router.post("/job/{name}", status_code=201)
async def run_async(name: str, request: Request, platform: PlatformDep) -> Response:
    """A storage event body is processed as if its object had just been stored; anything else is the input."""
    service = authorize(request, platform, name)
    body = await request.body()
    events = parse_s3_records(body)
    if events:
        job_ids = await run_in_threadpool(_accept_storage_events, platform, service, events)
    else:
        job_id, _ = await run_in_threadpool(platform.invoke, service.name, body, sync=False)
        job_ids = [job_id]
    return Response(status_code=201, headers={JOB_ID_HEADER: ",".join(job_ids)})


def _accept_storage_events(platform: Platform, service: Service, events: list[ObjectEvent]) -> list[str]:
    job_ids = []
    with_credentials = platform.ledger.fetch_service(service.name, with_secrets=True) or service
    for event in events:
        event = _on_the_inputs_store(event, with_credentials)
        if not event.etag:  # the version decides idempotency: ask the store which one this is
            store = platform.storage.provider(event.ref.provider, with_credentials)
            info = store.stat(event.ref)
            if info is not None:
                event = event.model_copy(update={"etag": info.etag, "size": info.size})
        job_ids += platform.accept_event(event, only_service=service.name)
    return job_ids


def _on_the_inputs_store(event: ObjectEvent, service: Service) -> ObjectEvent:
    """A MinIO or S3 body does not say which store it comes from: the service's input that holds
    the object does (OSCAR's MinIO is `minio.default`, the platform's own store, when none does)."""
    for io in service.input:
        if io.bucket == event.ref.bucket and io.contains_key(event.ref.key):
            ref = event.ref.model_copy(update={"provider": io.storage_provider})
            return event.model_copy(update={"ref": ref})
    return event
