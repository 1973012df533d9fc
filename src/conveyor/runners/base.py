"""What a runner is asked to do, what it answers, and what it leaves behind for a restarted platform.

The supervisor decides *what* runs; a `ScriptRunner` (a host process, a container...) decides
*how*. Backends decide *where*: each gets its runner from its constructor.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel

from conveyor.model.service import Service


@dataclass(frozen=True)
class ScriptInvocation:
    """What a runner needs to run a service's script once."""

    job_id: str
    service: Service
    script_path: Path
    env: dict[str, str]
    work_dir: Path
    """Holds input/, output/ and the script; containers mount it at the same path."""
    timeout_s: float
    log_path: Path
    """The script's stdout and stderr are appended here."""


@dataclass(frozen=True)
class ScriptResult:
    exit_code: int | None
    timed_out: bool = False


class RunRecord(BaseModel):
    """What a runner started, written beside the job, so a platform restarted after a crash can
    find the script still running (or its exit code) instead of running it a second time."""

    kind: Literal["process", "container", "exec"]
    started_at: float
    """time.time() when the script started: the timeout counts from there."""
    pid: int | None = None
    container_id: str | None = None
    exec_id: str | None = None
    """A job run in a warm container: the exec that runs its script."""
    exit_file: str | None = None
    """Where a host process's wrapper writes the script's exit code."""

    FILE: ClassVar[str] = "run.json"

    def save(self, work_dir: Path) -> None:
        temporary = work_dir / (self.FILE + ".tmp")
        temporary.write_text(self.model_dump_json())
        temporary.replace(work_dir / self.FILE)  # never a half-written record

    @classmethod
    def load(cls, work_dir: Path) -> RunRecord | None:
        try:
            return cls.model_validate_json((work_dir / cls.FILE).read_text())
        except (OSError, ValueError):
            return None


class ScriptRunner(ABC):
    """Runs scripts one way (a host process, a container...), for whichever backend scheduled the job."""

    name: str
    """`process`, `container`, or the engine whose command line runs the script."""

    @abstractmethod
    def run(self, invocation: ScriptInvocation) -> ScriptResult:
        """Run the script to its end (or its timeout); raise BackendError when it cannot start.

        Once the script runs, a RunRecord is saved in the work dir.
        """

    @abstractmethod
    def reattach(self, invocation: ScriptInvocation, record: RunRecord) -> ScriptResult:
        """Wait for a script an earlier platform process started (the timeout counts from its start)."""

    @abstractmethod
    def cancel(self, job_id: str) -> bool:
        """Kill the job's script; False when this runner runs none for that job."""

    @abstractmethod
    def describe(self) -> str:
        """How scripts run, in the words the backend's description uses."""

    def problem(self) -> str | None:
        """Why no script can run now (the engine does not answer); None when they can."""
        return None

    def watch(self, *, down: Callable[[str], None], up: Callable[[str], None]) -> None:  # noqa: B027
        """`down(reason)` when what runs scripts stops answering, `up(reason)` when it is back.
        Runners with nothing that can go away never call them."""

    def close(self) -> None:  # noqa: B027 - most runners hold nothing
        """Let go of what the runner holds (an engine's connection, warm containers)."""


class WarmRunner(ABC):
    """What a runner with warm containers adds: those containers outlive their jobs, so a platform
    that was killed leaves some behind, and the next one removes them once it has adopted its jobs."""

    @abstractmethod
    def sweep_warm(self, keep: set[str]) -> None:
        """After recovery: warm containers an earlier run left go, but `keep` (those of adopted scripts)."""
