"""Buckets of the platform's store (OSCAR's /system/buckets), and presigned URLs for one object.

Conveyor has one account, the admin, so every bucket is `private` to it: asking for `public` or
`restricted` visibility is answered 501 rather than accepted and silently not enforced.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from conveyor.api.deps import AdminDep, PlatformDep, parse_body
from conveyor.errors import ObjectNotFound, StorageError
from conveyor.model.event import ObjectRef, iso_z, utcnow
from conveyor.model.service import StorageIO
from conveyor.platform.platform import Platform
from conveyor.storage.s3 import S3Provider

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


def _store(platform: Platform) -> S3Provider:
    store = platform.storage.default
    assert isinstance(store, S3Provider)
    return store


def _require_private(request: BucketRequest) -> None:
    if request.visibility != "private":
        raise HTTPException(
            501, f"visibility {request.visibility!r} is not supported: Conveyor has one account, buckets are private"
        )


def _bucket_json(name: str, services: list[str]) -> dict[str, Any]:
    metadata = {"owner": "conveyor"} | ({"from_service": ",".join(services)} if services else {})
    return {
        "bucket_name": name,
        "visibility": "private",
        "allowed_users": [],
        "owner": "conveyor",
        "metadata": metadata,
    }


def _services_using(platform: Platform, bucket: str) -> list[str]:
    return sorted(
        s.name
        for s in platform.ledger.list_services()
        if any(io.bucket == bucket and io.storage_provider == "minio.default" for io in (*s.input, *s.output))
    )


def _existing(platform: Platform, bucket: str) -> None:
    if bucket not in _store(platform).list_buckets():
        raise HTTPException(404, f"the bucket {bucket!r} does not exist")


@router.post("/system/buckets", status_code=201)
def create_bucket(body: dict[str, Any], platform: PlatformDep) -> Response:
    request = parse_body(BucketRequest, body, "bucket request")
    _require_private(request)
    if not _store(platform).ensure_bucket(request.bucket_name):
        raise HTTPException(400, f"the bucket {request.bucket_name!r} already exists")
    return Response(status_code=201)


@router.get("/system/buckets")
def list_buckets(platform: PlatformDep) -> list[dict[str, Any]] | None:
    """`null` when there are none, as OSCAR answers."""
    names = _store(platform).list_buckets()
    return [_bucket_json(name, _services_using(platform, name)) for name in names] or None


@router.put("/system/buckets", status_code=204)
def update_bucket(body: dict[str, Any], platform: PlatformDep) -> Response:
    request = parse_body(BucketRequest, body, "bucket request")
    _existing(platform, request.bucket_name)
    _require_private(request)
    return Response(status_code=204)


@router.get("/system/buckets/{bucket}")
def read_bucket(bucket: str, platform: PlatformDep, page: str | None = None) -> dict[str, Any]:
    _existing(platform, bucket)
    try:
        objects, next_token = _store(platform).list_page(bucket, token=page, max_keys=PAGE)
    except ObjectNotFound:
        raise HTTPException(404, f"the bucket {bucket!r} does not exist") from None
    answer = _bucket_json(bucket, _services_using(platform, bucket)) | {
        "objects": [
            {
                "object_name": o.ref.key,
                "size_bytes": o.size,
                "owner": "conveyor",
                "last_modified": o.last_modified.isoformat() if o.last_modified else "",
            }
            for o in objects
        ],
        "is_truncated": next_token is not None,
        "returned_items": len(objects),
    }
    if next_token:
        answer["next_page"] = next_token
    return answer


@router.delete("/system/buckets/{bucket}", status_code=204)
def delete_bucket(bucket: str, platform: PlatformDep) -> Response:
    """The bucket and everything in it, as OSCAR does."""
    _existing(platform, bucket)
    try:
        _store(platform).delete_bucket(bucket)
    except StorageError as error:
        raise HTTPException(502, f"the store could not delete {bucket!r}: {error}") from None
    return Response(status_code=204)


@router.post("/system/buckets/{bucket}/presign")
def presign(bucket: str, body: dict[str, Any], platform: PlatformDep) -> dict[str, Any]:
    request = parse_body(PresignRequest, body, "presign request")
    _existing(platform, bucket)
    method = "PUT" if request.operation == "upload" else "GET"
    url = _store(platform).presign(
        ObjectRef(bucket=bucket, key=request.object_key), method, request.lifetime_s, request.content_type
    )
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
