"""Storage providers by FDL name (`minio.default`, `s3.mine`), built once and reused.

`minio.default` is always the platform's own store. Other names come from a service's
`storage_providers:` section; providers with the same kind and credentials share one client
and its connection pool.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from conveyor.errors import StorageError
from conveyor.model.service import DEFAULT_PROVIDER, Service
from conveyor.storage.base import StorageProvider
from conveyor.storage.s3 import S3Credentials, S3Provider

S3_KINDS = ("minio", "s3")


class ProviderRegistry:
    def __init__(self, default: StorageProvider) -> None:
        self.default = default
        self._built: dict[str, StorageProvider] = {}
        self._lock = threading.Lock()

    def provider(self, name: str, service: Service | None = None) -> StorageProvider:
        if name == DEFAULT_PROVIDER:
            return self.default
        kind, _, ident = name.partition(".")
        settings = (service.storage_providers if service else {}).get(kind, {}).get(ident)
        if settings is None:
            raise StorageError(f"storage provider {name!r} is not defined in the service's storage_providers")
        if kind not in S3_KINDS:
            raise StorageError(f"storage provider kind {kind!r} is not supported yet (supported: minio, s3)")
        cache_key = json.dumps([kind, settings], sort_keys=True, default=str)
        with self._lock:
            provider = self._built.get(cache_key)
            if provider is None:
                provider = S3Provider(S3Credentials.model_validate(settings))
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
