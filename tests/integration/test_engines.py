"""The real engines the suite relies on (dockerd and podman's Docker API) run Conveyor-style job containers.

Each engine is started by a module-scoped fixture (start, wait for readiness, yield, always stop), so the
whole file pays for one start per engine plus one extra start/stop cycle per engine in the lifecycle test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from tests.support.engines import (
    BUSYBOX_TAG,
    Engine,
    build_busybox_image,
    mounts_under,
    run_dockerd,
    run_podman_service,
)

pytestmark = pytest.mark.docker

Starter = Callable[[Path], contextlib.AbstractContextManager[Engine]]
STARTERS: dict[str, Starter] = {"dockerd": run_dockerd, "podman": run_podman_service}

MEMORY_LIMIT = 64 * 1024 * 1024
HALF_A_CPU = 500_000_000  # nano CPUs

# The job reads its input through the bind mount, writes its result next to it, reports the limits it
# sees and fails on purpose with exit code 3 (Conveyor must pass job exit codes through).
JOB_SCRIPT = """
set -e
echo "$JOB_ID:$(cat "$INPUT_FILE")" > /data/out.txt
ls /sys/class/net > /data/net.txt
cg=/sys/fs/cgroup  # cgroup v2 file first, then v1
cat $cg/memory.max > /data/mem.txt 2>/dev/null || cat $cg/memory/memory.limit_in_bytes > /data/mem.txt
echo "job $JOB_ID done"
exit 3
"""


@pytest.fixture(scope="module", params=sorted(STARTERS))
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with STARTERS[request.param](tmp_path_factory.mktemp(request.param)) as running:
        yield running


@pytest.fixture(scope="module")
def busybox_image(engine: Engine) -> str:
    return build_busybox_image(engine)


@pytest.fixture
def client(engine: Engine) -> Iterator[docker.DockerClient]:
    # Closed explicitly: an unclosed client leaks its socket (pytest turns warnings into errors).
    with contextlib.closing(engine.client()) as opened:
        yield opened


def test_busybox_image_builds_from_scratch(engine: Engine, client: docker.DockerClient, busybox_image: str) -> None:
    image = client.images.get(busybox_image)

    assert busybox_image == BUSYBOX_TAG
    assert busybox_image in image.tags
    assert "PATH=/bin" in image.attrs["Config"]["Env"]
    # A second call finds the tag and does not rebuild.
    assert build_busybox_image(engine) == busybox_image
    assert client.images.get(busybox_image).id == image.id


def test_job_container_gets_bind_mount_env_limits_and_exit_code(
    client: docker.DockerClient, busybox_image: str, tmp_path: Path
) -> None:
    (tmp_path / "in.txt").write_text("payload")

    container = client.containers.run(
        busybox_image,
        ["/bin/sh", "-c", JOB_SCRIPT],
        environment={"JOB_ID": "job-42", "INPUT_FILE": "/data/in.txt"},
        volumes={str(tmp_path): {"bind": "/data", "mode": "rw"}},
        nano_cpus=HALF_A_CPU,
        mem_limit=MEMORY_LIMIT,
        network_mode="none",
        detach=True,
    )
    try:
        result = container.wait(timeout=60)
        logs = container.logs().decode()
        host_config = client.api.inspect_container(container.id)["HostConfig"]
    finally:
        container.remove(force=True)

    assert result["StatusCode"] == 3, logs
    assert "job job-42 done" in logs
    assert (tmp_path / "out.txt").read_text() == "job-42:payload\n"
    assert (tmp_path / "net.txt").read_text().split() == ["lo"]  # network_mode="none"
    assert int((tmp_path / "mem.txt").read_text()) == MEMORY_LIMIT  # enforced by the kernel, not just stored
    assert host_config["NanoCpus"] == HALF_A_CPU


@pytest.mark.parametrize("name", sorted(STARTERS))
def test_engine_is_gone_after_the_context_exits(name: str, tmp_path: Path) -> None:
    # A second instance, started while the module's engine still runs: instances must not interfere.
    with STARTERS[name](tmp_path) as engine, contextlib.closing(engine.client()) as client:
        assert client.ping()
        assert engine.socket_path.is_socket()

    assert not engine.socket_path.exists()
    assert not _process_alive(engine.pid)
    assert not engine.state_dir.exists()
    assert mounts_under(engine.state_dir) == []
    assert engine.timings["stop_s"] < 15


def _process_alive(pid: int) -> bool:
    # The pid was reaped by the context manager; a reused pid would not be running the engine binary.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return b"dockerd" in cmdline or b"podman" in cmdline
