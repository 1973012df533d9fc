"""Run a script as a host process: no image, no engine, works on any machine.

The process runs in the job's private work directory with a small, explicit environment (not
Conveyor's own, which may hold credentials), in its own session so that a timeout or a cancel
kills everything it started. A thin `sh` wrapper writes the script's exit code to a file, so a
platform restarted after a crash can still learn how a script it did not see end went.

The engine-CLI runners (engine_cli.py) share all of this: they run an engine's command line where
ProcessRunner runs `sh SCRIPT`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from abc import abstractmethod
from pathlib import Path

from conveyor.errors import BackendError
from conveyor.host_processes import command_line_mentions, is_alive, kill_group
from conveyor.runners.base import RunRecord, ScriptInvocation, ScriptResult, ScriptRunner
from conveyor.runners.deadlines import DEADLINES

_PASSED_THROUGH = ("LANG", "LC_ALL", "TZ", "TERM")
EXIT_FILE = "exit-code"
# $1: where the exit code goes, then the command that runs the script. Exits with the script's code.
_WRAPPER = 'exit_file=$1; shift; "$@"; code=$?; echo "$code" > "$exit_file"; exit "$code"'
_REATTACH_POLL_S = 0.2


def host_environment(work_dir: Path, passed_through: tuple[str, ...] = ()) -> dict[str, str]:
    """PATH leads with this Python's bin directory, so scripts find the tools installed beside Conveyor."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")])
    env = {name: os.environ[name] for name in (*_PASSED_THROUGH, *passed_through) if name in os.environ}
    env.update({"PATH": path, "HOME": str(work_dir), "TMPDIR": str(work_dir)})
    return env


class HostCommandRunner(ScriptRunner):
    """Runs a command line as a host process in its own session, behind the exit-code wrapper.

    Subclasses say which command runs the script (`command`) and what else stops with it (`stop`):
    ProcessRunner runs `sh SCRIPT`, the engine-CLI runners a container engine's `run` or `exec`.
    """

    passed_through: tuple[str, ...] = ()
    """More of Conveyor's environment variables the command needs (an engine's configuration)."""

    def __init__(self) -> None:
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    @abstractmethod
    def command(self, invocation: ScriptInvocation) -> list[str]:
        """The command that runs the script; its last word is the script's path."""

    def stop(self, job_id: str, pid: int) -> None:
        """Kill what runs the job's script: the process group, and whatever else a subclass started."""
        kill_group(pid)

    def run(self, invocation: ScriptInvocation) -> ScriptResult:
        env = host_environment(invocation.work_dir, self.passed_through) | invocation.env
        exit_file = invocation.work_dir / EXIT_FILE
        with invocation.log_path.open("ab") as log:
            process = subprocess.Popen(
                ["/bin/sh", "-c", _WRAPPER, "conveyor-job", str(exit_file), *self.command(invocation)],
                cwd=invocation.work_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        RunRecord(kind="process", started_at=time.time(), pid=process.pid, exit_file=str(exit_file)).save(
            invocation.work_dir
        )
        with self._lock:
            self._running[invocation.job_id] = process.pid
        # The deadline watcher kills the session at the timeout while this thread blocks in waitpid:
        # Popen.wait(timeout) would instead poll with sleeps, adding milliseconds to every job.
        expired = threading.Event()
        deadline = DEADLINES.after(invocation.timeout_s, lambda: self._expire(invocation.job_id, process.pid, expired))
        try:
            code = process.wait()
        finally:
            deadline.cancel()
            with self._lock:
                self._running.pop(invocation.job_id, None)
        self.stop(invocation.job_id, process.pid)  # background children the script left behind die with it
        if expired.is_set():
            return ScriptResult(exit_code=None, timed_out=True)
        return ScriptResult(exit_code=128 - code if code < 0 else code)

    def reattach(self, invocation: ScriptInvocation, record: RunRecord) -> ScriptResult:
        """The script is not our child any more: watch its pid, then read the exit code it left."""
        pid = record.pid or 0
        with self._lock:
            self._running[invocation.job_id] = pid
        try:
            deadline = time.monotonic() + invocation.timeout_s
            while is_alive(pid) and command_line_mentions(pid, str(invocation.script_path)):
                if time.monotonic() > deadline:
                    kill_group(pid)
                    return ScriptResult(exit_code=None, timed_out=True)
                time.sleep(_REATTACH_POLL_S)
        finally:
            with self._lock:
                self._running.pop(invocation.job_id, None)
        kill_group(pid)
        try:
            return ScriptResult(exit_code=int(Path(record.exit_file or "").read_text().strip()))
        except (OSError, ValueError):
            raise BackendError(
                "the script ended while the platform was down and left no exit code (it was killed); it runs again"
            ) from None

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            pid = self._running.get(job_id)
        if pid is None:
            return False
        self.stop(job_id, pid)
        return True

    def _expire(self, job_id: str, pid: int, expired: threading.Event) -> None:
        expired.set()
        self.stop(job_id, pid)


class ProcessRunner(HostCommandRunner):
    """Runs `sh SCRIPT`: the script itself, with no image and no engine."""

    name = "process"

    def describe(self) -> str:
        return "host processes (runtime: process; images are ignored)"

    def command(self, invocation: ScriptInvocation) -> list[str]:
        return ["/bin/sh", str(invocation.script_path)]
