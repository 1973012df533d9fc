"""Object references and the S3-shaped event OSCAR scripts read from $EVENT."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import unquote_plus

import pytest
from pydantic import ValidationError

from conveyor.model.event import ObjectEvent, ObjectRef, iso_z


def event_for(key: str, provider: str = "minio.default", **fields: object) -> ObjectEvent:
    return ObjectEvent(ref=ObjectRef(provider=provider, bucket="grayify", key=key), **fields)


def first_record(event: ObjectEvent) -> dict:
    return event.to_s3_record()["Records"][0]


# ---- ObjectRef ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "provider", "bucket", "key"),
    [
        ("bucket/a/b.txt", "minio.default", "bucket", "a/b.txt"),
        ("s3.mine:bucket/k", "s3.mine", "bucket", "k"),
        ("minio.other:b/x/y", "minio.other", "b", "x/y"),
        ("/bucket/a.txt", "minio.default", "bucket", "a.txt"),
        ("  bucket/a.txt ", "minio.default", "bucket", "a.txt"),
        ("bucket", "minio.default", "bucket", ""),
        ("bucket/", "minio.default", "bucket", ""),
        ("bucket/dir/", "minio.default", "bucket", "dir/"),
        ("bucket/time 10:00.txt", "minio.default", "bucket", "time 10:00.txt"),
    ],
)
def test_object_ref_parse(text: str, provider: str, bucket: str, key: str) -> None:
    ref = ObjectRef.parse(text)
    assert (ref.provider, ref.bucket, ref.key) == (provider, bucket, key)


def test_object_ref_parse_uses_given_provider_unless_text_names_one() -> None:
    assert ObjectRef.parse("b/k", provider="s3").provider == "s3.default"
    assert ObjectRef.parse("s3.mine:b/k", provider="minio.default").provider == "s3.mine"


@pytest.mark.parametrize("text", ["", "/", "  ", "s3.mine:", "s3.mine:/"])
def test_object_ref_parse_requires_a_bucket(text: str) -> None:
    with pytest.raises(ValueError, match="does not name a bucket"):
        ObjectRef.parse(text)


def test_object_ref_parse_rejects_unknown_provider_kind() -> None:
    with pytest.raises(ValueError, match="unknown storage provider kind"):
        ObjectRef.parse("ftp.x:bucket/k")


@pytest.mark.parametrize(("key", "name"), [("a/b/c.txt", "c.txt"), ("c.txt", "c.txt"), ("dir/", ""), ("", "")])
def test_object_ref_name_is_the_last_segment(key: str, name: str) -> None:
    assert ObjectRef(bucket="b", key=key).name == name


def test_object_ref_str_and_immutability() -> None:
    ref = ObjectRef.parse("bucket/in/cat.jpg")
    assert str(ref) == "bucket/in/cat.jpg"
    with pytest.raises(ValidationError):
        ref.key = "other"  # type: ignore[misc]
    assert ref == ObjectRef(bucket="bucket", key="in/cat.jpg")
    assert hash(ref) == hash(ObjectRef(bucket="bucket", key="in/cat.jpg"))


# ---- iso_z ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 6, 1, 10, 0, 0, tzinfo=UTC), "2026-06-01T10:00:00.000Z"),
        (datetime(2026, 6, 1, 10, 0, 0, 123456, tzinfo=UTC), "2026-06-01T10:00:00.123Z"),
        (datetime(2026, 6, 1, 12, 0, 5, 9000, tzinfo=timezone(timedelta(hours=2))), "2026-06-01T10:00:05.009Z"),
    ],
)
def test_iso_z_is_utc_with_milliseconds(moment: datetime, text: str) -> None:
    assert iso_z(moment) == text


# ---- ObjectEvent.to_s3_record ---------------------------------------------------------------


def test_s3_record_has_the_fields_the_supervisor_reads() -> None:
    event = event_for(
        "in/cat.jpg",
        etag="abc123",
        size=1234,
        event_time=datetime(2026, 6, 1, 10, 0, tzinfo=UTC),
    )
    body = event.to_s3_record()
    assert body["EventName"] == "s3:ObjectCreated:Put"
    assert body["Key"] == "grayify/in/cat.jpg"
    assert len(body["Records"]) == 1
    record = body["Records"][0]
    assert record["eventSource"] == "minio:s3"
    assert record["eventName"] == "s3:ObjectCreated:Put"
    assert record["eventTime"] == "2026-06-01T10:00:00.000Z"
    assert record["s3"]["bucket"]["name"] == "grayify"
    assert record["s3"]["bucket"]["arn"] == "arn:aws:s3:::grayify"
    assert record["s3"]["object"]["key"] == "in%2Fcat.jpg"
    assert record["s3"]["object"]["size"] == 1234
    assert record["s3"]["object"]["eTag"] == "abc123"
    assert "principalId" in record["requestParameters"]
    assert "sourceIPAddress" in record["requestParameters"]


def test_s3_record_is_plain_json() -> None:
    body = event_for("in/x").to_s3_record()
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize(
    ("provider", "source"),
    [("minio.default", "minio:s3"), ("minio.external", "minio:s3"), ("s3.mine", "aws:s3"), ("s3.default", "aws:s3")],
)
def test_s3_record_event_source_by_provider(provider: str, source: str) -> None:
    assert first_record(event_for("in/x", provider=provider))["eventSource"] == source


@pytest.mark.parametrize(
    "key",
    [
        "in/cat.jpg",
        "in/a b.txt",
        "in/a+b.txt",
        "in/a b+c%20d.txt",
        "in/sub/deep/x.bin",
        "in/ñandú/фото 1.jpg",
        "in/emoji-🙂.png",
        "in/q?x=1&y=#z",
    ],
)
def test_s3_record_key_round_trips_through_unquote_plus(key: str) -> None:
    encoded = first_record(event_for(key))["s3"]["object"]["key"]
    assert "/" not in encoded
    assert " " not in encoded
    assert unquote_plus(encoded) == key


def test_s3_record_encodes_spaces_as_plus_and_plus_as_percent() -> None:
    assert first_record(event_for("a b+c.txt"))["s3"]["object"]["key"] == "a+b%2Bc.txt"


def test_s3_record_missing_size_is_zero() -> None:
    assert first_record(event_for("in/x"))["s3"]["object"]["size"] == 0


def test_s3_record_names_the_event_source_in_the_user_agent() -> None:
    assert first_record(event_for("in/x", source="seaweedfs"))["source"]["userAgent"] == "conveyor/seaweedfs"


def test_object_event_defaults_to_now() -> None:
    before = datetime.now(UTC)
    event = event_for("in/x")
    assert before <= event.event_time <= datetime.now(UTC)
    assert event.event_time.tzinfo is not None
