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

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from urllib.parse import unquote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from conveyor.errors import ObjectNotFound, StorageError
from conveyor.model.event import ObjectInfo, ObjectRef
from conveyor.storage.http_folders import (
    CHUNK,
    TIMEOUT,
    Body,
    FolderEntry,
    HttpFolderStore,
    check_status,
    mapped_http_errors,
    names_folder,
)

_DAV = "{DAV:}"
_PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<d:propfind xmlns:d="DAV:"><d:prop>'
    b"<d:resourcetype/><d:getcontentlength/><d:getetag/><d:getlastmodified/>"
    b"</d:prop></d:propfind>"
)
_REDIRECTS = {301, 302, 303, 307, 308}


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


class WebdavProvider(HttpFolderStore):
    kind = "webdav"

    def __init__(self, settings: WebdavSettings) -> None:
        super().__init__(settings.base_url)
        self.settings = settings
        self._base_path = unquote(urlsplit(settings.base_url).path).rstrip("/")

    def _new_client(self) -> httpx.Client:
        return httpx.Client(
            auth=httpx.BasicAuth(self.settings.login, self.settings.password.get_secret_value()),
            verify=self.settings.verify,
            timeout=TIMEOUT,
            follow_redirects=True,  # dCache doors redirect GETs to pools; PUT handles its own
        )

    # -- the StorageProvider interface ------------------------------------------------------------

    def stat(self, ref: ObjectRef) -> ObjectInfo | None:
        """A file's size, etag and time; a key ending in `/` asks about a folder."""
        is_folder = names_folder(ref.key)
        entry = self._entry_at(self.url_for(ref.bucket, ref.key, collection=is_folder))
        if entry is None or entry.is_collection != is_folder:
            return None
        return _info(ref, entry)

    def delete(self, ref: ObjectRef) -> None:
        """Remove a file. A folder key (`a/b/`) is removed only when empty, so like an S3 folder
        marker it never takes other objects with it."""
        if ref.key.endswith("/"):
            self._delete_empty_folder(ref)
            return
        url = self.url_for(ref.bucket, ref.key)
        self._request("DELETE", url, {200, 202, 204, 404})

    def ensure_bucket(self, bucket: str) -> bool:
        url = self.url_for(bucket, "", collection=True)
        created = self._make_collection(url)
        self._known_folders.add(url)
        return created

    def list_buckets(self) -> list[str]:
        url = f"{self.settings.base_url}/"
        entries = self._propfind(url, depth=1)
        return sorted(e.name for e in entries if e.is_collection and e.path.strip("/"))

    def delete_bucket(self, bucket: str) -> None:
        """DELETE of a collection removes everything in it (RFC 4918 §9.6.1)."""
        url = self.url_for(bucket, "", collection=True)
        self._forget_folders(bucket)
        self._request("DELETE", url, {200, 202, 204})

    # -- URLs -------------------------------------------------------------------------------------

    def _relative(self, href: str) -> str:
        """A PROPFIND href (absolute URL or path, percent-encoded) as `bucket/key`."""
        path = unquote(urlsplit(href).path)
        return path.removeprefix(self._base_path).lstrip("/")

    # -- requests ---------------------------------------------------------------------------------

    def _store(self, ref: ObjectRef, open_body: Body, size: int) -> ObjectInfo:
        """One PUT; a 409 means a parent collection vanished, so it is recreated and the PUT retried."""
        url = self.url_for(ref.bucket, ref.key)
        response = self._put_under_parents(ref, lambda: self._put(url, open_body), parent_gone={409})
        check_status(response, {200, 201, 204}, "PUT", url)
        return self._stored(ref, response, size)

    def _put(self, url: str, open_body: Body) -> httpx.Response:
        """One PUT; a door's redirect (dCache sends writes to a pool) is followed by hand, because
        httpx would re-send an already consumed file object as an empty body."""
        with open_body() as body, mapped_http_errors("PUT", url):
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

    def _make_folder(self, url: str) -> None:
        self._make_collection(url)

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

    def _delete_empty_folder(self, ref: ObjectRef) -> None:
        url = self.url_for(ref.bucket, ref.key, collection=True)
        try:
            entries = self._propfind(url, depth=1)
        except ObjectNotFound:
            return
        if len(entries) > 1:
            return
        self._forget_folders(ref.bucket)
        self._request("DELETE", url, {200, 202, 204, 404})

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

    # -- listing ------------------------------------------------------------------------------------

    def _list_folder(self, bucket: str, folder: str) -> list[FolderEntry]:
        """A collection's members from one PROPFIND of depth 1, which carries the files' details."""
        url = self.url_for(bucket, folder, collection=True)
        here = self._relative(url).rstrip("/")
        return [
            self._folder_entry(bucket, folder, entry)
            for entry in self._propfind(url, depth=1)
            if entry.path.rstrip("/") != here  # the collection itself comes back among its members
        ]

    @staticmethod
    def _folder_entry(bucket: str, folder: str, entry: DavEntry) -> FolderEntry:
        if entry.is_collection:
            return FolderEntry(name=entry.name, is_folder=True)
        info = _info(ObjectRef(bucket=bucket, key=f"{folder}{entry.name}"), entry)
        return FolderEntry(name=entry.name, is_folder=False, info=info)


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
