"""dCache and any other WebDAV server (RFC 4918) through httpx.

The FDL names it `webdav.<id>` (OSCAR's dCache uses `webdav.dcache`)::

    storage_providers:
      webdav:
        dcache:
          hostname: prometheus.desy.de:2443     # https:// is prepended, as faas-supervisor does
          login: alice
          password: s3cret
          # verify: false                       # a self-signed door
          # path_prefix: /VOs/myvo              # where "buckets" live on the server

A path `bucket/folder/file` maps to `<base>/<path_prefix>/bucket/folder/file`: the first segment
plays the bucket, the rest the key. Buckets and folders are collections (MKCOL); files are
uploaded and downloaded streamed, never whole in memory. WebDAV has no user metadata on PUT, so
`upload(metadata=...)` is accepted and dropped: lineage metadata matters only for stores that
trigger services, and WebDAV outputs do not.

Listings come from PROPFIND Depth 1, one collection at a time (Depth infinity is disabled on most
servers, dCache included), and yield files only: collections are folders, not objects.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Container, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO
from urllib.parse import quote, unquote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from conveyor.errors import ObjectNotFound, StorageAuthError, StorageError, StorageUnavailable, UnsafeKeyError
from conveyor.model.event import ObjectInfo, ObjectRef
from conveyor.storage.base import StorageProvider

CHUNK = 1024 * 1024
"""Bytes per read when streaming a download to disk."""

_DAV = "{DAV:}"
_PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<d:propfind xmlns:d="DAV:"><d:prop>'
    b"<d:resourcetype/><d:getcontentlength/><d:getetag/><d:getlastmodified/>"
    b"</d:prop></d:propfind>"
)
_REDIRECTS = {301, 302, 303, 307, 308}

Body = Callable[[], AbstractContextManager[IO[bytes] | bytes]]
"""Opens what a PUT sends (a file, or bytes), once per attempt."""


class WebdavSettings(BaseModel):
    """`storage_providers.webdav.<id>` in an FDL file."""

    model_config = ConfigDict(extra="ignore")

    hostname: str
    """A bare host[:port] (https:// is prepended) or a full http:// or https:// URL."""
    login: str
    password: SecretStr
    verify: bool = True
    path_prefix: str = ""

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        text = value.strip().rstrip("/")
        if not text:
            raise ValueError("must name the WebDAV server (host[:port] or an https:// URL)")
        url = text if "://" in text else f"https://{text}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not a host name nor an http(s) URL")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials: put them in login and password")
        return url

    @field_validator("path_prefix")
    @classmethod
    def _path_prefix(cls, value: str) -> str:
        return value.strip().strip("/")

    @property
    def base_url(self) -> str:
        """The server URL and prefix, no trailing slash: buckets are its children."""
        return f"{self.hostname}/{self.path_prefix}".rstrip("/")


@dataclass(frozen=True)
class DavEntry:
    """One resource from a PROPFIND answer, its path relative to the provider's base."""

    path: str
    is_collection: bool
    size: int | None
    etag: str
    last_modified: datetime | None

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]


