"""A real single-node Slurm for tests: scripts/slurm-up.sh in a private directory, always stopped after.

    with run_slurm(tmp_path / "slurm") as slurm:
        ...  # SLURM_CONF is set for the duration, so sbatch/squeue and the backend reach it

The daemons fork away from the test process: if pytest itself is killed, `scripts/slurm-down.sh
DIR` stops them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
INSTALL_HINT = "run scripts/install-system-deps.sh as root to install Slurm (slurm-wlm, munge)"


class SlurmError(RuntimeError):
    """Slurm is missing or did not start; the message carries the script's output."""


@dataclass
class Slurm:
    directory: Path

    @property
    def conf(self) -> Path:
        return self.directory / "slurm.conf"

    def run(self, *argv: str, check: bool = True) -> str:
        answer = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if check and answer.returncode != 0:
            raise SlurmError(f"{' '.join(argv)}: {answer.stderr.strip()}")
        return answer.stdout

    def queue(self) -> list[tuple[str, str, str]]:
        """(job id, name, state) of every job squeue still lists."""
        out = self.run("squeue", "--me", "--array", "--noheader", "--states=all", "--format=%i|%j|%T")
        return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]  # type: ignore[misc]

    def active(self, prefix: str = "conveyor.") -> list[tuple[str, str, str]]:
        return [
            job
            for job in self.queue()
            if job[1].startswith(prefix) and job[2] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING")
        ]

    def restart_controller(self, down_s: float = 0.0) -> None:
        """Stop slurmctld (SIGTERM, it saves its state), wait `down_s`, start it again with that state."""
        pid = int((self.directory / "slurmctld.pid").read_text())
        os.kill(pid, 15)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(down_s)
        subprocess.run(["/usr/sbin/slurmctld", "-f", str(self.conf)], check=True, timeout=60)
        deadline = time.monotonic() + 30
        while subprocess.run(["sinfo", "-h"], capture_output=True, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SlurmError("slurmctld did not come back within 30 s")
            time.sleep(0.2)


@contextlib.contextmanager
def run_slurm(directory: Path, cpus: int = 8) -> Iterator[Slurm]:
    """`cpus` above the core count oversubscribes the node: the tests' jobs mostly wait."""
    if shutil.which("slurmctld", path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
        raise SlurmError(f"Slurm is not installed: {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise SlurmError("the test cluster runs its daemons as root (SlurmUser=root): run the tests as root")
    started = subprocess.run(
        ["bash", str(SCRIPTS / "slurm-up.sh"), str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SLURM_CPUS": str(cpus)},
    )
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(directory / "slurm.conf")
    try:
        if started.returncode != 0:
            raise SlurmError(f"slurm-up.sh failed:\n{started.stdout}{started.stderr}")
        yield Slurm(directory)
    finally:
        subprocess.run(["bash", str(SCRIPTS / "slurm-down.sh"), str(directory)], timeout=120, check=False)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
