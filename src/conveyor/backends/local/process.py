"""Run a script as a host process: no image, no engine, works on any machine.

The process runs in the job's private work directory with a small, explicit environment (not
Conveyor's own, which may hold credentials), in its own session so that a timeout or a cancel
kills everything it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from conveyor.supervisor.run import ScriptInvocation, ScriptResult

_PASSED_THROUGH = ("LANG", "LC_ALL", "TZ", "TERM")


def host_environment(work_dir: Path) -> dict[str, str]:
    """PATH leads with this Python's bin directory, so scripts find the tools installed beside Conveyor."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")])
    env = {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
    env.update({"PATH": path, "HOME": str(work_dir), "TMPDIR": str(work_dir)})
    return env


class ProcessRunner:
    name = "process"

    def __init__(self) -> None:
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return "host processes (runtime: process; images are ignored)"

    def run(self, invocation: ScriptInvocation) -> ScriptResult:
        env = host_environment(invocation.work_dir) | invocation.env
        with invocation.log_path.open("ab") as log:
            process = subprocess.Popen(
                ["/bin/sh", str(invocation.script_path)],
                cwd=invocation.work_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with self._lock:
                self._running[invocation.job_id] = process
            # A timer kills the session at the deadline while this thread blocks in waitpid:
            # Popen.wait(timeout) would instead poll with sleeps, adding milliseconds to every job.
            expired = threading.Event()
            deadline = threading.Timer(invocation.timeout_s, _expire, args=(process, expired))
            deadline.daemon = True
            deadline.start()
            try:
                code = process.wait()
            finally:
                deadline.cancel()
                with self._lock:
                    self._running.pop(invocation.job_id, None)
            _kill_session(process)  # background children the script left behind die with it
        if expired.is_set():
            return ScriptResult(exit_code=None, timed_out=True)
        return ScriptResult(exit_code=128 - code if code < 0 else code)

    def cancel(self, job_id: str) -> bool:
        with self._lock:
            process = self._running.get(job_id)
        if process is None:
            return False
        _kill_session(process)
        return True


def _expire(process: subprocess.Popen[bytes], expired: threading.Event) -> None:
    expired.set()
    _kill_session(process)


def _kill_session(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
