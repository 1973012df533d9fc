"""The buckets of the platform's own store (OSCAR's /system/buckets) and presigned URLs for one object.

Conveyor has one account, the admin, so every bucket is `private` to it: asking for `public` or
`restricted` visibility is refused (NotSupported) rather than accepted and silently not enforced.
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.control.catalog import ServiceCatalog
from conveyor.errors import BucketNotFound, Conflict, NotSupported, ObjectNotFound
from conveyor.model.event import ObjectInfo, ObjectRef
from conveyor.storage.s3 import S3Provider

OWNER = "conveyor"
"""The one account every bucket belongs to."""


@dataclass(frozen=True)
class Bucket:
    name: str
    services: list[str]
    """Services that read or write in it."""


@dataclass(frozen=True)
class BucketPage:
    bucket: Bucket
    objects: list[ObjectInfo]
    next_page: str | None
    """The token of the next page; None at the end."""


class Buckets:
    def __init__(self, store: S3Provider, catalog: ServiceCatalog) -> None:
        self._store = store
        self._catalog = catalog

    def create(self, name: str, visibility: str) -> None:
        _require_private(visibility)
        if not self._store.ensure_bucket(name):
            raise Conflict(f"the bucket {name!r} already exists")

    def update(self, name: str, visibility: str) -> None:
        self._require_existing(name)
        _require_private(visibility)

    def all(self) -> list[Bucket]:
        return [self._bucket(name) for name in self._store.list_buckets()]

    def read(self, name: str, page: str | None, size: int) -> BucketPage:
        self._require_existing(name)
        try:
            objects, next_token = self._store.list_page(name, token=page, max_keys=size)
        except ObjectNotFound:  # deleted since the check
            raise BucketNotFound(name) from None
        return BucketPage(self._bucket(name), objects, next_token)

    def delete(self, name: str) -> None:
        """The bucket and everything in it, as OSCAR does."""
        self._require_existing(name)
        self._store.delete_bucket(name)

    def presign(self, name: str, key: str, method: str, lifetime_s: int, content_type: str = "") -> str:
        """A URL that lets anyone holding it GET or PUT this one object until it expires."""
        self._require_existing(name)
        return self._store.presign(ObjectRef(bucket=name, key=key), method, lifetime_s, content_type)

    def _bucket(self, name: str) -> Bucket:
        return Bucket(name, self._catalog.services_using_bucket(name))

    def _require_existing(self, name: str) -> None:
        if name not in self._store.list_buckets():
            raise BucketNotFound(name)


def _require_private(visibility: str) -> None:
    if visibility != "private":
        raise NotSupported(f"visibility {visibility!r} is not supported: Conveyor has one account, buckets are private")
