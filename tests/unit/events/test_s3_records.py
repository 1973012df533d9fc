"""S3-style notification bodies (MinIO, AWS S3, Ceph RGW) → object events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.events.s3_records import parse_s3_records

# reference/oscar-api.md §3.2: what MinIO POSTs to OSCAR's /job/<service>
MINIO_BODY = """{"EventName":"s3:ObjectCreated:Put","Key":"grayify/in/cat.jpg",
 "Records":[{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2026-06-01T10:00:00.000Z",
   "eventName":"s3:ObjectCreated:Put","userIdentity":{"principalId":"<uploader access key>"},
   "requestParameters":{"principalId":"<uploader access key>","region":"us-east-1","sourceIPAddress":"10.0.0.5"},
   "responseElements":{"x-amz-request-id":"...","x-minio-origin-endpoint":"http://..."},
   "s3":{"s3SchemaVersion":"1.0","configurationId":"Config",
         "bucket":{"name":"grayify","ownerIdentity":{"principalId":"..."},"arn":"arn:aws:s3:::grayify"},
         "object":{"key":"in%2Fcat.jpg","size":1234,"eTag":"...","contentType":"image/jpeg","userMetadata":{},
                   "sequencer":"..."}},
   "source":{"host":"10.0.0.5","port":"","userAgent":"..."}}]}"""


def record(
    key: str,
    *,
    bucket: str = "photos",
    event_name: str = "ObjectCreated:Put",
    source: str = "aws:s3",
    etag: str = "0123abcd",
    size: int | None = 10,
    event_time: str | None = "2026-06-01T10:00:00.000Z",
) -> dict[str, Any]:
    """One notification record in the AWS S3 shape."""
    return {
        "eventVersion": "2.1",
        "eventSource": source,
        "eventTime": event_time,
        "eventName": event_name,
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size, "eTag": etag}},
    }


def body(*records: dict[str, Any]) -> bytes:
    return json.dumps({"Records": list(records)}).encode()


def test_minio_body_from_the_reference() -> None:
    events = parse_s3_records(MINIO_BODY.encode())
    assert len(events) == 1
    event = events[0]
    assert event.ref.provider == "minio.default"
    assert (event.ref.bucket, event.ref.key) == ("grayify", "in/cat.jpg")
    assert event.size == 1234
    assert event.etag == "..."
    assert event.source == "minio:s3"
    assert event.event_time == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("form", [str, bytes, json.loads], ids=["str", "bytes", "dict"])
def test_body_may_be_text_bytes_or_a_parsed_dict(form: Any) -> None:
    value = form(MINIO_BODY.encode() if form is bytes else MINIO_BODY)
    assert [e.ref.key for e in parse_s3_records(value)] == ["in/cat.jpg"]


def test_provider_name_is_passed_through() -> None:
    [event] = parse_s3_records(MINIO_BODY, provider="s3.mine")
    assert event.ref.provider == "s3.mine"


def test_aws_record_with_plus_for_spaces_and_quoted_etag() -> None:
    [event] = parse_s3_records(body(record("jobs/photo+1%2B2.jpg", etag='"d41d8cd98f00b204e9800998ecf8427e"')))
    assert event.ref.key == "jobs/photo 1+2.jpg"
    assert event.etag == "d41d8cd98f00b204e9800998ecf8427e"
    assert event.source == "aws:s3"


def test_aws_record_with_percent_encoded_unicode() -> None:
    [event] = parse_s3_records(body(record("jobs/%C3%B1and%C3%BA.jpg")))
    assert event.ref.key == "jobs/ñandú.jpg"


def test_ceph_rgw_record_with_a_plain_key() -> None:
    ceph = record("jobs/photo 1.jpg", source="ceph:s3", event_name="ObjectCreated:Put")
    ceph["s3"]["object"].pop("eTag")
    ceph["s3"]["object"]["etag"] = "abc"
    [event] = parse_s3_records(body(ceph))
    assert event.ref.key == "jobs/photo 1.jpg"
    assert event.etag == "abc"
    assert event.source == "ceph:s3"


@pytest.mark.parametrize(
    "event_name", ["ObjectRemoved:Delete", "s3:ObjectRemoved:Delete", "ObjectRemoved:DeleteMarkerCreated"]
)
def test_object_removed_records_are_ignored(event_name: str) -> None:
    assert parse_s3_records(body(record("jobs/x.jpg", event_name=event_name))) == []


def test_only_created_records_of_a_mixed_body_are_kept() -> None:
    events = parse_s3_records(
        body(
            record("a.jpg"),
            record("b.jpg", event_name="ObjectRemoved:Delete"),
            record("c.jpg", event_name="ObjectCreated:CompleteMultipartUpload"),
        )
    )
    assert [e.ref.key for e in events] == ["a.jpg", "c.jpg"]


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'"a string"',
        b"42",
        b"null",
        b'{"EventName": "s3:TestEvent"}',
        b'{"Records": "nope"}',
        b'{"Records": null}',
        "plain text",
    ],
)
def test_bodies_that_are_not_notifications_yield_nothing(payload: bytes | str) -> None:
    assert parse_s3_records(payload) == []


@pytest.mark.parametrize(
    "bad",
    [
        "not a dict",
        {"eventName": "ObjectCreated:Put"},
        {"eventName": "ObjectCreated:Put", "s3": "x"},
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {}, "object": {"key": "k"}}},
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {}}},
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, "object": {"key": "folder%2F"}}},
    ],
    ids=["not-dict", "no-s3", "s3-not-dict", "no-bucket", "no-key", "folder-marker"],
)
def test_malformed_records_are_skipped_and_others_kept(bad: Any) -> None:
    events = parse_s3_records({"Records": [bad, record("ok.jpg")]})
    assert [e.ref.key for e in events] == ["ok.jpg"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-06-01T10:00:00.000Z", datetime(2026, 6, 1, 10, 0, tzinfo=UTC)),
        ("2026-06-01T10:00:00.250Z", datetime(2026, 6, 1, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2026-06-01T12:00:00+02:00", datetime(2026, 6, 1, 10, 0, tzinfo=UTC)),
    ],
)
def test_event_time_is_parsed(text: str, expected: datetime) -> None:
    [event] = parse_s3_records(body(record("a.jpg", event_time=text)))
    assert event.event_time == expected


@pytest.mark.parametrize("text", [None, "", "yesterday"])
def test_missing_or_unreadable_event_time_means_now(text: str | None) -> None:
    before = datetime.now(UTC)
    [event] = parse_s3_records(body(record("a.jpg", event_time=text)))
    assert before <= event.event_time <= datetime.now(UTC)


def test_missing_size_stays_unknown() -> None:
    [event] = parse_s3_records(body(record("a.jpg", size=None)))
    assert event.size is None
