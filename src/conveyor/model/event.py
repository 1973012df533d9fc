"""Objects and the events that announce them.

Every event source (SeaweedFS filer webhook, MinIO/S3 records, the API, the reconciler)
translates what it receives into one `ObjectEvent`; nothing downstream knows the source format.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from pydantic import BaseModel, ConfigDict, Field

from conveyor.model.kinds import DEFAULT_PROVIDER, normalize_provider


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso_z(moment: datetime) -> str:
    """RFC 3339 with milliseconds and a Z, the way S3 and MinIO write `eventTime`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class ObjectRef(BaseModel):
    """Where an object lives: provider (`minio.default` is the platform's own store), bucket, key."""

    model_config = ConfigDict(frozen=True)

    provider: str = DEFAULT_PROVIDER
    bucket: str
    key: str

    @classmethod
    def parse(cls, text: str, provider: str | None = None) -> ObjectRef:
        """`bucket/key...`, optionally `provider:bucket/key...` (`s3.mine:bucket/a/b.txt`).

        The key may be empty (`bucket` or `bucket/`) when the text names a bucket or folder.
        """
        raw = text.strip()
        head, sep, rest = raw.partition(":")
        if sep and "/" not in head and "." in head:
            provider, raw = head, rest
        raw = raw.lstrip("/")
        bucket, _, key = raw.partition("/")
        if not bucket:
            raise ValueError(f"{text!r} does not name a bucket; write bucket/folder/file")
        return cls(provider=normalize_provider(provider or DEFAULT_PROVIDER), bucket=bucket, key=key)

    def __str__(self) -> str:
        return f"{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


class ObjectInfo(BaseModel):
    """What a store says about one object: enough for idempotency keys and listings."""

    ref: ObjectRef
    size: int | None = None
    etag: str = ""
    last_modified: datetime | None = None


class ObjectEvent(BaseModel):
    """An object was created or overwritten. The idempotency key is (service, bucket, key, etag)."""

    ref: ObjectRef
    etag: str = ""
    size: int | None = None
    event_time: datetime = Field(default_factory=utcnow)
    source: str = "api"
    producer_job: str | None = None
    """The job that wrote the object, when the store passes on the metadata Conveyor stamps outputs with."""
    producer_depth: int | None = None

    def to_s3_record(self) -> dict[str, Any]:
        """The event in the MinIO/S3 notification shape OSCAR scripts read from `$EVENT`."""
        event_source = "minio:s3" if self.ref.provider.startswith("minio.") else "aws:s3"
        return {
            "EventName": "s3:ObjectCreated:Put",
            "Key": f"{self.ref.bucket}/{self.ref.key}",
            "Records": [
                {
                    "eventVersion": "2.0",
                    "eventSource": event_source,
                    "awsRegion": "",
                    "eventTime": iso_z(self.event_time),
                    "eventName": "s3:ObjectCreated:Put",
                    "userIdentity": {"principalId": "conveyor"},
                    "requestParameters": {"principalId": "conveyor", "region": "", "sourceIPAddress": ""},
                    "responseElements": {},
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "Config",
                        "bucket": {
                            "name": self.ref.bucket,
                            "ownerIdentity": {"principalId": "conveyor"},
                            "arn": f"arn:aws:s3:::{self.ref.bucket}",
                        },
                        "object": {
                            "key": quote_plus(self.ref.key, safe=""),
                            "size": self.size or 0,
                            "eTag": self.etag,
                            "contentType": "",
                            "userMetadata": {},
                            "sequencer": "",
                        },
                    },
                    "source": {"host": "", "port": "", "userAgent": f"conveyor/{self.source}"},
                }
            ],
        }
