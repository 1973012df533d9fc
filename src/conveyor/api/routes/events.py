"""Receivers for store notifications. The embedded SeaweedFS posts every filer change here."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from conveyor.api.deps import PlatformDep, bearer_token
from conveyor.events.seaweedfs import parse_filer_event

router = APIRouter(tags=["events"])


@router.post("/conveyor/v1/events/seaweedfs")
async def seaweedfs_event(request: Request, platform: PlatformDep, payload: Annotated[Any, Body()]) -> dict[str, Any]:
    """Answers only after the ledger has the event: a failure makes SeaweedFS send it again."""
    token = bearer_token(request)
    if token is None or not secrets.compare_digest(token, platform.credentials.webhook_token):
        raise HTTPException(401, "")
    event = parse_filer_event(payload) if isinstance(payload, dict) else None
    if event is None:
        return {"jobs": []}
    jobs = await run_in_threadpool(platform.accept_event, event)
    return {"jobs": jobs}
