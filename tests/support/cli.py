"""Running the `conveyor` command line as a user does: `conveyor up` and commands as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.platform.platform import Platform

CONVEYOR = [sys.executable, "-m", "conveyor"]


def cli_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without CONVEYOR_* settings, and a data dir under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return env | {
        "CONVEYOR_DATA_DIR": str(tmp_path / "data"),
        "CONVEYOR_CONFIG": str(tmp_path / "absent.toml"),
        "COLUMNS": "200",
        **extra,
    }


@dataclass
class Cli:
    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*CONVEYOR, *args], env=self.env, cwd=self.cwd, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"conveyor {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json").stdout)


def cli_for(platform: Platform, cwd: Path) -> Cli:
    """The CLI as a user runs it, pointed at an embedded platform of the test through the environment."""
    env = cli_environment(
        cwd,
        CONVEYOR_URL=platform.api_url,
        CONVEYOR_USER=platform.credentials.admin_user,
        CONVEYOR_PASSWORD=platform.credentials.admin_password,
    )
    return Cli(env, cwd)


def start_up(env: dict[str, str], cwd: Path, extra: list[str] | None = None) -> subprocess.Popen[str]:
    """`conveyor up` on free ports with `extra` options; returns once it wrote its platform file."""
    log = (cwd / "up.log").open("a")
    up = subprocess.Popen(
        [*CONVEYOR, "up", "--port", "0", "--s3-port", "0", "--runtime", "process", *(extra or [])],
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    extra = extra or []
    data_dir = extra[extra.index("--data-dir") + 1] if "--data-dir" in extra else env["CONVEYOR_DATA_DIR"]
    platform_file = Path(data_dir) / "platform.json"
    deadline = time.monotonic() + 60
    while not _written_by(platform_file, up.pid):
        if up.poll() is not None or time.monotonic() > deadline:
            up.kill()
            raise AssertionError(f"conveyor up did not start:\n{(cwd / 'up.log').read_text()}")
        time.sleep(0.1)
    return up


def _written_by(platform_file: Path, pid: int) -> bool:
    try:
        return json.loads(platform_file.read_text())["pid"] == pid
    except (OSError, ValueError, KeyError):
        return False


def stop_up(up: subprocess.Popen[str], cwd: Path) -> None:
    up.send_signal(signal.SIGINT)
    try:
        up.wait(60)
    except subprocess.TimeoutExpired:
        up.kill()
        raise
    assert up.returncode == 0, (cwd / "up.log").read_text()
    assert "stopped" in (cwd / "up.log").read_text()
