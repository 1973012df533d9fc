"""`conveyor demo`, the README's first command, as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_the_demo_runs_the_video_workflow_and_finds_every_output(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env |= {"CONVEYOR_CONFIG": str(tmp_path / "absent.toml"), "COLUMNS": "160"}

    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "demo", "--seconds", "4", "--demo-dir", str(tmp_path / "demo")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 frames" in done.stdout and "all expected outputs exist" in done.stdout
    summary = done.stdout
    assert "video-frames" in summary and "detect-faces" in summary
    assert f"are in video/frames/ and video/results/ of the store under {tmp_path / 'demo'}" in done.stderr
    results = tmp_path / "demo" / "logs" / "detect-faces"
    assert len(list(results.glob("*.log"))) == 4, "one job per frame"
