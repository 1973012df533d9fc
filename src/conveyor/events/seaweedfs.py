"""SeaweedFS filer webhook events → ObjectEvent.

The filer posts one JSON document per metadata change (not the S3 event format), e.g. for an
object PUT through S3:

    {"event_type": "create", "key": "/buckets/input/jobs/photo1.jpg",
     "message": {"new_entry": {"name": "photo1.jpg",
                               "attributes": {"file_size": 5, "mtime": 1795762617,
                                              "md5": "XUFAKrxLKna5cZ2REBfFkg==", ...},
                               "extended": {"Seaweed-X-Amz-ETag": "<base64 of the S3 ETag>", ...}},
                 "new_parent_path": "/buckets/input/jobs"}}

An overwrite is an `update` with old and new entries. Directories (folder markers, the bucket
itself), SeaweedFS' own `/buckets/.system` files and multipart parts under `<bucket>/.uploads/`
also produce events and are dropped here; a finished multipart upload arrives as one `create`.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

from conveyor.model.event import ObjectEvent, ObjectRef, utcnow
from conveyor.model.kinds import DEFAULT_PROVIDER
from conveyor.supervisor.contract import PRODUCER_DEPTH_METADATA, PRODUCER_JOB_METADATA

BUCKETS_ROOT = "/buckets/"
# S3 user metadata arrives in `extended`, under its HTTP header name.
_PRODUCER_JOB = "X-Amz-Meta-" + PRODUCER_JOB_METADATA.title()
_PRODUCER_DEPTH = "X-Amz-Meta-" + PRODUCER_DEPTH_METADATA.title()
_OBJECT_EVENTS = ("create", "update", "rename")


def parse_filer_event(payload: dict[str, Any], provider: str = DEFAULT_PROVIDER) -> ObjectEvent | None:
    """The object event in a filer notification, or None when it is not about a stored object."""
    if payload.get("event_type") not in _OBJECT_EVENTS:
        return None
    message = payload.get("message") or {}
    entry = message.get("new_entry")
    if not entry or entry.get("is_directory"):
        return None
    path = _entry_path(payload, message, entry)
    ref = _object_ref(path, provider)
    if ref is None:
        return None
    attributes = entry.get("attributes") or {}
    extended = entry.get("extended") or {}
    producer = _b64(extended.get(_PRODUCER_JOB)).decode(errors="replace") or None
    depth = _b64(extended.get(_PRODUCER_DEPTH)).decode(errors="replace")
    return ObjectEvent(
        ref=ref,
        etag=_etag(entry),
        size=int(attributes.get("file_size") or 0),
        event_time=_mtime(attributes),
        source="seaweedfs",
        producer_job=producer,
        producer_depth=int(depth) if depth.isdigit() else None,
    )


def _entry_path(payload: dict[str, Any], message: dict[str, Any], entry: dict[str, Any]) -> str:
    parent = message.get("new_parent_path")
    name = entry.get("name")
    if parent and name:
        return f"{parent.rstrip('/')}/{name}"
    return str(payload.get("key") or "")


def _object_ref(path: str, provider: str) -> ObjectRef | None:
    if not path.startswith(BUCKETS_ROOT):
        return None
    bucket, _, key = path[len(BUCKETS_ROOT) :].partition("/")
    if not bucket or bucket.startswith(".") or not key or key.endswith("/"):
        return None
    if key.startswith(".uploads/"):
        return None
    return ObjectRef(provider=provider, bucket=bucket, key=key)


def _etag(entry: dict[str, Any]) -> str:
    """The S3 ETag SeaweedFS keeps in `extended`, else the hex of the entry's MD5."""
    stored = _b64((entry.get("extended") or {}).get("Seaweed-X-Amz-ETag"))
    if stored:
        try:
            return stored.decode().strip('"')
        except UnicodeDecodeError:
            pass
    md5 = _b64((entry.get("attributes") or {}).get("md5"))
    return md5.hex() if md5 else ""


def _b64(value: Any) -> bytes:
    if not value:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def _mtime(attributes: dict[str, Any]) -> datetime:
    seconds = attributes.get("mtime")
    if not seconds:
        return utcnow()
    return datetime.fromtimestamp(int(seconds), UTC)
