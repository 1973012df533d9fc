"""Stop signals at any moment of `conveyor up`'s life leave no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conveyor.host_processes import is_alive
from tests.support.cli import CONVEYOR, cli_environment

pytestmark = pytest.mark.e2e


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of the live processes that name `text` (the data dir: weed's -dir flag does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in command and int(entry.name) != os.getpid():
                found.append(f"{entry.name}: {command[:200]}")
    return found


def _launch(tmp_path: Path) -> subprocess.Popen[str]:
    log = (tmp_path / "up.log").open("a")
    return subprocess.Popen(
        [*CONVEYOR, "up", "--port", "0", "--s3-port", "0", "--runtime", "process"],
        env=cli_environment(tmp_path),
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(path: Path, up: subprocess.Popen[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert up.poll() is None, f"conveyor up exited before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.005)


@pytest.mark.parametrize("moment", ["store starting", "running", "stopping"])
def test_a_stop_signal_at_any_moment_leaves_no_process_behind(tmp_path: Path, moment: str) -> None:
    data = tmp_path / "data"
    up = _launch(tmp_path)
    if moment == "store starting":
        _wait_for(data / "seaweedfs" / "weed.pid", up)  # weed launched, not yet ready
        up.send_signal(signal.SIGTERM)
    elif moment == "running":
        _wait_for(data / "platform.json", up)
        up.send_signal(signal.SIGTERM)
    else:
        _wait_for(data / "platform.json", up)
        up.send_signal(signal.SIGINT)
        time.sleep(0.05)
        up.send_signal(signal.SIGTERM)  # impatient: a second signal while it stops
        up.send_signal(signal.SIGINT)
    try:
        up.wait(60)
    except subprocess.TimeoutExpired:
        up.kill()
        raise
    deadline = time.monotonic() + 5
    while _processes_mentioning(str(data)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(str(data)) == [], (tmp_path / "up.log").read_text()
    assert not is_alive(up.pid)
