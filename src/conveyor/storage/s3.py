"""Any S3-compatible store through boto3: the embedded SeaweedFS, MinIO, Ceph RGW, AWS S3."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, EndpointConnectionError
from pydantic import BaseModel, ConfigDict

from conveyor.errors import ObjectNotFound, StorageAuthError, StorageError, StorageUnavailable
from conveyor.model.event import ObjectInfo, ObjectRef
from conveyor.storage.base import StorageProvider

SINGLE_PUT_LIMIT = 16 * 2**20
"""Above this size uploads go multipart (boto3's transfer manager); below, one PUT returns the etag."""

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_AUTH = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "InvalidToken", "ExpiredToken"}


class S3Credentials(BaseModel):
    """`storage_providers.{s3,minio}.<id>` in an FDL file."""

    model_config = ConfigDict(extra="ignore")

    endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"
    verify: bool = True


class S3Provider(StorageProvider):
    kind = "s3"

    def __init__(self, credentials: S3Credentials, *, max_connections: int = 64) -> None:
        self.credentials = credentials
        self._max_connections = max_connections
        self._client: Any = None

    @property
    def client(self) -> Any:
        """Built on first use: constructing a provider does no I/O."""
        if self._client is None:
            creds = self.credentials
            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=creds.endpoint,
                aws_access_key_id=creds.access_key,
                aws_secret_access_key=creds.secret_key,
                region_name=creds.region,
                verify=creds.verify,
                config=Config(
                    max_pool_connections=self._max_connections,
                    connect_timeout=5,
                    read_timeout=60,
                    retries={"max_attempts": 3, "mode": "standard"},
                    s3={"addressing_style": "path"},
                    signature_version="s3v4",
                ),
            )
        return self._client

    def download(self, ref: ObjectRef, dest: Path) -> Path:
        with _mapped_errors(ref):
            body = self.client.get_object(Bucket=ref.bucket, Key=ref.key)["Body"]
            with dest.open("wb") as out:
                shutil.copyfileobj(body, out, 1024 * 1024)
        return dest

    def upload(self, path: Path, ref: ObjectRef) -> ObjectInfo:
        size = path.stat().st_size
        with _mapped_errors(ref):
            if size <= SINGLE_PUT_LIMIT:
                with path.open("rb") as data:
                    answer = self.client.put_object(Bucket=ref.bucket, Key=ref.key, Body=data)
                return ObjectInfo(ref=ref, size=size, etag=answer["ETag"].strip('"'))
            self.client.upload_file(str(path), ref.bucket, ref.key)
        info = self.stat(ref)
        if info is None:
            raise StorageError(f"{ref} was uploaded but the store does not show it")
        return info

    def put_bytes(self, ref: ObjectRef, data: bytes) -> ObjectInfo:
        with _mapped_errors(ref):
            answer = self.client.put_object(Bucket=ref.bucket, Key=ref.key, Body=data)
        return ObjectInfo(ref=ref, size=len(data), etag=answer["ETag"].strip('"'))

    def stat(self, ref: ObjectRef) -> ObjectInfo | None:
        try:
            with _mapped_errors(ref):
                head = self.client.head_object(Bucket=ref.bucket, Key=ref.key)
        except ObjectNotFound:
            return None
        return ObjectInfo(
            ref=ref, size=head["ContentLength"], etag=head["ETag"].strip('"'), last_modified=head["LastModified"]
        )

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        with _mapped_errors(ObjectRef(bucket=bucket, key=prefix)):
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        ref=ObjectRef(bucket=bucket, key=item["Key"]),
                        size=item["Size"],
                        etag=item.get("ETag", "").strip('"'),
                        last_modified=item["LastModified"],
                    )

    def delete(self, ref: ObjectRef) -> None:
        with _mapped_errors(ref):
            self.client.delete_object(Bucket=ref.bucket, Key=ref.key)

    def ensure_bucket(self, bucket: str) -> bool:
        ref = ObjectRef(bucket=bucket, key="")
        try:
            with _mapped_errors(ref):
                self.client.head_bucket(Bucket=bucket)
            return False
        except ObjectNotFound:
            pass
        try:
            with _mapped_errors(ref):
                self.client.create_bucket(Bucket=bucket)
        except StorageError as error:
            if "BucketAlreadyOwnedByYou" in str(error) or "BucketAlreadyExists" in str(error):
                return False
            raise
        return True

    def list_buckets(self) -> list[str]:
        with _mapped_errors(ObjectRef(bucket="-", key="")):
            return [b["Name"] for b in self.client.list_buckets().get("Buckets", [])]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


@contextmanager
def _mapped_errors(ref: ObjectRef) -> Iterator[None]:
    """Turn botocore's exceptions into the StorageError family, naming the object."""
    where = f"{ref.bucket}/{ref.key}"
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        text = f"{where}: {code} {error.get('Message', '')}".strip()
        if code in _NOT_FOUND or status == 404:
            raise ObjectNotFound(text) from exc
        if code in _AUTH or status == 403:
            raise StorageAuthError(text) from exc
        if status >= 500:
            raise StorageUnavailable(text) from exc
        raise StorageError(text) from exc
    except (EndpointConnectionError, ConnectionError) as exc:
        raise StorageUnavailable(f"{where}: the store cannot be reached ({exc})") from exc
    except BotoCoreError as exc:
        raise StorageError(f"{where}: {exc}") from exc
