"""Buckets of the platform's store (OSCAR's /system/buckets), and presigned URLs for one object.

The rules (one account, every bucket private) are control/buckets.py's; here is OSCAR's JSON.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from conveyor.api.deps import AdminDep, BucketsDep, parse_body
from conveyor.control.buckets import OWNER, Bucket
from conveyor.errors import StorageError
from conveyor.model.event import iso_z, utcnow
from conveyor.model.service import StorageIO

router = APIRouter(dependencies=[AdminDep], tags=["buckets"])

PAGE = 70
"""OSCAR's JOB_LISTING_LIMIT, which it also uses as the page size of bucket listings."""
PRESIGN_DEFAULT_S = 900
PRESIGN_MAX_S = 604_800


class BucketRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    bucket_name: str
    visibility: str = "private"
    allowed_users: list[str] | None = None

    @model_validator(mode="after")
    def _valid(self) -> BucketRequest:
        StorageIO(path=f"{self.bucket_name}/x")  # the S3 bucket-name rules, with their message
        return self


class PresignRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    object_key: str = Field(min_length=1)
    operation: Literal["upload", "download"]
    expires_in: int | None = None
    expires: int | None = None
    """oscar-python sends `expires`; OSCAR reads `expires_in`: both are accepted."""
    content_type: str = ""
    extra_headers: dict[str, str] = Field(default_factory=dict)

    @property
    def lifetime_s(self) -> int:
        asked = self.expires_in or self.expires or PRESIGN_DEFAULT_S
        return max(1, min(asked, PRESIGN_MAX_S))


def _bucket_json(bucket: Bucket) -> dict[str, Any]:
    metadata = {"owner": OWNER} | ({"from_service": ",".join(bucket.services)} if bucket.services else {})
    return {
        "bucket_name": bucket.name,
        "visibility": "private",
        "allowed_users": [],
        "owner": OWNER,
        "metadata": metadata,
    }


@router.post("/system/buckets", status_code=201)
def create_bucket(body: dict[str, Any], buckets: BucketsDep) -> Response:
    request = parse_body(BucketRequest, body, "bucket request")
    buckets.create(request.bucket_name, request.visibility)
    return Response(status_code=201)


@router.get("/system/buckets")
def list_buckets(buckets: BucketsDep) -> list[dict[str, Any]] | None:
    """`null` when there are none, as OSCAR answers."""
    return [_bucket_json(bucket) for bucket in buckets.all()] or None


@router.put("/system/buckets", status_code=204)
def update_bucket(body: dict[str, Any], buckets: BucketsDep) -> Response:
    request = parse_body(BucketRequest, body, "bucket request")
    buckets.update(request.bucket_name, request.visibility)
    return Response(status_code=204)


@router.get("/system/buckets/{bucket}")
def read_bucket(bucket: str, buckets: BucketsDep, page: str | None = None) -> dict[str, Any]:
    found = buckets.read(bucket, page, PAGE)
    answer = _bucket_json(found.bucket) | {
        "objects": [
            {
                "object_name": o.ref.key,
                "size_bytes": o.size,
                "owner": OWNER,
                "last_modified": o.last_modified.isoformat() if o.last_modified else "",
            }
            for o in found.objects
        ],
        "is_truncated": found.next_page is not None,
        "returned_items": len(found.objects),
    }
    if found.next_page:
        answer["next_page"] = found.next_page
    return answer


@router.delete("/system/buckets/{bucket}", status_code=204)
def delete_bucket(bucket: str, buckets: BucketsDep) -> Response:
    """The bucket and everything in it, as OSCAR does."""
    try:
        buckets.delete(bucket)
    except StorageError as error:
        raise HTTPException(502, f"the store could not delete {bucket!r}: {error}") from None
    return Response(status_code=204)


@router.post("/system/buckets/{bucket}/presign")
def presign(bucket: str, body: dict[str, Any], buckets: BucketsDep) -> dict[str, Any]:
    request = parse_body(PresignRequest, body, "presign request")
    method = "PUT" if request.operation == "upload" else "GET"
    url = buckets.presign(bucket, request.object_key, method, request.lifetime_s, request.content_type)
    answer: dict[str, Any] = {
        "object_key": request.object_key,
        "operation": request.operation,
        "method": method,
        "url": url,
        "expires_at": iso_z(utcnow() + timedelta(seconds=request.lifetime_s)),
    }
    if request.content_type and method == "PUT":
        answer["headers"] = {"Content-Type": request.content_type}
    return answer
