"""What the stores that keep files in real folders over HTTP share: WebDAV (dCache) and Onedata (CDMI).

A folder-based HTTP store has no flat key space as S3 does: a path `bucket/folder/file` is the URL
`<base>/bucket/folder/file`, the bucket is the first folder, and every folder above a file must be
created before the file can be written. Listing is folder by folder, since such servers answer one
folder's members at a time. `HttpFolderStore` holds what does not depend on the protocol:

- the httpx client, built on first use and closed with the provider;
- the streamed GET of `download`, and `upload`/`put_bytes` as one `_store`;
- `list`, a depth-first walk over sorted folder members that yields files in key order;
- `ensure_folder`, parents first, remembering the folders it made (`KnownFolders`);
- `url_for`, every segment percent-encoded and checked (`path_segments`);
- HTTP errors and statuses mapped into the StorageError family (`mapped_http_errors`, `check_status`).

A subclass supplies the protocol: how to build its client (`_new_client`), how to write a file
(`_store`, usually through `_put_under_parents`), how to list one folder (`_list_folder`) and to make
one (`_make_folder`), and the StorageProvider calls that differ (`stat`, `delete`, `ensure_bucket`,
`list_buckets`, `delete_bucket`).
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Callable, Container, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx

from conveyor.errors import (
    ObjectNotFound,
    StorageAuthError,
    StorageError,
    StorageUnavailable,
    StorageUnreachable,
    UnsafeKeyError,
)
from conveyor.model.event import ObjectInfo, ObjectRef
from conveyor.storage.base import StorageProvider

CHUNK = 1024 * 1024
"""Bytes per read when streaming an answer (a download, a listing)."""
TIMEOUT = httpx.Timeout(60.0, connect=5.0)
"""A slow server may take a minute to answer; one that does not accept the connection is down."""

Body = Callable[[], AbstractContextManager[IO[bytes] | bytes]]
"""Opens what a PUT sends (a file, or bytes), once per attempt."""


@dataclass(frozen=True)
class FolderEntry:
    """One member of a folder, as `_list_folder` reports it."""

    name: str
    """The last path segment, without a trailing `/`."""
    is_folder: bool
    info: ObjectInfo | None = None
    """A file's size, etag and time when the listing carries them; None makes `list` ask `stat`."""

    @property
    def sort_key(self) -> str:
        """The name with `/` after a folder: sorted so, the members are in key order, because every
        key under `a/` sorts between `a/` and the next sibling."""
        return f"{self.name}/" if self.is_folder else self.name


