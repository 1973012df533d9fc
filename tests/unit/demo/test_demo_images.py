"""How `conveyor demo --backend kubernetes` names and looks for its image on a cluster's nodes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from conveyor.demo.images import ImageDeliveryError, missing_on_nodes, normalized, push_to, pushed_name


def _node(*names: str, padding: int = 0) -> SimpleNamespace:
    images = [SimpleNamespace(names=[name]) for name in names]
    images += [SimpleNamespace(names=[f"docker.io/library/other{i}:1"]) for i in range(padding)]
    return SimpleNamespace(status=SimpleNamespace(images=images))


def test_a_pushed_image_keeps_its_name_and_tag_under_the_registry() -> None:
    assert pushed_name("localhost/conveyor-video-demo:1", "registry.example.org/me/") == (
        "registry.example.org/me/conveyor-video-demo:1"
    )
    assert pushed_name("localhost/conveyor-video-demo:1", "localhost:5000") == "localhost:5000/conveyor-video-demo:1"


def test_names_are_compared_as_the_kubelet_reports_them() -> None:
    assert normalized("busybox") == "docker.io/library/busybox:latest"
    assert normalized("me/tool:2") == "docker.io/me/tool:2"
    assert normalized("localhost/conveyor-video-demo:1") == "localhost/conveyor-video-demo:1"
    assert normalized("registry.example.org:5000/x") == "registry.example.org:5000/x:latest"


def test_an_image_on_no_node_is_missing_unless_a_node_lists_too_many_to_tell() -> None:
    image = "localhost/conveyor-video-demo:1"
    assert missing_on_nodes([_node("localhost/busybox:local"), _node(image)], image) is False
    assert missing_on_nodes([_node("localhost/busybox:local")], image) is True
    assert missing_on_nodes([_node(padding=50)], image) is None
    assert missing_on_nodes([], image) is True


class _Image:
    def __init__(self) -> None:
        self.tags: list[tuple[str, str]] = []

    def tag(self, repository: str, tag: str) -> None:
        self.tags.append((repository, tag))


class _Images:
    def __init__(self, answer: list[dict[str, object]]) -> None:
        self.image, self.answer, self.pushed = _Image(), answer, []

    def get(self, name: str) -> _Image:
        return self.image

    def push(self, repository: str, tag: str, stream: bool, decode: bool) -> list[dict[str, object]]:
        self.pushed.append((repository, tag))
        return self.answer


def test_push_to_tags_and_pushes_and_says_when_the_registry_refuses() -> None:
    engine = SimpleNamespace(images=_Images([{"status": "Pushed"}]))
    assert push_to(engine, "unix:///e.sock", "localhost/conveyor-video-demo:1", "localhost:5000") == (
        "localhost:5000/conveyor-video-demo:1"
    )
    assert engine.images.image.tags == engine.images.pushed == [("localhost:5000/conveyor-video-demo", "1")]

    refused = SimpleNamespace(images=_Images([{"errorDetail": {"message": "denied"}, "error": "denied"}]))
    with pytest.raises(
        ImageDeliveryError, match=r"pushing reg\.example\.org/me/conveyor-video-demo:1 failed: denied .*docker login"
    ):
        push_to(refused, "unix:///e.sock", "localhost/conveyor-video-demo:1", "reg.example.org/me")
