"""Slurm's command-line tools, called the way a cluster user would: sbatch, squeue, scontrol, scancel.

One `squeue` call lists every job of this user, whatever their number (no per-job polling), and
an answer that cannot be trusted (the controller is down or restarting) raises SlurmUnavailable
instead of looking like an empty queue.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from conveyor.errors import BackendError, BackendUnavailable

COMMAND_TIMEOUT_S = 60.0
ACTIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING",
     "STAGE_OUT", "STOPPED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
)  # fmt: skip
"""States after which the job may still run; any other is its end."""


class SlurmUnavailable(BackendUnavailable):
    """The controller did not answer: nothing can be concluded about any job."""


@dataclass(frozen=True)
class QueueEntry:
    """One line of squeue: a job, or one task of a job array."""

    native_id: str
    """`123`, or `123_4` for task 4 of array 123."""
    name: str
    state: str
    reason: str

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class SlurmCommands:
    def __init__(self, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    @staticmethod
    def missing() -> list[str]:
        return [tool for tool in ("sbatch", "squeue", "scontrol", "scancel") if shutil.which(tool) is None]

    def _run(self, argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SlurmUnavailable(f"{argv[0]} did not answer: {error}") from error

    def version(self) -> str:
        answer = self._run(["sbatch", "--version"])
        return answer.stdout.strip() or answer.stderr.strip()

    def submit(self, options: list[str], script: Path) -> str:
        """sbatch; returns the job id. A refusal (bad partition, over a limit) is a BackendError."""
        answer = self._run(["sbatch", "--parsable", *options, str(script)])
        if answer.returncode != 0:
            message = answer.stderr.strip() or answer.stdout.strip()
            if _controller_down(message):
                raise SlurmUnavailable(f"sbatch: {message}")
            raise BackendError(f"sbatch refused the job: {message}")
        return answer.stdout.strip().split(";")[0]

    def queue(self) -> list[QueueEntry]:
        """Every job of this user that Slurm still remembers, array tasks one per line."""
        answer = self._run(["squeue", "--me", "--array", "--noheader", "--states=all", "--format=%i|%j|%T|%r"])
        if answer.returncode != 0:
            raise SlurmUnavailable(f"squeue: {answer.stderr.strip() or answer.stdout.strip()}")
        return [entry for line in answer.stdout.splitlines() if (entry := parse_queue_line(line)) is not None]

    def forgotten(self, native_id: str) -> bool:
        """True only when the controller answers and says it does not know the job."""
        answer = self._run(["scontrol", "show", "job", native_id])
        if answer.returncode == 0:
            return False
        message = answer.stderr.strip()
        if "Invalid job id" in message:
            return True
        raise SlurmUnavailable(f"scontrol: {message}")

    def cancel(self, native_ids: list[str]) -> bool:
        if not native_ids:
            return True
        return self._run(["scancel", *native_ids]).returncode == 0


def parse_queue_line(line: str) -> QueueEntry | None:
    parts = line.strip().split("|", 3)
    if len(parts) != 4 or not parts[0]:
        return None
    native_id, name, state, reason = parts
    # CANCELLED+ / COMPLETING etc.; scontrol and squeue add '+' or suffixes on some states.
    return QueueEntry(native_id=native_id, name=name, state=state.rstrip("+").split(" ")[0], reason=reason)


def _controller_down(message: str) -> bool:
    lowered = message.lower()
    return "unable to contact slurm controller" in lowered or "connection refused" in lowered or "socket" in lowered