class WebdavProvider(StorageProvider):
    kind = "webdav"

    def __init__(self, settings: WebdavSettings) -> None:
        self.settings = settings
        self._client: httpx.Client | None = None
        self._base_path = unquote(urlsplit(settings.base_url).path).rstrip("/")
        self._collections = KnownFolders()
        """So uploads do not MKCOL every parent every time."""
        self._lock = threading.Lock()
        self._mkcol_lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        """Built on first use: constructing a provider does no I/O."""
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    auth=httpx.BasicAuth(self.settings.login, self.settings.password.get_secret_value()),
                    verify=self.settings.verify,
                    timeout=httpx.Timeout(60.0, connect=5.0),
                    follow_redirects=True,  # dCache doors redirect GETs to pools; PUT handles its own
                )
            return self._client

    # -- the StorageProvider interface ------------------------------------------------------------

    def download(self, ref: ObjectRef, dest: Path) -> Path:
        url = self.url_for(ref.bucket, ref.key)
        with mapped_http_errors("GET", url), self.client.stream("GET", url) as response:
            check_status(response, {200}, "GET", url)
            with dest.open("wb") as out:
                for chunk in response.iter_bytes(CHUNK):
                    out.write(chunk)
        return dest

    def upload(self, path: Path, ref: ObjectRef, metadata: dict[str, str] | None = None) -> ObjectInfo:
        """Stream the file in one PUT, creating the collections above it first."""
        return self._store(ref, lambda: path.open("rb"), path.stat().st_size)

    def put_bytes(self, ref: ObjectRef, data: bytes) -> ObjectInfo:
        if ref.key.endswith("/") or not ref.key:
            self.ensure_folder(ref.bucket, ref.key)
            return ObjectInfo(ref=ref, size=0)
        return self._store(ref, lambda: nullcontext(data), len(data))

    def stat(self, ref: ObjectRef) -> ObjectInfo | None:
        """A file's size, etag and time; a key ending in `/` asks about a folder."""
        is_folder = ref.key.endswith("/") or not ref.key
        entry = self._entry_at(self.url_for(ref.bucket, ref.key, collection=is_folder))
        if entry is None or entry.is_collection != is_folder:
            return None
        return _info(ref, entry)

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Files under `prefix` in key order, one PROPFIND per collection that can hold a match."""
        start = prefix.rpartition("/")[0]
        folder = f"{start}/" if start else ""
        try:
            children = self._children(bucket, folder)
        except ObjectNotFound:
            if start and self.stat(ObjectRef(bucket=bucket, key="")) is not None:
                return  # the bucket is there, the folder is not: nothing under the prefix, as in S3
            raise
        yield from self._walk(bucket, folder, children, prefix)

    def delete(self, ref: ObjectRef) -> None:
        """Remove a file. A folder key (`a/b/`) is removed only when empty, so like an S3 folder
        marker it never takes other objects with it."""
        if ref.key.endswith("/"):
            self._delete_empty_folder(ref)
            return
        url = self.url_for(ref.bucket, ref.key)
        with mapped_http_errors("DELETE", url):
            response = self.client.request("DELETE", url)
        check_status(response, {200, 202, 204, 404}, "DELETE", url)

    def ensure_bucket(self, bucket: str) -> bool:
        url = self.url_for(bucket, "", collection=True)
        created = self._make_collection(url)
        self._collections.add(url)
        return created

    def ensure_folder(self, bucket: str, folder: str) -> None:
        parts = [p for p in folder.split("/") if p]
        # One MKCOL at a time per provider: servers (wsgidav among them) answer 500, not 405, to
        # the loser of two MKCOLs racing for the same collection.
        with self._mkcol_lock:
            for depth in range(len(parts) + 1):
                key = "/".join(parts[:depth])
                url = self.url_for(bucket, key, collection=True)
                if url not in self._collections:
                    self._make_collection(url)
                    self._collections.add(url)

    def list_buckets(self) -> list[str]:
        url = f"{self.settings.base_url}/"
        entries = self._propfind(url, depth=1)
        return sorted(e.name for e in entries if e.is_collection and e.path.strip("/"))

    def delete_bucket(self, bucket: str) -> None:
        """DELETE of a collection removes everything in it (RFC 4918 §9.6.1)."""
        url = self.url_for(bucket, "", collection=True)
        self._forget_collections(bucket)
        with mapped_http_errors("DELETE", url):
            response = self.client.request("DELETE", url)
        check_status(response, {200, 202, 204}, "DELETE", url)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    # -- URLs -------------------------------------------------------------------------------------

    def url_for(self, bucket: str, key: str, *, collection: bool = False) -> str:
        """`<base>/<bucket>/<key>`, every segment percent-encoded; collections end in `/`."""
        path = "/".join(quote(s, safe="") for s in path_segments(bucket, key))
        return f"{self.settings.base_url}/{path}{'/' if collection else ''}"

    def _relative(self, href: str) -> str:
        """A PROPFIND href (absolute URL or path, percent-encoded) as `bucket/key`."""
        path = unquote(urlsplit(href).path)
        return path.removeprefix(self._base_path).lstrip("/")

    # -- requests ---------------------------------------------------------------------------------

    def _store(self, ref: ObjectRef, open_body: Body, size: int) -> ObjectInfo:
        """PUT under freshly ensured parents; a 409 means a parent vanished since we last saw it,
        so forget what we knew, recreate and try once more."""
        url = self.url_for(ref.bucket, ref.key)
        self._ensure_parents(ref)
        with open_body() as body:
            response = self._put(url, body)
        if response.status_code == 409:
            self._forget_collections(ref.bucket)
            self._ensure_parents(ref)
            with open_body() as body:
                response = self._put(url, body)
        check_status(response, {200, 201, 204}, "PUT", url)
        return self._stored(ref, response, size)

    def _put(self, url: str, body: IO[bytes] | bytes) -> httpx.Response:
        """One PUT; a door's redirect (dCache sends writes to a pool) is followed by hand, because
        httpx would re-send an already consumed file object as an empty body."""
        with mapped_http_errors("PUT", url):
            response = self.client.request("PUT", url, content=body, follow_redirects=False)
            location = response.headers.get("location")
            if response.status_code in _REDIRECTS and location:
                if not isinstance(body, bytes):
                    body.seek(0)
                target = str(response.url.join(location))
                response = self.client.request("PUT", target, content=body, follow_redirects=False)
        return response

    def _stored(self, ref: ObjectRef, response: httpx.Response, size: int) -> ObjectInfo:
        """What the server recorded: its ETag header when it sends one, else a PROPFIND."""
        etag = _clean_etag(response.headers.get("etag", ""))
        if etag:
            return ObjectInfo(ref=ref, size=size, etag=etag)
        info = self.stat(ref)
        if info is None:
            raise StorageError(f"{self.url_for(ref.bucket, ref.key)} was uploaded but the server does not show it")
        return info

    def _make_collection(self, url: str) -> bool:
        """MKCOL; True when created now. 405 means something is already there (RFC 4918 §9.3.1)."""
        with mapped_http_errors("MKCOL", url):
            response = self.client.request("MKCOL", url)
        if response.status_code >= 500 and (entry := self._entry_at(url)) is not None and entry.is_collection:
            return False  # another client created it between our check and our MKCOL
        check_status(response, {200, 201, 405}, "MKCOL", url)
        return response.status_code != 405

    def _entry_at(self, url: str) -> DavEntry | None:
        """What is at `url` (a PROPFIND of depth 0), or None when nothing is."""
        try:
            entries = self._propfind(url, depth=0)
        except ObjectNotFound:
            return None
        return entries[0] if entries else None

    def _ensure_parents(self, ref: ObjectRef) -> None:
        self.ensure_folder(ref.bucket, ref.key.rpartition("/")[0])

    def _forget_collections(self, bucket: str) -> None:
        self._collections.forget_under(self.url_for(bucket, "", collection=True))

    def _delete_empty_folder(self, ref: ObjectRef) -> None:
        url = self.url_for(ref.bucket, ref.key, collection=True)
        try:
            entries = self._propfind(url, depth=1)
        except ObjectNotFound:
            return
        if len(entries) > 1:
            return
        self._forget_collections(ref.bucket)
        with mapped_http_errors("DELETE", url):
            response = self.client.request("DELETE", url)
        check_status(response, {200, 202, 204, 404}, "DELETE", url)

    def _propfind(self, url: str, depth: int) -> list[DavEntry]:
        """The entries of a PROPFIND, parsed while the answer streams in (big folders stay small)."""
        headers = {"Depth": str(depth), "Content-Type": "application/xml"}
        with (
            mapped_http_errors("PROPFIND", url),
            self.client.stream("PROPFIND", url, headers=headers, content=_PROPFIND_BODY) as response,
        ):
            check_status(response, {207}, "PROPFIND", url)
            return list(self._parse_multistatus(response.iter_bytes(CHUNK)))

    def _parse_multistatus(self, chunks: Iterator[bytes]) -> Iterator[DavEntry]:
        # ElementTree's expat refuses entity-expansion bombs (expat >= 2.4.1), and the answer comes
        # from the server the FDL names, so no external-entity risk either.
        parser = ET.XMLPullParser(events=("end",))
        for chunk in chunks:
            parser.feed(chunk)
            yield from self._entries(parser)
        parser.close()
        yield from self._entries(parser)

    def _entries(self, parser: ET.XMLPullParser) -> Iterator[DavEntry]:
        for _event, element in parser.read_events():
            if element.tag == f"{_DAV}response":
                entry = self._entry(element)
                element.clear()
                if entry is not None:
                    yield entry

    def _entry(self, response: ET.Element) -> DavEntry | None:
        href = response.findtext(f"{_DAV}href")
        if href is None:
            return None
        props: dict[str, ET.Element] = {}
        for propstat in response.iter(f"{_DAV}propstat"):
            if " 200 " not in f"{propstat.findtext(f'{_DAV}status', '')} ":
                continue  # properties the server does not have come back with 404 status
            for prop in propstat.iter(f"{_DAV}prop"):
                props.update({child.tag: child for child in prop})
        kind = props.get(f"{_DAV}resourcetype")
        length = props.get(f"{_DAV}getcontentlength")
        modified = props.get(f"{_DAV}getlastmodified")
        return DavEntry(
            path=self._relative(href),
            is_collection=kind is not None and kind.find(f"{_DAV}collection") is not None,
            size=int(length.text) if length is not None and (length.text or "").strip() else None,
            etag=_clean_etag(props[f"{_DAV}getetag"].text or "") if f"{_DAV}getetag" in props else "",
            last_modified=_http_date(modified.text) if modified is not None else None,
        )

    def _children(self, bucket: str, folder: str) -> list[DavEntry]:
        """A collection's members sorted by name with `/` after folders: in key order, because
        every key under `a/` sorts between `a/` and the next sibling."""
        url = self.url_for(bucket, folder, collection=True)
        here = self._relative(url).rstrip("/")
        children = [e for e in self._propfind(url, depth=1) if e.path.rstrip("/") != here]
        return sorted(children, key=lambda e: e.name + ("/" if e.is_collection else ""))

    def _walk(self, bucket: str, folder: str, children: list[DavEntry], prefix: str) -> Iterator[ObjectInfo]:
        """Depth first over sorted children: the keys come out in global key order."""
        for entry in children:
            key = f"{folder}{entry.name}"
            if not entry.is_collection:
                if key.startswith(prefix):
                    yield _info(ObjectRef(bucket=bucket, key=key), entry)
                continue
            sub = key + "/"
            if not (sub.startswith(prefix) or prefix.startswith(sub)):
                continue
            try:
                grandchildren = self._children(bucket, sub)
            except ObjectNotFound:
                continue  # deleted while we walked: its objects are gone, as they would be from S3
            yield from self._walk(bucket, sub, grandchildren, prefix)


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


def _info(ref: ObjectRef, entry: DavEntry) -> ObjectInfo:
    return ObjectInfo(ref=ref, size=entry.size, etag=entry.etag, last_modified=entry.last_modified)


def _clean_etag(value: str) -> str:
    """`W/"abc"` and `"abc"` both as `abc`."""
    return value.strip().removeprefix("W/").strip('"')


def _http_date(text: str | None) -> datetime | None:
    try:
        return parsedate_to_datetime(text or "")
    except (TypeError, ValueError):
        return None


# -- HTTP errors into the StorageError family (shared with the Onedata provider) ------------------


@contextmanager
def mapped_http_errors(method: str, url: str) -> Iterator[None]:
    """Transport failures become StorageUnavailable, naming the URL (which never holds a secret)."""
    try:
        yield
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
