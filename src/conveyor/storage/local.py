"""A directory on this machine (a shared file system, a mounted volume) as a store.

The FDL names it `local.<id>`::

    storage_providers:
      local:
        results:
          path: /srv/results        # must exist: a missing mount must not fill the root disk

Buckets are the directories under `path`, keys are relative paths below them. Keys that would
escape (`..`, absolute, NUL, a symlink pointing out) raise UnsafeKeyError. An upload copies
into a hidden temporary file beside the target and renames it over the target, so readers see
the old file or the new one, never half of one. The etag is the md5 of the content, computed
while copying and kept in an extended attribute so `stat` need not read the file again (where
the file system has no user xattrs, `stat` hashes the file). There is no user metadata:
`upload(metadata=...)` is accepted and dropped, as for WebDAV.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, field_validator

from conveyor.errors import (
    ObjectNotFound,
    StorageAuthError,
    StorageError,
    StorageUnavailable,
    UnsafeKeyError,
)
from conveyor.model.event import ObjectInfo, ObjectRef
from conveyor.storage.base import StorageProvider

CHUNK = 1024 * 1024
TEMP_PREFIX = ".conveyor-upload-"
"""Files being written; listings skip them."""
_ETAG_XATTR = "user.conveyor.md5"


class LocalSettings(BaseModel):
    """`storage_providers.local.<id>` in an FDL file."""

    model_config = ConfigDict(extra="ignore")

    path: Path

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(f"{str(value)!r} must be an absolute directory")
        return value


class LocalProvider(StorageProvider):
    kind = "local"

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self.root = settings.path

    def download(self, ref: ObjectRef, dest: Path) -> Path:
        source = self._file(ref)
        with _mapped_errors(source):
            data = source.open("rb")
        with data, dest.open("wb") as out:
            shutil.copyfileobj(data, out, CHUNK)
        return dest

    def upload(self, path: Path, ref: ObjectRef, metadata: dict[str, str] | None = None) -> ObjectInfo:
        with path.open("rb") as data:
            return self._write(ref, data)

    def put_bytes(self, ref: ObjectRef, data: bytes) -> ObjectInfo:
        if ref.key.endswith("/") or not ref.key:
            self.ensure_folder(ref.bucket, ref.key)
            return ObjectInfo(ref=ref, size=0)
        return self._write(ref, BytesIO(data))

    def stat(self, ref: ObjectRef) -> ObjectInfo | None:
        """A file's size, md5 and time; a key ending in `/` asks about a folder."""
        target = self._path(ref)
        with _mapped_errors(target):
            try:
                status = target.stat()
            except (FileNotFoundError, NotADirectoryError):
                return None  # NotADirectoryError: a parent in the key is a file (`a.txt/b`)
        is_folder = ref.key.endswith("/") or not ref.key
        if stat.S_ISDIR(status.st_mode) != is_folder:
            return None
        if is_folder:
            return ObjectInfo(ref=ref, size=0, last_modified=_mtime(status))
        return ObjectInfo(ref=ref, size=status.st_size, etag=_etag_of(target), last_modified=_mtime(status))

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Files under `prefix` in key order (folders are walked, not listed)."""
        self._require_root()
        folder = prefix.rpartition("/")[0]
        start = self._path(ObjectRef(bucket=bucket, key=folder))
        if not self._path(ObjectRef(bucket=bucket, key="")).is_dir():
            raise ObjectNotFound(f"{self.root / bucket}: no such bucket (directory)")
        if not start.is_dir():
            return
        yield from self._walk(bucket, start, f"{folder}/" if folder else "", prefix)

    def delete(self, ref: ObjectRef) -> None:
        """Remove a file; a folder key (`a/b/`) is removed only when empty."""
        target = self._path(ref)
        with _mapped_errors(target):
            if ref.key.endswith("/"):
                with contextlib.suppress(FileNotFoundError):
                    _remove_empty_dir(target)
                return
            target.unlink(missing_ok=True)

    def ensure_bucket(self, bucket: str) -> bool:
        target = self._path(ObjectRef(bucket=bucket, key=""))
        self._require_root()
        with _mapped_errors(target):
            try:
                target.mkdir()
            except FileExistsError:
                return False
        return True

    def ensure_folder(self, bucket: str, folder: str) -> None:
        target = self._path(ObjectRef(bucket=bucket, key=folder))
        self._require_root()
        with _mapped_errors(target):
            target.mkdir(parents=True, exist_ok=True)

    def list_buckets(self) -> list[str]:
        self._require_root()
        with _mapped_errors(self.root):
            return sorted(entry.name for entry in os.scandir(self.root) if entry.is_dir(follow_symlinks=False))

    def delete_bucket(self, bucket: str) -> None:
        target = self._path(ObjectRef(bucket=bucket, key=""))
        if not target.is_dir():
            raise ObjectNotFound(f"{target}: no such bucket (directory)")
        with _mapped_errors(target):
            shutil.rmtree(target)

    # -- paths --------------------------------------------------------------------------------------

    def _path(self, ref: ObjectRef) -> Path:
        """`<root>/<bucket>/<key>`, refusing anything that would land outside the bucket."""
        if "\x00" in ref.bucket + ref.key:
            raise UnsafeKeyError(f"{ref.bucket}/{ref.key!r} contains a NUL byte")
        if "/" in ref.bucket or ref.bucket in ("", ".", ".."):
            raise UnsafeKeyError(f"bucket {ref.bucket!r} is not a directory name")
        if ref.key.startswith("/"):
            raise UnsafeKeyError(f"key {ref.key!r} is absolute")
        parts = ref.key.rstrip("/").split("/") if ref.key.rstrip("/") else []
        if any(part in ("", ".", "..") for part in parts):
            raise UnsafeKeyError(f"key {ref.key!r} has an empty, '.' or '..' segment")
        target = self.root.joinpath(ref.bucket, *parts)
        # A symlink inside the tree could still point out; resolve() follows every existing one.
        if not target.resolve().is_relative_to(self.root.resolve()):
            raise UnsafeKeyError(f"{ref.bucket}/{ref.key} resolves outside {self.root}")
        return target

    def _file(self, ref: ObjectRef) -> Path:
        if ref.key.endswith("/") or not ref.key:
            raise ObjectNotFound(f"{self.root / ref.bucket / ref.key}: a folder, not a file")
        return self._path(ref)

    def _require_root(self) -> None:
        if not self.root.is_dir():
            raise StorageUnavailable(f"{self.root} does not exist or is not a directory (is the volume mounted?)")

    # -- writing ------------------------------------------------------------------------------------

    def _write(self, ref: ObjectRef, data: BinaryIO) -> ObjectInfo:
        """Copy into a temp file beside the target, hashing as we go, then rename it into place."""
        target = self._file(ref)
        self._require_root()
        temporary = target.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}")
        with _mapped_errors(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                digest, size = _copy_hashing(data, temporary)
                _remember_etag(temporary, digest)
                os.replace(temporary, target)
            finally:
                temporary.unlink(missing_ok=True)
            status = target.stat()
        return ObjectInfo(ref=ref, size=size, etag=digest, last_modified=_mtime(status))

    # -- listing ------------------------------------------------------------------------------------

    def _walk(self, bucket: str, directory: Path, folder: str, prefix: str) -> Iterator[ObjectInfo]:
        """Depth first, entries sorted by name with `/` after directories: global key order."""
        with _mapped_errors(directory):
            entries = [e for e in os.scandir(directory) if not e.name.startswith(TEMP_PREFIX)]
        is_dir = {e.name: e.is_dir(follow_symlinks=False) for e in entries}
        for entry in sorted(entries, key=lambda e: e.name + ("/" if is_dir[e.name] else "")):
            key = f"{folder}{entry.name}"
            if is_dir[entry.name]:
                sub = key + "/"
                if sub.startswith(prefix) or prefix.startswith(sub):
                    yield from self._walk(bucket, Path(entry.path), sub, prefix)
            elif key.startswith(prefix) and entry.is_file(follow_symlinks=False):
                info = self.stat(ObjectRef(bucket=bucket, key=key))
                if info is not None:
                    yield info


def _copy_hashing(data: BinaryIO, destination: Path) -> tuple[str, int]:
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with destination.open("wb") as out:
        while chunk := data.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())  # the rename must not expose a file whose bytes are still in flight
    return digest.hexdigest(), size


def _remember_etag(path: Path, digest: str) -> None:
    """Keep the md5 with the file, tied to its mtime and size so a later edit invalidates it."""
    status = path.stat()
    with contextlib.suppress(OSError):  # no user xattrs here (older tmpfs, some NFS): stat hashes instead
        os.setxattr(path, _ETAG_XATTR, f"{digest} {status.st_mtime_ns} {status.st_size}".encode())


def _etag_of(path: Path) -> str:
    status = path.stat()
    with contextlib.suppress(OSError, ValueError):
        digest, mtime_ns, size = os.getxattr(path, _ETAG_XATTR).decode().split()
        if (int(mtime_ns), int(size)) == (status.st_mtime_ns, status.st_size):
            return digest
    digest_now = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as data:
        while chunk := data.read(CHUNK):
            digest_now.update(chunk)
    return digest_now.hexdigest()


def _remove_empty_dir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise


def _mtime(status: os.stat_result) -> datetime:
    return datetime.fromtimestamp(status.st_mtime, UTC)


@contextlib.contextmanager
def _mapped_errors(path: Path) -> Iterator[None]:
    """OS errors into the StorageError family, naming the path."""
    try:
        yield
    except FileNotFoundError as exc:
        raise ObjectNotFound(f"{path}: not found") from exc
    except PermissionError as exc:
        raise StorageAuthError(f"{path}: permission denied") from exc
    except IsADirectoryError as exc:
        raise StorageError(f"{path}: is a folder, not a file") from exc
    except OSError as exc:
        raise StorageError(f"{path}: {exc.strerror or exc}") from exc
