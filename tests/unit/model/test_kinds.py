"""The one list of provider kinds and the one of backend kinds, their registries in step, and ids."""

from __future__ import annotations

import pytest

from conveyor.backends.registry import BACKENDS, backend_class
from conveyor.errors import BackendUnavailable
from conveyor.model.kinds import BACKEND_KINDS, PROVIDER_KINDS, ProviderId
from conveyor.storage.registry import PROVIDERS, SETTINGS


def test_every_provider_kind_has_its_class_and_settings_and_nothing_else_does() -> None:
    assert tuple(PROVIDERS) == tuple(SETTINGS) == PROVIDER_KINDS


def test_every_backend_kind_has_its_class() -> None:
    assert tuple(BACKENDS) == BACKEND_KINDS
    assert [backend_class(kind).name for kind in BACKEND_KINDS] == list(BACKEND_KINDS)


def test_an_unknown_backend_kind_suggests_the_nearest() -> None:
    with pytest.raises(BackendUnavailable, match=r"there is no backend 'slrum'.*did you mean 'slurm'"):
        backend_class("slrum")


@pytest.mark.parametrize(
    ("text", "kind", "ident"),
    [("minio", "minio", "default"), ("", "minio", "default"), ("s3.aws", "s3", "aws"), (" webdav.d ", "webdav", "d")],
)
def test_provider_ids(text: str, kind: str, ident: str) -> None:
    parsed = ProviderId.parse(text)
    assert (parsed.kind, parsed.ident) == (kind, ident)
    assert str(parsed) == f"{kind}.{ident}"


def test_a_kind_oscar_has_and_conveyor_does_not_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="OSCAR's rucio provider is not supported by Conveyor; supported kinds: minio"):
        ProviderId.parse("rucio.cern")
