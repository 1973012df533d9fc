"""Provenance: which jobs wrote an object, from a user's upload on, and what it went on to start."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query

from conveyor.api.deps import AdminDep, JobsDep
from conveyor.ledger.provenance import ObjectTrace
from conveyor.model.event import ObjectRef

router = APIRouter(dependencies=[AdminDep])


@router.get("/conveyor/v1/trace", tags=["conveyor"])
def trace_object(
    jobs: JobsDep,
    path: str = Query(description="`bucket/key`, or `provider:bucket/key` for another provider"),
) -> ObjectTrace:
    """Every version of the object the ledger knows: the job that wrote it and that job's own
    trigger up to the upload, and the jobs it started with what they wrote, down the chain."""
    try:
        ref = ObjectRef.parse(path)
    except ValueError as error:
        raise HTTPException(400, str(error)) from None
    if not ref.key or ref.key.endswith("/"):
        raise HTTPException(400, f"{path!r} names a bucket or folder; trace one object: bucket/folder/file")
    return jobs.trace(ref)
