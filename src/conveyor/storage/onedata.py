"""EGI Onedata through its CDMI interface, the calls faas-supervisor makes, through httpx.

The FDL names it `onedata.<id>`::

    storage_providers:
      onedata:
        my_onedata:
          oneprovider_host: plg-cyfronet-01.datahub.egi.eu   # https:// is prepended
          token: MDAxY2xvY2F0aW9u...                         # an access token, sent as X-Auth-Token
          space: my-space

A path `bucket/folder/file` maps to `https://<host>/cdmi/<space>/bucket/folder/file`: folders of
the space play buckets. The calls (CDMI 1.1.1, SNIA ISO/IEC 17826, and Onedata's CDMI guide):

- a file is written with a plain PUT of its bytes (201 new, 204 replaced; 202 accepted) and read
  with a plain GET, both streamed;
- a folder is created with PUT `.../dir/` carrying `X-CDMI-Specification-Version: 1.1.1` and
  `Content-Type: application/cdmi-container`, parents first;
- existence, size and time come from a CDMI GET of selected fields (`?objectID;metadata`), so the
  value is never sent; a folder's members from a CDMI GET of `?children:<range>;childrenrange`,
  where sub-folders end in `/`;
- DELETE removes a file, or a folder with everything in it.

CDMI keeps no content hash, so the etag is derived from the file's objectID, size and mtime: it
changes whenever the content is replaced. Onedata has no per-object user metadata on a plain PUT;
`upload(metadata=...)` is accepted and dropped. No Onedata server runs in the test suite: the
provider is tested against a small CDMI server in tests/integration/storage/test_onedata.py that
answers these calls the way the specification describes.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from conveyor.errors import ObjectNotFound, StorageError
from conveyor.model.event import ObjectInfo, ObjectRef
from conveyor.storage.base import StorageProvider
from conveyor.storage.webdav import Body, KnownFolders, check_status, mapped_http_errors, path_segments

CHUNK = 1024 * 1024
PAGE = 1000
"""Children asked for per CDMI GET of a folder."""
CDMI_VERSION = "1.1.1"
_CDMI_CONTAINER = "application/cdmi-container"
_CDMI_OBJECT = "application/cdmi-object"


class OnedataSettings(BaseModel):
    """`storage_providers.onedata.<id>` in an FDL file."""

    model_config = ConfigDict(extra="ignore")

    oneprovider_host: str
    """A bare host[:port] (https:// is prepended) or a full http:// or https:// URL."""
    token: SecretStr
    space: str
    verify: bool = True

    @field_validator("oneprovider_host")
    @classmethod
    def _host(cls, value: str) -> str:
        text = value.strip().rstrip("/")
        url = text if "://" in text else f"https://{text}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not a host name nor an http(s) URL")
        return url

    @field_validator("space")
    @classmethod
    def _space(cls, value: str) -> str:
        text = value.strip().strip("/")
        if not text or "/" in text:
            raise ValueError(f"{value!r} must be the name of one space")
        return text

    @property
    def space_url(self) -> str:
        return f"{self.oneprovider_host}/cdmi/{quote(self.space, safe='')}"


