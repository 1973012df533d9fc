"""Receivers for store notifications. The embedded SeaweedFS posts every filer change here."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from conveyor.api.deps import CredentialsDep, IntakeDep, bearer_token, control_plane
from conveyor.control.credentials import Credentials
from conveyor.events.s3_records import confirm_subscription, parse_s3_records, sns_envelope
from conveyor.events.seaweedfs import parse_filer_event
from conveyor.model.kinds import normalize_provider

router = APIRouter(tags=["events"])


def _require_store_token(request: Request, credentials: Credentials) -> None:
    """Stores authenticate with the platform's webhook token, as a Bearer header or `?token=`."""
    token = bearer_token(request) or request.query_params.get("token")
    if token is None or not credentials.is_webhook_token(token):
        raise HTTPException(401, "")


async def seaweedfs_event(request: Request) -> JSONResponse:
    """Answers only after the ledger has the event: a failure makes SeaweedFS send it again.

    The filer posts every change under /buckets, outputs included, one request each: a plain
    Starlette endpoint (no dependency solving, no body model) that drops what no service reads
    before the hop to a worker thread keeps the cost of those requests small. Events that arrive
    together are written together (GroupedIntake).
    """
    control = control_plane(request)
    _require_store_token(request, control.credentials)
    try:
        payload = json.loads(await request.body())
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None
    event = parse_filer_event(payload) if isinstance(payload, dict) else None
    if event is None or not control.intake.services_for(event.ref):
        return JSONResponse({"jobs": []})
    jobs = await request.app.state.webhook_intake.accept(event)
    return JSONResponse({"jobs": jobs})


router.add_route("/conveyor/v1/events/seaweedfs", seaweedfs_event, methods=["POST"], include_in_schema=False)


@router.post("/conveyor/v1/events/s3/{provider}")
async def s3_event(provider: str, request: Request, credentials: CredentialsDep, intake: IntakeDep) -> dict[str, Any]:
    """S3-style notifications from the store of `provider` (`s3.ceph`, `minio.lab`).

    Takes the records as Ceph RGW and MinIO post them, or wrapped in an SNS envelope (AWS SNS, or
    RGW topics with an SNS push); confirms SNS subscriptions. Answers once the ledger has every
    event: a failure makes the store send again.
    """
    _require_store_token(request, credentials)
    try:
        provider = normalize_provider(provider)
    except ValueError as error:
        raise HTTPException(400, str(error)) from None
    body = await request.body()
    envelope = sns_envelope(body)
    if envelope is not None and envelope.get("Type") == "SubscriptionConfirmation":
        await run_in_threadpool(confirm_subscription, envelope)
        return {"jobs": []}
    records = envelope.get("Message", "") if envelope is not None else body
    events = parse_s3_records(records, provider=provider)
    created = await run_in_threadpool(intake.accept_many, events)
    jobs = [job for each in created for job in each]
    return {"jobs": jobs}
