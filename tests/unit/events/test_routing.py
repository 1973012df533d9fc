"""Which services an object event triggers."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.events.routing import InputIndex
from conveyor.model.event import ObjectRef
from conveyor.model.service import Service


def service(name: str, *inputs: dict[str, Any]) -> Service:
    return Service.model_validate({"name": name, "image": "img", "script": "true", "input": list(inputs)})


def minio(path: str) -> dict[str, str]:
    return {"storage_provider": "minio.default", "path": path}


def index_of(*services: Service) -> InputIndex:
    index = InputIndex()
    index.rebuild(list(services))
    return index


def ref(text: str) -> ObjectRef:
    return ObjectRef.parse(text)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("in/x.jpg", ["grayify"]),
        ("in/sub/deep/x.jpg", ["grayify"]),
        ("inx/y.jpg", []),
        ("in", []),
        ("out/x.jpg", []),
        ("x.jpg", []),
    ],
)
def test_folder_input_matches_keys_under_it_with_a_slash_boundary(key: str, expected: list[str]) -> None:
    index = index_of(service("grayify", minio("photos/in")))
    assert index.services_for(ObjectRef(bucket="photos", key=key)) == expected


def test_whole_bucket_input_matches_every_key_in_the_bucket() -> None:
    index = index_of(service("all", {"storage_provider": "webdav.d", "path": "photos"}))
    assert index.services_for(ObjectRef(provider="webdav.d", bucket="photos", key="a.jpg")) == ["all"]
    assert index.services_for(ObjectRef(provider="webdav.d", bucket="photos", key="x/y/z.jpg")) == ["all"]
    assert index.services_for(ObjectRef(provider="webdav.d", bucket="other", key="a.jpg")) == []


@pytest.mark.parametrize("key", ["in/", "in/sub/", ""])
def test_folder_markers_and_empty_keys_are_ignored(key: str) -> None:
    index = index_of(service("grayify", minio("photos/in")))
    assert index.services_for(ObjectRef(bucket="photos", key=key)) == []


def test_other_providers_and_buckets_do_not_match() -> None:
    index = index_of(service("grayify", minio("photos/in")))
    assert index.services_for(ObjectRef(provider="s3.mine", bucket="photos", key="in/x.jpg")) == []
    assert index.services_for(ObjectRef(bucket="photos2", key="in/x.jpg")) == []
    assert index.services_for(ObjectRef(bucket="in", key="photos/x.jpg")) == []


def test_a_service_is_listed_once_even_when_two_inputs_match() -> None:
    index = index_of(service("twice", minio("photos/in"), minio("photos/in/sub")))
    assert index.services_for(ref("photos/in/sub/x.jpg")) == ["twice"]


def test_every_matching_service_is_listed_in_definition_order() -> None:
    index = index_of(
        service("first", minio("photos/in")),
        service("nested", minio("photos/in/sub")),
        service("elsewhere", minio("photos/out")),
        service("last", minio("photos/in")),
    )
    assert index.services_for(ref("photos/in/sub/x.jpg")) == ["first", "nested", "last"]
    assert index.services_for(ref("photos/in/x.jpg")) == ["first", "last"]


def test_empty_index_matches_nothing() -> None:
    assert InputIndex().services_for(ref("photos/in/x.jpg")) == []


def test_rebuild_replaces_the_index() -> None:
    index = index_of(service("old", minio("photos/in")))
    index.rebuild([service("new", minio("videos/in"))])
    assert index.services_for(ref("photos/in/x.jpg")) == []
    assert index.services_for(ref("videos/in/x.mp4")) == ["new"]
    index.rebuild([])
    assert index.services_for(ref("videos/in/x.mp4")) == []


def test_service_without_inputs_is_never_triggered() -> None:
    index = index_of(service("http-only"))
    assert index.services_for(ref("http-only/in/x")) == []
