"""A real single-node Kubernetes for tests: scripts/kubernetes-up.sh in a private directory, always stopped after.

    with run_kubernetes(tmp_path / "k8s") as cluster:
        ...  # cluster.kubeconfig; Jobs on localhost/busybox:local with imagePullPolicy Never

The binaries come from scripts/build-kubernetes.sh into CACHE (built here when missing: 11 min cold,
0.01 s when its stamp matches). kubernetes-up.sh imports localhost/busybox:local and the pause image.
The daemons fork away from the test process: if pytest itself is killed, `scripts/kubernetes-down.sh
DIR` stops them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
CACHE = Path(os.environ.get("CONVEYOR_KUBE_CACHE", "/var/cache/conveyor/kubernetes"))
BUSYBOX = "localhost/busybox:local"


class KubernetesError(RuntimeError):
    """The cluster could not be built or started; the message carries the script's output."""


@dataclass
class Kubernetes:
    directory: Path

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    def settings(self, **overrides: object) -> dict[str, object]:
        """`[kubernetes]` settings for a test platform: loopback pods, local images only."""
        return {
            "enabled": True,
            "kubeconfig": str(self.kubeconfig),
            "namespace": "default",
            "host_network": True,
            "image_pull_policy": "Never",
            "stager_image": BUSYBOX,
            **overrides,
        }

    def restart_apiserver(self, down_s: float = 0.0) -> None:
        """SIGKILL kube-apiserver, wait `down_s`, start it again with the same command line; wait until ready."""
        pid_file = self.directory / "run" / "kube-apiserver.pid"
        pid = int(pid_file.read_text())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(down_s)
        with (self.directory / "log" / "kube-apiserver.log").open("ab") as log:
            started = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        pid_file.write_text(f"{started.pid}\n")
        from kubernetes import client, config

        version = client.VersionApi(config.new_client_from_config(str(self.kubeconfig)))
        deadline = time.monotonic() + 60
        while True:
            try:
                version.get_code(_request_timeout=2)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise KubernetesError("kube-apiserver did not come back within 60 s") from None
                time.sleep(0.2)


def _alive(pid: int) -> bool:
    """Running: not gone and not a zombie (a killed daemon stays one until the session's reaper takes it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def build_binaries() -> None:
    """scripts/build-kubernetes.sh into CACHE: nothing to do when its stamp matches."""
    built = subprocess.run(
        ["nice", "-n", "10", "bash", str(SCRIPTS / "build-kubernetes.sh"), str(CACHE)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if built.returncode != 0:
        raise KubernetesError(f"build-kubernetes.sh failed:\n{built.stdout}\n{built.stderr}")


@contextlib.contextmanager
def run_kubernetes(directory: Path) -> Iterator[Kubernetes]:
    if os.geteuid() != 0:
        raise KubernetesError("the test cluster's kubelet and containerd run as root: run the tests as root")
    build_binaries()
    try:
        started = subprocess.run(
            ["bash", str(SCRIPTS / "kubernetes-up.sh"), str(directory)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, "KUBE_BIN": str(CACHE / "bin")},
        )
        if started.returncode != 0:
            raise KubernetesError(f"kubernetes-up.sh failed:\n{started.stdout}\n{started.stderr}")
        yield Kubernetes(directory)
    finally:
        subprocess.run(
            ["bash", str(SCRIPTS / "kubernetes-down.sh"), str(directory)], capture_output=True, timeout=120, check=False
        )
