"""The kinds Conveyor knows: one list of storage-provider kinds and one of backend kinds.

Each list has its registry, which maps every kind to the class that implements it
(`storage/registry.py`, `backends/registry.py`); a test keeps the two in step. A storage provider
is named `<kind>.<id>` (`minio.default`, `s3.aws`, `webdav.dcache`), as OSCAR's FDL writes it, and
that name is parsed here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

ProviderKind = Literal["minio", "s3", "webdav", "onedata", "local"]
PROVIDER_KINDS: tuple[str, ...] = get_args(ProviderKind)
INPUT_KINDS: tuple[str, ...] = ("minio", "s3")
"""Kinds a service can be triggered from: only S3-compatible stores send bucket notifications."""
NOT_SUPPORTED_KINDS = {"rucio": "OSCAR's rucio provider is not supported by Conveyor"}
"""Kinds OSCAR knows and Conveyor does not: refused with a reason, not as a typo."""

BackendKind = Literal["local", "slurm", "kubernetes"]
BACKEND_KINDS: tuple[str, ...] = get_args(BackendKind)

DEFAULT_PROVIDER = "minio.default"
"""The platform's own store (OSCAR's MinIO); `minio` alone means the same."""


@dataclass(frozen=True)
class ProviderId:
    """`<kind>.<id>` of a storage provider: the FDL's `storage_provider` and `storage_providers.<kind>.<id>`."""

    kind: str
    ident: str

    @classmethod
    def parse(cls, text: str | None) -> ProviderId:
        """`minio` means `minio.default`; an empty value the platform's own store; the kind must be known."""
        kind, _, ident = (text or DEFAULT_PROVIDER).strip().partition(".")
        if kind in NOT_SUPPORTED_KINDS:
            raise ValueError(f"{NOT_SUPPORTED_KINDS[kind]}; supported kinds: {', '.join(PROVIDER_KINDS)}")
        if kind not in PROVIDER_KINDS:
            raise ValueError(f"unknown storage provider kind {kind!r}; expected one of {', '.join(PROVIDER_KINDS)}")
        return cls(kind, ident or "default")

    def __str__(self) -> str:
        return f"{self.kind}.{self.ident}"

    @property
    def is_default(self) -> bool:
        return str(self) == DEFAULT_PROVIDER


def normalize_provider(value: str | None) -> str:
    """A provider name in its one spelling (`minio` → `minio.default`); ValueError for an unknown kind."""
    return str(ProviderId.parse(value))
