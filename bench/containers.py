"""Container engines for the benchmark, all private to one run and removed afterwards.

Conveyor's container rows drive dockerd or podman's Docker-compatible API, started and cleaned by
tests/support/engines.py exactly as the tests do. The `podman run` baseline uses the podman command
line on a store of its own, with the flags of ../shared/reference/machine-recipes.md §1: it is the
reference DESIGN.md's warm-container target is stated against (one `podman run` per file).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.harness import ToolMissing
from bench.workloads import LocalJobs
from tests.support.engines import (
    BUSYBOX_TAG,
    INSTALL_HINT,
    EngineName,
    build_busybox_image,
    run_dockerd,
    run_podman_service,
)

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# No default ulimits (this VM lacks CAP_SYS_RESOURCE); locks and events in the private store.
PODMAN_CONF = '[containers]\ndefault_ulimits = []\n\n[engine]\nlock_type = "file"\nevents_logger = "file"\n'
CONTAINERFILE = (
    'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\nENV PATH=/bin\n'
)


def require_engine(name: EngineName) -> None:
    """ToolMissing unless the engine's binary and a static busybox (for the image) are installed."""
    binary = "dockerd" if name == "dockerd" else "podman"
    if shutil.which(binary, path=SYSTEM_PATH) is None or not Path("/bin/busybox").is_file():
        raise ToolMissing(f"`{binary}` or /bin/busybox not installed: {INSTALL_HINT}")


@contextlib.contextmanager
def running_engine(name: EngineName, scratch: Path) -> Iterator[str]:
    """A private dockerd or podman API service with the busybox image built; yields its API URL."""
    require_engine(name)
    start = run_dockerd if name == "dockerd" else run_podman_service
    with start(scratch / name) as engine:
        build_busybox_image(engine)
        yield engine.url


def podman_run_per_file(jobs: LocalJobs, workers: int) -> float:
    """`podman run --rm` once per file, `workers` at a time: containers without any reuse."""
    require_engine("podman")
    with _podman_store() as podman:
        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda source: _podman_run(podman, str(source), jobs), jobs.inputs))
        return time.perf_counter() - started


@dataclass(frozen=True)
class PodmanCli:
    """The podman command line on a store of its own under `root`."""

    root: Path

    def run(self, *args: str, check: bool = True) -> None:
        flags = [
            *("--runtime", "runc", "--cgroup-manager", "cgroupfs", "--storage-driver", "vfs"),
            *("--root", str(self.root / "root"), "--runroot", str(self.root / "run")),
            *("--tmpdir", str(self.root / "tmp"), "--volumepath", str(self.root / "volumes")),
            *("--network-config-dir", str(self.root / "networks"), "--events-backend", "file"),
        ]
        env = {**os.environ, "CONTAINERS_CONF": str(self.root / "containers.conf")}
        binary = shutil.which("podman", path=SYSTEM_PATH) or "podman"
        subprocess.run([binary, *flags, *args], check=check, env=env, stdout=subprocess.DEVNULL)


def _podman_run(podman: PodmanCli, source: str, jobs: LocalJobs) -> None:
    work = str(jobs.script.parent)
    contract = ("-e", f"INPUT_FILE_PATH={source}", "-e", f"TMP_OUTPUT_DIR={jobs.output}")
    podman.run(
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "host",
        "-v",
        f"{work}:{work}",
        *contract,
        BUSYBOX_TAG,
        "/bin/sh",
        str(jobs.script),
    )


@contextlib.contextmanager
def _podman_store() -> Iterator[PodmanCli]:
    """A fresh store holding the busybox image; reset and removed afterwards."""
    # Short path: podman refuses a --runroot longer than 50 characters.
    podman = PodmanCli(Path(tempfile.mkdtemp(prefix="bench-pd-", dir="/tmp")))
    (podman.root / "containers.conf").write_text(PODMAN_CONF)
    try:
        context = podman.root / "context"
        context.mkdir()
        shutil.copy2("/bin/busybox", context / "busybox")
        (context / "Containerfile").write_text(CONTAINERFILE)
        podman.run("build", "--quiet", "--network", "none", "-t", BUSYBOX_TAG, str(context))
        yield podman
    finally:
        podman.run("system", "reset", "--force", check=False)
        shutil.rmtree(podman.root, ignore_errors=True)
