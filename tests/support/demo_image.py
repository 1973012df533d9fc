"""The video demo's image (examples/video-process/build-image.sh) as a docker-archive tar, built once per machine.

    tar = demo_image_archive()   # CACHE/conveyor-video-demo-<digest>.tar; built when missing (≈5-10 min)

The build runs build-image.sh with podman on a private store (never the host's /var/lib/containers, which
others use), saves the image with `podman save --format docker-archive` and removes the store. The file
name carries a digest of build-image.sh and the Containerfile, so a change to either builds it again.
Tests load the tar into their own engine (`client.images.load`), as a user has the image in theirs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "video-process"
CACHE = Path(os.environ.get("CONVEYOR_DEMO_IMAGE_CACHE", "/var/cache/conveyor/video-demo"))
IMAGE = "localhost/conveyor-video-demo:1"

_CONF = '[containers]\ndefault_ulimits = []\n\n[engine]\nlock_type = "file"\nevents_logger = "file"\n'


class DemoImageError(RuntimeError):
    """The image could not be built; the message carries the build's output."""


def _digest() -> str:
    recipe = hashlib.sha256()
    for name in ("build-image.sh", "Containerfile"):
        recipe.update((EXAMPLE / name).read_bytes())
    return recipe.hexdigest()[:16]


def demo_image_archive() -> Path:
    """The cached archive of IMAGE, built first when missing (as root: debootstrap needs it)."""
    archive = CACHE / f"conveyor-video-demo-{_digest()}.tar"
    if archive.is_file():
        return archive
    if os.geteuid() != 0:
        raise DemoImageError("building the demo image needs root (debootstrap)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions at once build it once
        if not archive.is_file():
            _build(archive)
    return archive


def _build(archive: Path) -> None:
    # A short state dir: podman refuses a --runroot longer than 50 characters.
    state = Path(tempfile.mkdtemp(prefix="cvd-img-", dir="/tmp"))
    try:
        (state / "containers.conf").write_text(_CONF)
        options = [
            f"--root={CACHE / 'podman-root'}",
            f"--runroot={state / 'run'}",
            f"--tmpdir={state / 'tmp'}",
            f"--volumepath={state / 'volumes'}",
            f"--network-config-dir={state / 'networks'}",
            "--events-backend=file",
        ]
        env = {
            **os.environ,
            "PODMAN_OPTS": " ".join(options),
            "PODMAN_STORAGE_DRIVER": "vfs",
            "CONTAINERS_CONF": str(state / "containers.conf"),
        }
        steps = [
            ["nice", "-n", "10", "sh", str(EXAMPLE / "build-image.sh"), "--engine", "podman"],
            [
                "podman",
                "--runtime=runc",
                "--cgroup-manager=cgroupfs",
                "--storage-driver=vfs",
                *options,
                "save",
                "--format",
                "docker-archive",
                "-o",
                f"{archive}.part",
                IMAGE,
            ],
        ]
        for argv in steps:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=3600, check=False)
            if done.returncode != 0:
                raise DemoImageError(f"{' '.join(argv[:4])} ... failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        os.replace(f"{archive}.part", archive)
    finally:
        Path(f"{archive}.part").unlink(missing_ok=True)
        # vfs mounts nothing, so the store goes with rm -r (no `podman system reset`: it also clears shared state).
        shutil.rmtree(CACHE / "podman-root", ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    print(demo_image_archive())