class HttpFolderStore(StorageProvider):
    """A store of files in folders under `base_url`, spoken to over HTTP (see the module docstring)."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        """The server URL and any prefix, no trailing slash: buckets are its children."""
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._known_folders = KnownFolders()
        """So uploads do not create every parent every time."""
        self._folder_lock = threading.Lock()

    # -- what a subclass supplies -----------------------------------------------------------------

    @abstractmethod
    def _new_client(self) -> httpx.Client:
        """A client with the store's credentials, TLS checking and TIMEOUT."""

    @abstractmethod
    def _store(self, ref: ObjectRef, open_body: Body, size: int) -> ObjectInfo:
        """Write the body (`size` bytes) at `ref` under freshly ensured parents; what the store recorded."""

    @abstractmethod
    def _list_folder(self, bucket: str, folder: str) -> list[FolderEntry]:
        """The members of `folder` (empty for the bucket, else ending in `/`), in any order.

        Raises ObjectNotFound when the folder is not there."""

    @abstractmethod
    def _make_folder(self, url: str) -> None:
        """Create the folder at `url`, whose parent exists; a folder already there is no error."""

    # -- the StorageProvider interface ------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        """Built on first use: constructing a provider does no I/O."""
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    def download(self, ref: ObjectRef, dest: Path) -> Path:
        url = self.url_for(ref.bucket, ref.key)
        with mapped_http_errors("GET", url), self.client.stream("GET", url) as response:
            check_status(response, {200}, "GET", url)
            with dest.open("wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    out.write(chunk)
        return dest

    def upload(self, path: Path, ref: ObjectRef, metadata: dict[str, str] | None = None) -> ObjectInfo:
        """Stream the file in one PUT, creating the folders above it first. Folder stores keep no user
        metadata on a PUT, so `metadata` is dropped: it matters only for stores that trigger services."""
        return self._store(ref, lambda: path.open("rb"), path.stat().st_size)

    def put_bytes(self, ref: ObjectRef, data: bytes) -> ObjectInfo:
        if names_folder(ref.key):
            self.ensure_folder(ref.bucket, ref.key)
            return ObjectInfo(ref=ref, size=0)
        return self._store(ref, lambda: nullcontext(data), len(data))

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Files under `prefix` in key order, one folder listing per folder that can hold a match."""
        start = prefix.rpartition("/")[0]
        folder = f"{start}/" if start else ""
        try:
            children = self._children(bucket, folder)
        except ObjectNotFound:
            if start and self.stat(ObjectRef(bucket=bucket, key="")) is not None:
                return  # the bucket is there, the folder is not: nothing under the prefix, as in S3
            raise
        yield from self._walk(bucket, folder, children, prefix)

    def ensure_folder(self, bucket: str, folder: str) -> None:
        parts = [p for p in folder.split("/") if p]
        # One folder creation at a time per provider: WebDAV servers (wsgidav among them) answer 500,
        # not 405, to the loser of two MKCOLs racing for the same collection.
        with self._folder_lock:
            for depth in range(len(parts) + 1):
                url = self.url_for(bucket, "/".join(parts[:depth]), collection=True)
                if url not in self._known_folders:
                    self._make_folder(url)
                    self._known_folders.add(url)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    # -- for subclasses ---------------------------------------------------------------------------

    def url_for(self, bucket: str, key: str, *, collection: bool = False) -> str:
        """`<base>/<bucket>/<key>`, every segment percent-encoded; a folder (`collection`) ends in `/`."""
        path = "/".join(quote(s, safe="") for s in path_segments(bucket, key))
        return f"{self._base_url}/{path}{'/' if collection else ''}"

    def _request(self, method: str, url: str, ok: Container[int], **options: Any) -> httpx.Response:
        """One request whose answer must have an `ok` status, else an error of the StorageError family."""
        with mapped_http_errors(method, url):
            response = self.client.request(method, url, **options)
        check_status(response, ok, method, url)
        return response

    def _put_under_parents(
        self, ref: ObjectRef, put: Callable[[], httpx.Response], parent_gone: Container[int]
    ) -> httpx.Response:
        """`put` under freshly ensured parents; a `parent_gone` status means a parent vanished since
        we last saw it, so forget what we knew, recreate and try once more."""
        self._ensure_parents(ref)
        response = put()
        if response.status_code in parent_gone:
            self._forget_folders(ref.bucket)
            self._ensure_parents(ref)
            response = put()
        return response

    def _ensure_parents(self, ref: ObjectRef) -> None:
        self.ensure_folder(ref.bucket, ref.key.rpartition("/")[0])

    def _forget_folders(self, bucket: str) -> None:
        """After a folder of the bucket was removed (by us or behind our back)."""
        self._known_folders.forget_under(self.url_for(bucket, "", collection=True))

    # -- listing ----------------------------------------------------------------------------------

    def _children(self, bucket: str, folder: str) -> list[FolderEntry]:
        return sorted(self._list_folder(bucket, folder), key=lambda entry: entry.sort_key)

    def _walk(self, bucket: str, folder: str, children: list[FolderEntry], prefix: str) -> Iterator[ObjectInfo]:
        """Depth first over sorted children: the keys come out in global key order."""
        for entry in children:
            key = f"{folder}{entry.name}"
            if not entry.is_folder:
                if key.startswith(prefix) and (info := self._file_info(bucket, key, entry)) is not None:
                    yield info
                continue
            sub = key + "/"
            if not (sub.startswith(prefix) or prefix.startswith(sub)):
                continue
            try:
                grandchildren = self._children(bucket, sub)
            except ObjectNotFound:
                continue  # deleted while we walked: its objects are gone, as they would be from S3
            yield from self._walk(bucket, sub, grandchildren, prefix)

    def _file_info(self, bucket: str, key: str, entry: FolderEntry) -> ObjectInfo | None:
        """What the listing said about the file, else a stat (None when it went in between)."""
        if entry.info is not None:
            return entry.info
        return self.stat(ObjectRef(bucket=bucket, key=key))


def names_folder(key: str) -> bool:
    """A key ending in `/`, or the empty key (the bucket), names a folder rather than a file."""
    return key.endswith("/") or not key


def path_segments(bucket: str, key: str) -> list[str]:
    """Bucket and key as path segments for a URL. A `.` or `..` segment would climb out of the
    bucket once the server normalises the path, and an empty one (`a//b`) would silently become
    `a/b`, another object: all three are refused. A trailing `/` (a folder) is allowed."""
    segments = [bucket, *key.rstrip("/").split("/")] if key.rstrip("/") else [bucket]
    if any(s in ("", ".", "..") for s in segments) or "/" in bucket:
        raise UnsafeKeyError(f"{bucket}/{key} has an empty, '.' or '..' segment")
    return segments


class KnownFolders:
    """URLs of folders known to exist, shared by the threads that stage out through one provider."""

    def __init__(self) -> None:
        self._urls: set[str] = set()
        self._lock = threading.Lock()

    def __contains__(self, url: object) -> bool:
        with self._lock:
            return url in self._urls

    def add(self, url: str) -> None:
        with self._lock:
            self._urls.add(url)

    def forget_under(self, root: str) -> None:
        """After a folder was removed (by us or behind our back): it and everything below it."""
        with self._lock:
            self._urls = {url for url in self._urls if not url.startswith(root)}


# -- HTTP errors into the StorageError family -----------------------------------------------------


@contextmanager
def mapped_http_errors(method: str, url: str) -> Iterator[None]:
    """Transport failures become StorageUnavailable (StorageUnreachable when no connection was made:
    the server is down), naming the URL (which never holds a secret)."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise StorageUnreachable(f"{method} {url}: the server cannot be reached ({exc})") from exc
    except httpx.TransportError as exc:
        raise StorageUnavailable(f"{method} {url}: the server cannot be reached ({exc})") from exc
    except httpx.HTTPError as exc:
        raise StorageError(f"{method} {url}: {exc}") from exc


def check_status(response: httpx.Response, ok: Container[int], method: str, url: str) -> None:
    """Map an unexpected status into the StorageError family: 401/403 auth, 404 not found, 5xx unavailable."""
    status = response.status_code
    if status in ok:
        return
    text = f"{method} {url}: HTTP {status} {response.reason_phrase}".strip()
    if status in (401, 403):
        raise StorageAuthError(f"{text} (the server refused the credentials)")
    if status == 404:
        raise ObjectNotFound(text)
    if status >= 500:
        raise StorageUnavailable(text)
    raise StorageError(text)
