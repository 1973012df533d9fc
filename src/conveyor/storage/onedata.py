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
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator

from conveyor.errors import ObjectNotFound, StorageError
from conveyor.model.event import ObjectInfo, ObjectRef
from conveyor.storage.http_folders import (
    TIMEOUT,
    Body,
    FolderEntry,
    HttpFolderStore,
    check_status,
    mapped_http_errors,
    names_folder,
)

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


class OnedataProvider(HttpFolderStore):
    kind = "onedata"

    def __init__(self, settings: OnedataSettings) -> None:
        super().__init__(settings.space_url)
        self.settings = settings

    def _new_client(self) -> httpx.Client:
        return httpx.Client(
            headers={"X-Auth-Token": self.settings.token.get_secret_value()},
            verify=self.settings.verify,
            timeout=TIMEOUT,
            follow_redirects=True,
        )

    # -- the StorageProvider interface ------------------------------------------------------------

    def stat(self, ref: ObjectRef) -> ObjectInfo | None:
        """A file's size, etag and time; a key ending in `/` asks about a folder."""
        is_folder = names_folder(ref.key)
        url = self.url_for(ref.bucket, ref.key, collection=is_folder)
        try:
            answer = self._cdmi_get(url, "objectID;objectType;metadata", container=is_folder)
        except ObjectNotFound:
            return None
        if (answer.get("objectType") == _CDMI_CONTAINER) != is_folder:
            return None
        return _info(ref, answer)

    def delete(self, ref: ObjectRef) -> None:
        """Remove a file; a folder key (`a/b/`) is removed only when empty."""
        if ref.key.endswith("/"):
            try:
                if self._list_folder(ref.bucket, ref.key):
                    return
            except ObjectNotFound:
                return
        self._delete(self.url_for(ref.bucket, ref.key, collection=ref.key.endswith("/")), missing_ok=True)

    def ensure_bucket(self, bucket: str) -> bool:
        if self.stat(ObjectRef(bucket=bucket, key="")) is not None:
            return False
        url = self.url_for(bucket, "", collection=True)
        self._make_folder(url)
        self._known_folders.add(url)
        return True

    def list_buckets(self) -> list[str]:
        children = self._all_children(f"{self.settings.space_url}/")
        return sorted(name.rstrip("/") for name in children if name.endswith("/"))

    def delete_bucket(self, bucket: str) -> None:
        """A CDMI DELETE of a container removes it and everything in it."""
        url = self.url_for(bucket, "", collection=True)
        self._forget_folders(bucket)
        self._delete(url, missing_ok=False)

    # -- requests ---------------------------------------------------------------------------------

    def _store(self, ref: ObjectRef, open_body: Body, size: int) -> ObjectInfo:
        """A plain PUT of the bytes, then what the store recorded (a CDMI PUT answers no etag).

        A 404 or 409 means a parent vanished since we last saw it: it is recreated and the PUT retried."""
        url = self.url_for(ref.bucket, ref.key)
        response = self._put_under_parents(ref, lambda: self._put_file(url, open_body), parent_gone={404, 409})
        check_status(response, {201, 202, 204}, "PUT", url)
        info = self.stat(ref)
        if info is None:
            raise StorageError(f"{url} was uploaded but the store does not show it")
        return info

    def _put_file(self, url: str, open_body: Body) -> httpx.Response:
        with open_body() as body, mapped_http_errors("PUT", url):
            return self.client.put(url, content=body, headers={"Content-Type": "application/octet-stream"})

    def _make_folder(self, url: str) -> None:
        headers = {
            "X-CDMI-Specification-Version": CDMI_VERSION,
            "Content-Type": _CDMI_CONTAINER,
            "Accept": _CDMI_CONTAINER,
        }
        self._request("PUT", url, {200, 201, 202, 204}, headers=headers)

    def _cdmi_get(self, url: str, fields: str, *, container: bool) -> dict[str, Any]:
        """A CDMI GET of the named fields only (never the value), as JSON."""
        kind = _CDMI_CONTAINER if container else _CDMI_OBJECT
        headers = {"X-CDMI-Specification-Version": CDMI_VERSION, "Accept": kind}
        target = f"{url}?{fields}"
        response = self._request("GET", target, {200}, headers=headers)
        try:
            answer = response.json()
        except ValueError as exc:
            raise StorageError(f"GET {target}: the answer is not CDMI JSON") from exc
        if not isinstance(answer, dict):
            raise StorageError(f"GET {target}: the answer is not a CDMI object")
        return answer

    def _delete(self, url: str, *, missing_ok: bool) -> None:
        headers = {"X-CDMI-Specification-Version": CDMI_VERSION} if url.endswith("/") else {}
        self._request("DELETE", url, {200, 202, 204, 404} if missing_ok else {200, 202, 204}, headers=headers)

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

    def _list_folder(self, bucket: str, folder: str) -> list[FolderEntry]:
        """A container's members, sub-folders ending in `/`; CDMI lists no file details, so `list`
        stats each file it yields."""
        names = self._all_children(self.url_for(bucket, folder, collection=True))
        return [FolderEntry(name=name.removesuffix("/"), is_folder=name.endswith("/")) for name in names]


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
