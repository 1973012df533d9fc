"""S3-style notification records (AWS S3, MinIO, Ceph RGW) → ObjectEvent.

MinIO's webhook body, for instance (reference/oscar-api.md §3.2):

    {"EventName": "s3:ObjectCreated:Put", "Key": "grayify/in/cat.jpg",
     "Records": [{"eventSource": "minio:s3", "eventTime": "2026-06-01T10:00:00.000Z",
                  "eventName": "s3:ObjectCreated:Put",
                  "s3": {"bucket": {"name": "grayify"},
                         "object": {"key": "in%2Fcat.jpg", "size": 1234, "eTag": "..."}}}]}

Keys arrive URL-encoded from AWS and MinIO (`in%2Fcat.jpg`, spaces as `+`); Ceph RGW sends them plain,
which unquote_plus leaves unchanged unless they contain `%` or `+`.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

import httpx

from conveyor.model.event import ObjectEvent, ObjectRef, utcnow
from conveyor.model.kinds import DEFAULT_PROVIDER
from conveyor.supervisor.contract import PRODUCER_DEPTH_METADATA, PRODUCER_JOB_METADATA


def parse_s3_records(body: bytes | str | dict[str, Any], provider: str = DEFAULT_PROVIDER) -> list[ObjectEvent]:
    """Object-created events in a notification body; [] when it is not one."""
    data = body if isinstance(body, dict) else _json_or_none(body)
    if not isinstance(data, dict):
        return []
    records = data.get("Records")
    if not isinstance(records, list):
        return []
    events = []
    for record in records:
        event = _record_event(record, provider)
        if event is not None:
            events.append(event)
    return events


def sns_envelope(body: bytes | str) -> dict[str, Any] | None:
    """The SNS message around S3 records (`{"Type": "Notification", "Message": "{...}"}`), if it is one."""
    data = _json_or_none(body)
    if isinstance(data, dict) and data.get("Type") in ("Notification", "SubscriptionConfirmation"):
        return data
    return None


def confirm_subscription(envelope: dict[str, Any]) -> None:
    """AWS SNS (over HTTP/S) sends a SubscriptionConfirmation first; visiting its URL confirms it."""
    url = envelope.get("SubscribeURL")
    if url:
        httpx.get(str(url), timeout=10)


def _record_event(record: Any, provider: str) -> ObjectEvent | None:
    if not isinstance(record, dict) or "ObjectRemoved" in str(record.get("eventName", "")):
        return None
    s3 = record.get("s3")
    if not isinstance(s3, dict):
        return None
    bucket = (s3.get("bucket") or {}).get("name")
    obj = s3.get("object") or {}
    raw_key = str(obj.get("key") or "")
    # AWS and MinIO URL-encode keys; Ceph RGW sends them as stored, so 'a+b' must stay 'a+b'.
    key = raw_key if str(record.get("eventSource", "")).startswith("ceph:") else unquote_plus(raw_key)
    if not bucket or not key or key.endswith("/"):
        return None
    metadata = _user_metadata(obj)
    depth = metadata.get(f"x-amz-meta-{PRODUCER_DEPTH_METADATA}", "")
    return ObjectEvent(
        ref=ObjectRef(provider=provider, bucket=bucket, key=key),
        etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
        size=obj.get("size"),
        event_time=_event_time(record.get("eventTime")),
        source=str(record.get("eventSource") or "s3"),
        producer_job=metadata.get(f"x-amz-meta-{PRODUCER_JOB_METADATA}") or None,
        producer_depth=int(depth) if depth.isdigit() else None,
    )


def _user_metadata(obj: dict[str, Any]) -> dict[str, str]:
    """`x-amz-meta-*` of the object, lower-cased: MinIO's `userMetadata` object, or Ceph RGW's
    `metadata` list of {key, val}."""
    found = {str(k).lower(): str(v) for k, v in (obj.get("userMetadata") or {}).items()}
    for entry in obj.get("metadata") or []:
        if isinstance(entry, dict) and "key" in entry:
            found[str(entry["key"]).lower()] = str(entry.get("val", ""))
    return found


def _event_time(value: Any) -> datetime:
    if not value:
        return utcnow()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return utcnow()


def _json_or_none(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
