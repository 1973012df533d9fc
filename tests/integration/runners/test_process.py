"""Scripts as host processes: exit codes, timeouts, cancellation and a clean environment."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from conveyor.model.service import Service
from conveyor.runners.base import ScriptInvocation
from conveyor.runners.process import ProcessRunner


def invocation(
    tmp_path: Path, script: str, timeout_s: float = 30, env: dict[str, str] | None = None
) -> ScriptInvocation:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    script_path = work / "script.sh"
    script_path.write_text(script)
    return ScriptInvocation(
        job_id="job-1",
        service=Service(name="svc", image="ignored", script=script),
        script_path=script_path,
        env=env or {},
        work_dir=work,
        timeout_s=timeout_s,
        log_path=tmp_path / "job.log",
    )


def test_exit_code_and_output_are_kept(tmp_path: Path) -> None:
    result = ProcessRunner().run(invocation(tmp_path, "echo out; echo err >&2; exit 4"))
    assert (result.exit_code, result.timed_out) == (4, False)
    assert (tmp_path / "job.log").read_text().splitlines() == ["out", "err"]


def test_the_script_runs_in_its_work_dir_with_only_the_environment_it_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "conveyors-own-secret")
    inv = invocation(tmp_path, 'pwd; echo "key=$AWS_SECRET_ACCESS_KEY"; echo "mine=$MINE"', env={"MINE": "yes"})

    assert ProcessRunner().run(inv).exit_code == 0

    lines = (tmp_path / "job.log").read_text().splitlines()
    assert lines == [str(inv.work_dir), "key=", "mine=yes"]


def test_a_timeout_kills_the_script_and_what_it_started(tmp_path: Path) -> None:
    marker = tmp_path / "child-still-alive"
    script = f"(sleep 3; touch {marker}) & sleep 60"
    started = time.monotonic()

    result = ProcessRunner().run(invocation(tmp_path, script, timeout_s=0.5))

    assert result.timed_out and time.monotonic() - started < 5
    time.sleep(3.5)
    assert not marker.exists(), "a background child outlived its timed-out job"


def test_background_children_die_when_the_script_ends(tmp_path: Path) -> None:
    marker = tmp_path / "orphan-ran"
    result = ProcessRunner().run(invocation(tmp_path, f"(sleep 2; touch {marker}) & echo left-behind"))
    assert result.exit_code == 0
    time.sleep(2.5)
    assert not marker.exists()


def test_cancel_stops_a_running_script(tmp_path: Path) -> None:
    runner = ProcessRunner()
    results = []
    worker = threading.Thread(target=lambda: results.append(runner.run(invocation(tmp_path, "sleep 60"))))
    worker.start()
    deadline = time.monotonic() + 5
    while not runner.cancel("job-1"):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)
    worker.join(5)
    assert results and results[0].exit_code == 128 + 9
