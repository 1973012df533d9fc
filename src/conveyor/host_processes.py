"""Processes of this host that Conveyor did not start in this run: whether they live, how to end them.

A platform that was killed leaves its children running (SeaweedFS, job scripts, each in its own
session); the next start finds them by pid and either waits for them or stops them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def is_alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting to be reaped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def command_line_mentions(pid: int, text: str) -> bool:
    """Whether the process's command line contains `text`: a pid alone may have been reused."""
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def kill_group(pid: int) -> None:
    """SIGKILL to the process group (session) led by `pid`: the process and everything it started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def terminate(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `grace_s`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if is_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
