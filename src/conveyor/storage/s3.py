"""Any S3-compatible store through boto3: the embedded SeaweedFS, MinIO, Ceph RGW, AWS S3."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from conveyor.clouds.aws import boto_client, mapped_errors
from conveyor.errors import ObjectNotFound, StorageError
from conveyor.model.event import ObjectInfo, ObjectRef
from conveyor.storage.base import StorageProvider

SINGLE_PUT_LIMIT = 16 * 2**20
"""Above this size uploads go multipart (boto3's transfer manager); below, one PUT returns the etag."""


class S3Credentials(BaseModel):
    """`storage_providers.{s3,minio}.<id>` in an FDL file."""

    model_config = ConfigDict(extra="ignore")

    endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"
    verify: bool = True

    @field_validator("region", mode="before")
    @classmethod
    def _default_region(cls, value: Any) -> Any:
        """`region:` left empty, as OSCAR's examples do, means the default."""
        return "us-east-1" if value in (None, "") else value


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
        return boto_client(
            "s3",
            endpoint=endpoint,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            region=creds.region,
            verify=creds.verify,
            read_timeout=60,
            max_pool_connections=self._max_connections,
            path_style=True,
            signature_version="s3v4",
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


def _mapped_errors(ref: ObjectRef) -> AbstractContextManager[None]:
    """botocore's exceptions as the StorageError family, naming the object."""
    return mapped_errors(f"{ref.bucket}/{ref.key}")
