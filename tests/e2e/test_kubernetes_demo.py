"""`conveyor demo --backend kubernetes` as a user runs it, against the session's cluster (a real kubelet on
containerd that can pull nothing): the demo's image goes from this machine's engine into the node's
containerd (--import-into), both services run as Jobs, and every output is checked byte for byte against
the same scripts run in the same image by the engine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conveyor.model.event import ObjectRef
from tests.conftest import PlatformFactory
from tests.support.demo_image import EXAMPLE, IMAGE, demo_image_archive
from tests.support.engines import Engine
from tests.support.kubernetes import Kubernetes

pytestmark = pytest.mark.e2e

SECONDS = 4
REFERENCE = """\
set -eu
mkdir -p "$W/ref/frames" "$W/ref/results"
INPUT_FILE_PATH="$W/in/$VIDEO" TMP_OUTPUT_DIR="$W/ref/frames" /bin/sh "$SCRIPTS/extract-frames.sh"
for frame in "$W"/ref/frames/*.jpg; do
    INPUT_FILE_PATH="$frame" TMP_OUTPUT_DIR="$W/ref/results" /bin/sh "$SCRIPTS/detect-faces.sh"
done
"""


def _environment(tmp_path: Path, cluster: Kubernetes, engine: Engine) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return env | {
        "CONVEYOR_CONFIG": str(tmp_path / "absent.toml"),
        "COLUMNS": "200",
        "DOCKER_HOST": engine.url,  # where the image was built: what --import-into takes it from
        "CONVEYOR_KUBERNETES__KUBECONFIG": str(cluster.kubeconfig),
        "CONVEYOR_KUBERNETES__HOST_NETWORK": "true",  # the pods reach the demo's loopback API
        "CONVEYOR_KUBERNETES__IMAGE_PULL_POLICY": "Never",
    }


def _demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "demo", "--backend", "kubernetes", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_the_demo_runs_both_services_on_kubernetes_and_every_output_is_byte_exact(
    kubernetes: Kubernetes, podman: Engine, make_platform: PlatformFactory, tmp_path: Path
) -> None:
    env = _environment(tmp_path, kubernetes, podman)
    socket = str(kubernetes.directory / "containerd" / "containerd.sock")

    refused = _demo(env, "--seconds", "1")  # the node does not have the image yet, and cannot pull it
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"no node of the cluster has {IMAGE}" in refused.stderr and "--import-into SOCKET" in refused.stderr
    assert "Conveyor up" not in refused.stderr, "it stops before starting anything"

    started = time.monotonic()
    engine = podman.client(timeout=900)
    try:
        with demo_image_archive().open("rb") as archive:  # the user's build-image.sh, cached per machine
            engine.images.load(archive)
        loaded_s = time.monotonic() - started

        demo_dir = tmp_path / "demo"
        started = time.monotonic()
        done = _demo(env, "--import-into", socket, "--seconds", str(SECONDS), "--demo-dir", str(demo_dir))
        demo_s = time.monotonic() - started

        assert done.returncode == 0, done.stdout + done.stderr
        assert f"imported {IMAGE} into the containerd at {socket}" in done.stderr
        assert "jobs run as kubernetes:" in done.stderr
        assert f"{SECONDS} frames" in done.stdout and "all expected outputs exist" in done.stdout
        for service in ("video-frames", "detect-faces"):
            logs = list((demo_dir / "logs" / service).glob("*.log"))
            assert len(logs) == (1 if service == "video-frames" else SECONDS)
            assert all("ran as Kubernetes Job conveyor-" in log.read_text() for log in logs), service

        # What the pods produced, out of the demo's store ...
        platform = make_platform(data_dir=demo_dir)
        store = platform.storage.default
        work = tmp_path / "work"
        produced: dict[str, dict[str, bytes]] = {}
        for folder in ("in", "frames", "results"):
            (work / folder).mkdir(parents=True)
            for info in store.list("video", f"{folder}/"):
                if info.ref.key.endswith("/"):  # the folder's own marker
                    continue
                store.download(ObjectRef(bucket="video", key=info.ref.key), work / folder / Path(info.ref.key).name)
            produced[folder] = _files(work / folder)
        [video] = produced["in"]

        # ... byte for byte what the same scripts write in the same image, run by the engine here.
        started = time.monotonic()
        engine.containers.run(
            IMAGE,
            ["/bin/sh", "-c", REFERENCE],
            environment={"W": str(work), "VIDEO": video, "SCRIPTS": str(EXAMPLE)},
            volumes={str(work): {"bind": str(work), "mode": "rw"}, str(EXAMPLE): {"bind": str(EXAMPLE), "mode": "ro"}},
            network_mode="none",
            remove=True,
        )
        reference_s = time.monotonic() - started
    finally:
        engine.close()

    assert len(produced["frames"]) == SECONDS
    assert len(produced["results"]) == 2 * SECONDS
    assert produced["frames"] == _files(work / "ref" / "frames")
    assert produced["results"] == _files(work / "ref" / "results")
    print(f"image load {loaded_s:.1f} s, demo {demo_s:.1f} s, reference run {reference_s:.1f} s")
