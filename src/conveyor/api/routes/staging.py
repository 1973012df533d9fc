"""Job-scoped staging for pods without Python or store credentials (supervisor/remote.py).

Authenticated by the job's own token (`Authorization: Bearer …`), never by the admin's password:
a pod can read its own input and script and store its own outputs, nothing else.
"""

from __future__ import annotations

import base64
import binascii
import tempfile
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from conveyor.api.deps import bearer_token, control_plane
from conveyor.errors import UnsafeKeyError
from conveyor.supervisor.remote import RemoteStaging

router = APIRouter(tags=["staging"])

_SPOOL_BYTES = 8 << 20


def _staging(request: Request) -> RemoteStaging:
    staging = control_plane(request).staging
    if staging is None:
        raise HTTPException(404, "no backend on this platform stages jobs remotely")
    return staging


StagingDep = Annotated[RemoteStaging, Depends(_staging)]


@router.get("/conveyor/v1/jobs/{job_id}/script", response_class=PlainTextResponse)
def read_script(job_id: str, request: Request, staging: StagingDep) -> Response:
    return Response(staging.read_script(job_id, bearer_token(request)), media_type="text/plain")


@router.get("/conveyor/v1/jobs/{job_id}/input")
def read_input(job_id: str, request: Request, staging: StagingDep) -> StreamingResponse:
    token = bearer_token(request)
    staging.job(job_id, token)  # refused before any byte is sent
    return StreamingResponse(staging.read_input(job_id, token), media_type="application/octet-stream")


@router.post("/conveyor/v1/jobs/{job_id}/outputs/{name:path}")
async def store_output(job_id: str, name: str, request: Request, staging: StagingDep) -> dict[str, list[str]]:
    token = bearer_token(request)
    staging.job(job_id, token)
    # The pod's stager sends base64 (busybox wget cuts a --post-file at its first NUL byte); raw bodies stay as sent.
    base64_body = request.headers.get("content-transfer-encoding", "").strip().lower() == "base64"
    with tempfile.SpooledTemporaryFile(_SPOOL_BYTES) as body:
        pending = b""
        async for chunk in request.stream():
            if not base64_body:
                body.write(chunk)
                continue
            pending += b"".join(chunk.split())
            whole = len(pending) // 4 * 4
            body.write(_from_base64(pending[:whole]))
            pending = pending[whole:]
        if pending:
            body.write(_from_base64(pending))
        body.seek(0)
        try:
            stored = await run_in_threadpool(staging.store_output, job_id, token, name, body)  # type: ignore[arg-type]
        except UnsafeKeyError as error:
            raise HTTPException(400, str(error)) from None
    return {"stored": [f"{info.ref.provider}:{info.ref}" for info in stored]}


def _from_base64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error:
        raise HTTPException(400, "the body is not valid base64 (Content-Transfer-Encoding: base64)") from None
