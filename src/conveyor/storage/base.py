"""The storage-provider interface: providers move bytes and nothing else.

Event sources and bucket notifications belong to `conveyor.events`. Every provider maps its SDK's
errors into `conveyor.errors.StorageError` and its subclasses and never returns False.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, Self

from conveyor.model.event import ObjectInfo, ObjectRef


class StorageProvider(ABC):
    kind: ClassVar[str]
    """The FDL key of this provider (`s3`, `minio`, `webdav`, ...)."""

    @abstractmethod
    def download(self, ref: ObjectRef, dest: Path) -> Path:
        """Write the object's bytes to the file `dest` (streamed, never whole in memory)."""

    @abstractmethod
    def upload(self, path: Path, ref: ObjectRef, metadata: dict[str, str] | None = None) -> ObjectInfo:
        """Store the file at `ref`, replacing any object there; returns what the store recorded.

        `metadata` travels with the object where the store allows (S3 user metadata).
        """

    @abstractmethod
    def stat(self, ref: ObjectRef) -> ObjectInfo | None:
        """Size, etag and time of the object, or None when it does not exist."""

    @abstractmethod
    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under `prefix`, each once, fetched page by page.

        The order is the store's: S3 promises key order, SeaweedFS lists folder by folder. Callers
        that need an order sort; the reconciler does not need one.
        """

    @abstractmethod
    def delete(self, ref: ObjectRef) -> None:
        """Remove the object; removing a missing object is not an error."""

    @abstractmethod
    def ensure_bucket(self, bucket: str) -> bool:
        """Create the bucket if needed; True when it was created now."""

    @abstractmethod
    def list_buckets(self) -> list[str]: ...

    @abstractmethod
    def delete_bucket(self, bucket: str) -> None:
        """Remove the bucket and every object in it."""

    def ensure_folder(self, bucket: str, folder: str) -> None:
        """An empty `folder/` marker, so the folder shows in browsers before any file lands."""
        if not folder:
            return
        marker = ObjectRef(bucket=bucket, key=folder.rstrip("/") + "/")
        if self.stat(marker) is None:
            self.put_bytes(marker, b"")

    @abstractmethod
    def put_bytes(self, ref: ObjectRef, data: bytes) -> ObjectInfo: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
