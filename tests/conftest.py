"""Fixtures that start real components, wait until they are ready, and always stop them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends.base import Notice
from conveyor.platform.platform import Platform
from conveyor.settings import Settings
from conveyor.storage.embedded import EmbeddedSeaweed, WebhookTarget
from conveyor.storage.s3 import S3Credentials, S3Provider
from tests.support.engines import Engine, build_busybox_image, run_dockerd, run_podman_service
from tests.support.kubernetes import Kubernetes, run_kubernetes
from tests.support.slurm import Slurm, run_slurm


@pytest.fixture(autouse=True)
def _isolated_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the machine's ~/.config/conveyor or CONVEYOR_* variables."""
    for name in list(os.environ):
        if name.startswith("CONVEYOR_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CONVEYOR_CONFIG", str(tmp_path / "no-such-config.toml"))


@pytest.fixture
def seaweedfs(tmp_path: Path) -> Iterator[EmbeddedSeaweed]:
    store = EmbeddedSeaweed(
        tmp_path / "seaweedfs",
        s3_port=0,
        access_key="testkey",
        secret_key="testsecret",
        webhook=WebhookTarget("http://127.0.0.1:9/nowhere", "unused"),
    )
    store.start()
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture
def s3(seaweedfs: EmbeddedSeaweed) -> Iterator[S3Provider]:
    provider = S3Provider(S3Credentials(endpoint=seaweedfs.s3_endpoint, access_key="testkey", secret_key="testsecret"))
    try:
        yield provider
    finally:
        provider.close()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """A real Slurm cluster (scripts/slurm-up.sh) for the module that asks."""
    with run_slurm(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kubernetes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubernetes]:
    """One real single-node cluster for the session (scripts/kubernetes-up.sh), shared by the modules that ask."""
    with run_kubernetes(tmp_path_factory.mktemp("kubernetes")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with run_dockerd(tmp_path_factory.mktemp("dockerd")) as engine:
        build_busybox_image(engine)
        yield engine


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with run_podman_service(tmp_path_factory.mktemp("podman")) as engine:
        build_busybox_image(engine)
        yield engine


@pytest.fixture(params=["dockerd", "podman"])
def container_engine(request: pytest.FixtureRequest) -> Engine:
    """Each test using this runs once against dockerd and once against podman's Docker API."""
    return request.getfixturevalue(request.param)


PlatformFactory = Callable[..., Platform]


@pytest.fixture
def make_platform(tmp_path: Path) -> Iterator[PlatformFactory]:
    """Start embedded platforms on free ports; every one is stopped after the test."""
    started: list[Platform] = []

    def make(
        runtime: str = "process",
        data_dir: Path | None = None,
        api: dict[str, Any] | None = None,
        dispatch: dict[str, Any] | None = None,
        slurm: dict[str, Any] | None = None,
        kubernetes: dict[str, Any] | None = None,
        backend: str = "local",
        storage: dict[str, Any] | None = None,
        on_notice: Notice | None = None,
        **local: Any,
    ) -> Platform:
        settings = Settings(
            data_dir=data_dir or tmp_path / "data",
            api={"port": 0, **(api or {})},
            storage={"s3_port": 0, **(storage or {})},
            local={"runtime": runtime, **local},
            dispatch={"retry_base_s": 0.2, "retry_max_s": 2.0, **(dispatch or {})},
            backend=backend,
            **({"slurm": {"enabled": True, **slurm}} if slurm is not None else {}),
            **({"kubernetes": kubernetes} if kubernetes is not None else {}),
        )
        platform = Platform(settings, on_notice=on_notice)
        platform.start()
        started.append(platform)
        return platform

    try:
        yield make
    finally:
        for platform in started:
            platform.stop()
