"""SeaweedFS filer webhook payloads → object events, on payloads recorded from SeaweedFS 4.48.

The recording (samples/seaweedfs-filer-events.jsonl) covers: creating bucket `input`, the folder
marker `jobs/`, `jobs/a b+c.txt` ("hello"), overwriting it ("hello2"), `jobs/sub/deep.txt`, a
150 MB multipart upload `jobs/big.bin`, and deleting `jobs/sub/deep.txt`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor.events.seaweedfs import parse_filer_event
from conveyor.model.event import ObjectEvent

SAMPLES = Path(__file__).parent / "samples" / "seaweedfs-filer-events.jsonl"


def recorded_payloads() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAMPLES.read_text().splitlines() if line.strip()]


def recorded_events(provider: str = "minio.default") -> list[ObjectEvent]:
    events = (parse_filer_event(payload, provider) for payload in recorded_payloads())
    return [event for event in events if event is not None]


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def file_payload(
    key: str = "/buckets/input/jobs/x.txt",
    *,
    event_type: str = "create",
    parent: str | None = None,
    name: str | None = None,
    **entry_fields: Any,
) -> dict[str, Any]:
    """A minimal filer notification for a file entry."""
    default_parent, _, default_name = key.rpartition("/")
    entry: dict[str, Any] = {
        "name": name if name is not None else default_name,
        "attributes": {
            "file_size": 3,
            "mtime": 1795762617,
            "md5": base64.b64encode(bytes.fromhex(md5_hex(b"abc"))).decode(),
        },
    }
    entry.update(entry_fields)
    message: dict[str, Any] = {"new_entry": entry}
    if parent is not False:
        message["new_parent_path"] = parent if parent is not None else default_parent
    return {"event_type": event_type, "key": key, "message": message}


# ---- the recorded session -------------------------------------------------------------------


def test_recording_is_present_and_complete() -> None:
    payloads = recorded_payloads()
    assert len(payloads) == 56
    assert {p["event_type"] for p in payloads} == {"create", "update", "delete"}


def test_recorded_session_yields_exactly_the_four_object_writes() -> None:
    events = recorded_events()
    assert [(e.ref.bucket, e.ref.key, e.etag, e.size) for e in events] == [
        ("input", "jobs/a b+c.txt", md5_hex(b"hello"), 5),
        ("input", "jobs/a b+c.txt", md5_hex(b"hello2"), 6),
        ("input", "jobs/sub/deep.txt", "9dd4e461268c8034f5c8564e155c67a6", 1),
        ("input", "jobs/big.bin", "c943fec5a310e0aa2a5d636359414a05-19", 153473184),
    ]


def test_recorded_put_has_the_s3_etag() -> None:
    first = recorded_events()[0]
    assert first.etag == "5d41402abc4b2a76b9719d911017c592"


def test_recorded_overwrite_has_a_different_etag_from_the_first_put() -> None:
    first, overwrite = recorded_events()[:2]
    assert first.ref == overwrite.ref
    assert first.etag != overwrite.etag


def test_recorded_multipart_upload_has_the_multipart_etag_and_full_size() -> None:
    big = recorded_events()[-1]
    assert big.ref.key == "jobs/big.bin"
    assert big.etag == "c943fec5a310e0aa2a5d636359414a05-19"
    assert big.size == 153473184


def test_recorded_events_carry_provider_source_and_mtime() -> None:
    events = recorded_events(provider="minio.default")
    assert {e.ref.provider for e in events} == {"minio.default"}
    assert {e.source for e in events} == {"seaweedfs"}
    assert events[0].event_time == datetime.fromtimestamp(1795762617, UTC)
    assert all(e.event_time.tzinfo is not None for e in events)


def test_recorded_provider_name_is_passed_through() -> None:
    assert {e.ref.provider for e in recorded_events(provider="s3.filer")} == {"s3.filer"}


def describe(payload: dict[str, Any]) -> str:
    entry = (payload.get("message") or {}).get("new_entry") or {}
    return f"{payload['event_type']} {payload['key']}{' (dir)' if entry.get('is_directory') else ''}"


OBJECT_WRITE_KEYS = {"/buckets/input/jobs/a b+c.txt", "/buckets/input/jobs/sub/deep.txt", "/buckets/input/jobs/big.bin"}


def is_object_write(payload: dict[str, Any]) -> bool:
    return payload["event_type"] in ("create", "update") and payload["key"] in OBJECT_WRITE_KEYS


@pytest.mark.parametrize("payload", [p for p in recorded_payloads() if not is_object_write(p)], ids=describe)
def test_recorded_non_object_payloads_yield_nothing(payload: dict[str, Any]) -> None:
    """Directories, bucket creation, /buckets/.system, .uploads parts and deletes."""
    assert parse_filer_event(payload) is None


def test_recorded_non_object_payloads_cover_every_kind() -> None:
    keys = [p["key"] for p in recorded_payloads() if parse_filer_event(p) is None]
    assert "/buckets/input" in keys
    assert "/buckets/input/jobs" in keys
    assert any(k.startswith("/buckets/.system/") for k in keys)
    assert sum("/.uploads/" in k and k.endswith(".part") for k in keys) == 19 * 2  # created, then deleted
    assert "/buckets/input/jobs/sub/deep.txt" in keys  # its delete


# ---- hand-made edge payloads ----------------------------------------------------------------


def test_file_payload_helper_makes_a_parsable_object_event() -> None:
    event = parse_filer_event(file_payload("/buckets/input/jobs/x.txt"))
    assert event is not None
    assert (event.ref.bucket, event.ref.key, event.size) == ("input", "jobs/x.txt", 3)


@pytest.mark.parametrize(
    "payload",
    [
        {"event_type": "create", "key": "/buckets/input/x.txt"},
        {"event_type": "create", "key": "/buckets/input/x.txt", "message": None},
        {"event_type": "create", "key": "/buckets/input/x.txt", "message": {}},
        {"event_type": "create", "key": "/buckets/input/x.txt", "message": {"new_entry": None}},
        {"key": "/buckets/input/x.txt", "message": {"new_entry": {"name": "x.txt"}}},
    ],
    ids=["no-message", "null-message", "empty-message", "null-entry", "no-event-type"],
)
def test_payloads_without_a_new_entry_yield_nothing(payload: dict[str, Any]) -> None:
    assert parse_filer_event(payload) is None


def test_directory_entry_yields_nothing() -> None:
    assert parse_filer_event(file_payload("/buckets/input/jobs/new", is_directory=True)) is None


@pytest.mark.parametrize(
    "key",
    [
        "/topics/.system/log/x",
        "/etc/passwd",
        "/bucketsx/input/a.txt",
        "/buckets/input",
        "/buckets/.system/owners/admin/input",
        "/buckets/input/.uploads/abc/0001.part",
        "/buckets/input/folder/",
        "buckets/input/a.txt",
    ],
)
def test_paths_outside_bucket_objects_yield_nothing(key: str) -> None:
    assert parse_filer_event(file_payload(key, parent=False)) is None


def test_delete_yields_nothing_even_with_an_entry() -> None:
    assert parse_filer_event(file_payload(event_type="delete")) is None


def test_rename_yields_the_object_at_its_new_place() -> None:
    payload = file_payload("/buckets/input/tmp/x.txt", event_type="rename", parent="/buckets/input/jobs/")
    payload["message"]["old_entry"] = {"name": "x.txt"}
    event = parse_filer_event(payload)
    assert event is not None
    assert (event.ref.bucket, event.ref.key) == ("input", "jobs/x.txt")


def test_rename_with_a_new_name_uses_the_new_name() -> None:
    payload = file_payload("/buckets/input/jobs/old.txt", event_type="rename", name="new.txt")
    event = parse_filer_event(payload)
    assert event is not None
    assert event.ref.key == "jobs/new.txt"


def test_rename_into_the_uploads_area_yields_nothing() -> None:
    payload = file_payload("/buckets/input/jobs/x.txt", event_type="rename", parent="/buckets/input/.uploads/u1")
    assert parse_filer_event(payload) is None


def test_key_is_used_when_no_parent_path_is_given() -> None:
    event = parse_filer_event(file_payload("/buckets/photos/2026/a.jpg", parent=False))
    assert event is not None
    assert (event.ref.bucket, event.ref.key) == ("photos", "2026/a.jpg")


def test_etag_prefers_the_stored_s3_etag() -> None:
    payload = file_payload(extended={"Seaweed-X-Amz-ETag": b64('"abc-2"')})
    event = parse_filer_event(payload)
    assert event is not None
    assert event.etag == "abc-2"


def test_etag_falls_back_to_the_entry_md5() -> None:
    event = parse_filer_event(file_payload())
    assert event is not None
    assert event.etag == md5_hex(b"abc")


def test_etag_falls_back_to_md5_when_the_stored_etag_is_not_text() -> None:
    not_utf8 = base64.b64encode(b"\xff\xfe\xfd").decode()
    event = parse_filer_event(file_payload(extended={"Seaweed-X-Amz-ETag": not_utf8}))
    assert event is not None
    assert event.etag == md5_hex(b"abc")


def test_etag_falls_back_to_md5_when_the_stored_etag_is_not_base64() -> None:
    # An empty etag would make every later version of the key a "duplicate" in the ledger.
    event = parse_filer_event(file_payload(extended={"Seaweed-X-Amz-ETag": "***"}))
    assert event is not None
    assert event.etag == md5_hex(b"abc")


def test_etag_empty_without_etag_or_md5() -> None:
    payload = file_payload(attributes={"file_size": 0, "mtime": 1795762617})
    event = parse_filer_event(payload)
    assert event is not None
    assert (event.etag, event.size) == ("", 0)


def test_missing_mtime_means_now() -> None:
    before = datetime.now(UTC)
    event = parse_filer_event(file_payload(attributes={"file_size": 1}))
    assert event is not None
    assert before <= event.event_time <= datetime.now(UTC)