class OnedataProvider(StorageProvider):
    kind = "onedata"

    def __init__(self, settings: OnedataSettings) -> None:
        self.settings = settings
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._containers = KnownFolders()
        """So uploads do not re-create every parent every time."""

    @property
    def client(self) -> httpx.Client:
        """Built on first use: constructing a provider does no I/O."""
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    headers={"X-Auth-Token": self.settings.token.get_secret_value()},
                    verify=self.settings.verify,
                    timeout=httpx.Timeout(60.0, connect=5.0),
                    follow_redirects=True,
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
        return self._store(ref, lambda: path.open("rb"))

    def put_bytes(self, ref: ObjectRef, data: bytes) -> ObjectInfo:
        if ref.key.endswith("/") or not ref.key:
            self.ensure_folder(ref.bucket, ref.key)
            return ObjectInfo(ref=ref, size=0)
        return self._store(ref, lambda: nullcontext(data))

    def stat(self, ref: ObjectRef) -> ObjectInfo | None:
        """A file's size, etag and time; a key ending in `/` asks about a folder."""
        is_folder = ref.key.endswith("/") or not ref.key
        url = self.url_for(ref.bucket, ref.key, container=is_folder)
        try:
            answer = self._cdmi_get(url, "objectID;objectType;metadata", container=is_folder)
        except ObjectNotFound:
            return None
        if (answer.get("objectType") == _CDMI_CONTAINER) != is_folder:
            return None
        return _info(ref, answer)

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Files under `prefix` in key order, one folder at a time."""
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
        """Remove a file; a folder key (`a/b/`) is removed only when empty."""
        if ref.key.endswith("/"):
            try:
                if self._children(ref.bucket, ref.key):
                    return
            except ObjectNotFound:
                return
        self._delete(self.url_for(ref.bucket, ref.key, container=ref.key.endswith("/")), missing_ok=True)

    def ensure_bucket(self, bucket: str) -> bool:
        if self.stat(ObjectRef(bucket=bucket, key="")) is not None:
            return False
        self._make_container(self.url_for(bucket, "", container=True))
        return True

    def ensure_folder(self, bucket: str, folder: str) -> None:
        parts = [p for p in folder.split("/") if p]
        for depth in range(len(parts) + 1):
            url = self.url_for(bucket, "/".join(parts[:depth]), container=True)
            if url not in self._containers:
                self._make_container(url)

    def list_buckets(self) -> list[str]:
        children = self._all_children(f"{self.settings.space_url}/")
        return sorted(name.rstrip("/") for name in children if name.endswith("/"))

    def delete_bucket(self, bucket: str) -> None:
        """A CDMI DELETE of a container removes it and everything in it."""
        url = self.url_for(bucket, "", container=True)
        self._containers.forget_under(url)
        self._delete(url, missing_ok=False)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None

    # -- URLs and requests ------------------------------------------------------------------------

    def url_for(self, bucket: str, key: str, *, container: bool = False) -> str:
        """`<host>/cdmi/<space>/<bucket>/<key>`, every segment percent-encoded; folders end in `/`."""
        path = "/".join(quote(s, safe="") for s in path_segments(bucket, key))
        return f"{self.settings.space_url}/{path}{'/' if container else ''}"

    def _store(self, ref: ObjectRef, open_body: Body) -> ObjectInfo:
        """A plain PUT of the bytes under freshly ensured parents, then what the store recorded.

        A 404 or 409 means a parent vanished since we last saw it: forget, recreate, try once more."""
        url = self.url_for(ref.bucket, ref.key)
        parent = ref.key.rpartition("/")[0]
        self.ensure_folder(ref.bucket, parent)
        response = self._put_file(url, open_body)
        if response.status_code in (404, 409):
            self._containers.forget_under(self.url_for(ref.bucket, "", container=True))
            self.ensure_folder(ref.bucket, parent)
            response = self._put_file(url, open_body)
        check_status(response, {201, 202, 204}, "PUT", url)
        info = self.stat(ref)
        if info is None:
            raise StorageError(f"{url} was uploaded but the store does not show it")
        return info

    def _put_file(self, url: str, open_body: Body) -> httpx.Response:
        with open_body() as body, mapped_http_errors("PUT", url):
            return self.client.put(url, content=body, headers={"Content-Type": "application/octet-stream"})

    def _make_container(self, url: str) -> None:
        headers = {
            "X-CDMI-Specification-Version": CDMI_VERSION,
            "Content-Type": _CDMI_CONTAINER,
            "Accept": _CDMI_CONTAINER,
        }
        with mapped_http_errors("PUT", url):
            response = self.client.put(url, headers=headers)
        check_status(response, {200, 201, 202, 204}, "PUT", url)
        self._containers.add(url)

    def _cdmi_get(self, url: str, fields: str, *, container: bool) -> dict[str, Any]:
        """A CDMI GET of the named fields only (never the value), as JSON."""
        kind = _CDMI_CONTAINER if container else _CDMI_OBJECT
        headers = {"X-CDMI-Specification-Version": CDMI_VERSION, "Accept": kind}
        target = f"{url}?{fields}"
        with mapped_http_errors("GET", target):
            response = self.client.get(target, headers=headers)
        check_status(response, {200}, "GET", target)
        try:
            answer = response.json()
        except ValueError as exc:
            raise StorageError(f"GET {target}: the answer is not CDMI JSON") from exc
        if not isinstance(answer, dict):
            raise StorageError(f"GET {target}: the answer is not a CDMI object")
        return answer

    def _delete(self, url: str, *, missing_ok: bool) -> None:
        headers = {"X-CDMI-Specification-Version": CDMI_VERSION} if url.endswith("/") else {}
        with mapped_http_errors("DELETE", url):
            response = self.client.delete(url, headers=headers)
        check_status(response, {200, 202, 204, 404} if missing_ok else {200, 202, 204}, "DELETE", url)

    # -- listing ------------------------------------------------------------------------------------

    def _all_children(self, url: str) -> list[str]:
        """Every member name of a folder, page by page (`childrenrange` says what came back)."""
        names: list[str] = []
        while True:
            first = len(names)
            answer = self._cdmi_get(url, f"children:{first}-{first + PAGE - 1};childrenrange", container=True)
            page = [str(name) for name in answer.get("children", [])]
            names += page
            if len(page) < PAGE:
                return names

    def _children(self, bucket: str, folder: str) -> list[str]:
        """Member names sorted as strings: folders end in `/`, which is key order (see _walk)."""
        return sorted(self._all_children(self.url_for(bucket, folder, container=True)))

    def _walk(self, bucket: str, folder: str, children: list[str], prefix: str) -> Iterator[ObjectInfo]:
        """Depth first over sorted names: every key under `a/` sorts between `a/` and the next
        sibling, so the keys come out in global key order."""
        for name in children:
            key = f"{folder}{name}"
            if not name.endswith("/"):
                if key.startswith(prefix) and (info := self.stat(ObjectRef(bucket=bucket, key=key))) is not None:
                    yield info
                continue
            if not (key.startswith(prefix) or prefix.startswith(key)):
                continue
            try:
                grandchildren = self._children(bucket, key)
            except ObjectNotFound:
                continue  # removed while we walked
            yield from self._walk(bucket, key, grandchildren, prefix)


def _info(ref: ObjectRef, answer: dict[str, Any]) -> ObjectInfo:
    metadata = answer.get("metadata") or {}
    size = metadata.get("cdmi_size")
    mtime = str(metadata.get("cdmi_mtime", ""))
    identity = f"{answer.get('objectID', '')} {size} {mtime}"
    return ObjectInfo(
        ref=ref,
        size=int(size) if size not in (None, "") else None,
        etag=hashlib.md5(identity.encode(), usedforsecurity=False).hexdigest(),
        last_modified=_cdmi_time(mtime),
    )


def _cdmi_time(text: str) -> datetime | None:
    """CDMI times are ISO 8601 UTC (`2024-05-01T10:00:00.000000Z`)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
