"""Storage providers by FDL name (`minio.default`, `s3.mine`, `webdav.dcache`), built once and reused.

The registry of `model.kinds.PROVIDER_KINDS`: every kind there has its class and its settings model
here. `minio.default` is always the platform's own store. Other names come from a service's
`storage_providers:` section: `<kind>.<id>` is built by the class `PROVIDERS[kind]` names, from
`storage_providers[kind][id]` validated by the settings model `SETTINGS[kind]` names (kombu's
`TRANSPORT_ALIASES`: modules are imported only when a kind is used). Providers with the same
kind and settings share one client and its connection pool.
"""

from __future__ import annotations

import difflib
import importlib
import json
import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from conveyor.errors import StorageError, validation_reasons
from conveyor.model.kinds import DEFAULT_PROVIDER, ProviderId
from conveyor.model.service import Service
from conveyor.storage.base import StorageProvider

PROVIDERS: dict[str, str] = {
    "minio": "conveyor.storage.s3:S3Provider",
    "s3": "conveyor.storage.s3:S3Provider",
    "webdav": "conveyor.storage.webdav:WebdavProvider",
    "onedata": "conveyor.storage.onedata:OnedataProvider",
    "local": "conveyor.storage.local:LocalProvider",
}
"""FDL kind → the provider class, as `module:Class`."""

SETTINGS: dict[str, str] = {
    "minio": "conveyor.storage.s3:S3Credentials",
    "s3": "conveyor.storage.s3:S3Credentials",
    "webdav": "conveyor.storage.webdav:WebdavSettings",
    "onedata": "conveyor.storage.onedata:OnedataSettings",
    "local": "conveyor.storage.local:LocalSettings",
}
"""FDL kind → the pydantic model of its `storage_providers.<kind>.<id>` settings."""


class ProviderRegistry:
    def __init__(self, default: StorageProvider) -> None:
        self.default = default
        self._built: dict[str, StorageProvider] = {}
        self._lock = threading.Lock()

    def provider(self, name: str, service: Service | None = None) -> StorageProvider:
        if name == DEFAULT_PROVIDER:
            return self.default
        settings = service.provider_settings(name) if service else None
        if settings is None:
            raise StorageError(f"storage provider {name!r} is not defined in the service's storage_providers")
        cache_key = json.dumps([ProviderId.parse(name).kind, settings], sort_keys=True, default=str)
        with self._lock:
            provider = self._built.get(cache_key)
            if provider is None:
                provider = build_provider(name, settings)
                self._built[cache_key] = provider
            return provider

    def lookup_for(self, service: Service) -> Callable[[str], StorageProvider]:
        return lambda name: self.provider(name, service)

    def close(self) -> None:
        with self._lock:
            for provider in self._built.values():
                provider.close()
            self._built.clear()
        self.default.close()


def build_provider(name: str, settings: dict[str, Any]) -> StorageProvider:
    """The provider for `<kind>.<id>` from its FDL settings; no I/O happens here."""
    kind = name.partition(".")[0]  # not ProviderId.parse: an unknown kind gets "did you mean" below
    model: type[BaseModel] = _load(SETTINGS, kind)
    try:
        validated = model.model_validate(settings)
    except ValidationError as error:
        reasons = "; ".join(validation_reasons(error.errors(include_input=False)))
        # from None: pydantic's error would chain the settings, passwords included, into tracebacks
        raise StorageError(f"storage provider {name!r} (storage_providers.{kind}): {reasons}") from None
    return _load(PROVIDERS, kind)(validated)


def _load(table: dict[str, str], kind: str) -> Any:
    if kind not in table:
        hint = difflib.get_close_matches(kind, table, n=1)
        did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
        raise StorageError(
            f"storage provider kind {kind!r} is not supported (supported: {', '.join(table)}){did_you_mean}"
        )
    module_name, _, attribute = table[kind].partition(":")
    return getattr(importlib.import_module(module_name), attribute)
