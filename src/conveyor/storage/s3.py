"""Any S3-compatible store through boto3: the embedded SeaweedFS, MinIO, Ceph RGW, AWS S3."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, EndpointConnectionError
from dateutil import parser as dateutil_parser
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

    def __init__(
        self, credentials: S3Credentials, *, max_connections: int = 64, public_endpoint: str | None = None
    ) -> None:
        self.credentials = credentials
        self.public_endpoint = public_endpoint or credentials.endpoint
        """Where clients outside reach the store: presigned URLs point there."""
        self._max_connections = max_connections
        self._client: Any = None
        self._presigner: Any = None

    @property
    def client(self) -> Any:
        """Built on first use: constructing a provider does no I/O."""
        if self._client is None:
            self._client = self._new_client(self.credentials.endpoint)
        return self._client

    def _new_client(self, endpoint: str | None) -> Any:
        creds = self.credentials
        return _fast_session().client(
            "s3",
            endpoint_url=endpoint,
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

    def download(self, ref: ObjectRef, dest: Path) -> Path:
        with _mapped_errors(ref):
            body = self.client.get_object(Bucket=ref.bucket, Key=ref.key)["Body"]
            with dest.open("wb") as out:
                shutil.copyfileobj(body, out, 1024 * 1024)
        return dest

    def upload(self, path: Path, ref: ObjectRef, metadata: dict[str, str] | None = None) -> ObjectInfo:
        size = path.stat().st_size
        extra = {"Metadata": metadata} if metadata else {}
        with _mapped_errors(ref):
            if size <= SINGLE_PUT_LIMIT:
                with path.open("rb") as data:
                    answer = self.client.put_object(Bucket=ref.bucket, Key=ref.key, Body=data, **extra)
                return ObjectInfo(ref=ref, size=size, etag=answer["ETag"].strip('"'))
            self.client.upload_file(str(path), ref.bucket, ref.key, ExtraArgs=extra or None)
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
        token: str | None = None
        while True:
            objects, token = self.list_page(bucket, prefix, token)
            yield from objects
            if token is None:
                return

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

    def list_page(
        self, bucket: str, prefix: str = "", token: str | None = None, max_keys: int = 1000
    ) -> tuple[list[ObjectInfo], str | None]:
        """One page of objects and the token of the next page (None at the end)."""
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if token:
            params["ContinuationToken"] = token
        with _mapped_errors(ObjectRef(bucket=bucket, key=prefix)):
            page = self.client.list_objects_v2(**params)
        objects = [
            ObjectInfo(
                ref=ObjectRef(bucket=bucket, key=item["Key"]),
                size=item["Size"],
                etag=item.get("ETag", "").strip('"'),
                last_modified=item["LastModified"],
            )
            for item in page.get("Contents", [])
        ]
        return objects, page.get("NextContinuationToken") if page.get("IsTruncated") else None

    def delete_bucket(self, bucket: str) -> None:
        """The bucket and every object in it."""
        for info in self.list(bucket):
            self.delete(info.ref)
        with _mapped_errors(ObjectRef(bucket=bucket, key="")):
            self.client.delete_bucket(Bucket=bucket)

    def presign(self, ref: ObjectRef, method: str, expires_s: int, content_type: str = "") -> str:
        """A URL that lets anyone holding it GET or PUT this one object until it expires."""
        if self._presigner is None:
            self._presigner = self._new_client(self.public_endpoint)
        operation = {"GET": "get_object", "PUT": "put_object"}[method]
        params: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
        if content_type and method == "PUT":
            params["ContentType"] = content_type
        with _mapped_errors(ref):
            return self._presigner.generate_presigned_url(operation, Params=params, ExpiresIn=expires_s)

    def list_buckets(self) -> list[str]:
        with _mapped_errors(ObjectRef(bucket="-", key="")):
            return [b["Name"] for b in self.client.list_buckets().get("Buckets", [])]

    def close(self) -> None:
        for client in (self._client, self._presigner):
            if client is not None:
                client.close()
        self._client = self._presigner = None


def _fast_session() -> boto3.session.Session:
    """A session whose XML responses parse timestamps with datetime.fromisoformat: botocore's
    default (dateutil) is most of the time spent listing 1,000-object pages."""
    core = botocore.session.get_session()
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_parse_timestamp)
    return boto3.session.Session(botocore_session=core)


def _parse_timestamp(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return dateutil_parser.parse(value)  # RFC 1123 dates in HTTP headers (HEAD's LastModified)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
