"""A platform killed while its scripts run: the next one finds each script and learns how it ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conveyor.errors import BackendError
from conveyor.model.service import Service
from conveyor.runners.base import RunRecord, ScriptInvocation
from conveyor.runners.process import ProcessRunner

# A stand-in for the platform: runs one script through ProcessRunner, then is killed with SIGKILL.
DOOMED_PLATFORM = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from conveyor.runners.process import ProcessRunner
    from conveyor.model.service import Service
    from conveyor.runners.base import ScriptInvocation
    work = Path(sys.argv[1])
    script = work / "script.sh"
    ProcessRunner().run(ScriptInvocation(job_id="job-1", service=Service(name="svc", image="-", script="-"),
        script_path=script, env={}, work_dir=work, timeout_s=60, log_path=work.parent / "job.log"))
    """
)


def start_and_kill_platform(work: Path, script: str) -> RunRecord:
    work.mkdir(parents=True)
    (work / "script.sh").write_text(script)
    platform = subprocess.Popen([sys.executable, "-c", DOOMED_PLATFORM, str(work)])
    deadline = time.monotonic() + 20
    while (record := RunRecord.load(work)) is None:
        assert time.monotonic() < deadline, "the script never started"
        time.sleep(0.02)
    os.kill(platform.pid, signal.SIGKILL)
    platform.wait()
    return record


def invocation(work: Path, timeout_s: float = 30) -> ScriptInvocation:
    return ScriptInvocation(
        job_id="job-1",
        service=Service(name="svc", image="-", script="-"),
        script_path=work / "script.sh",
        env={},
        work_dir=work,
        timeout_s=timeout_s,
        log_path=work.parent / "job.log",
    )


def test_a_script_still_running_is_waited_for_and_its_exit_code_read(tmp_path: Path) -> None:
    work = tmp_path / "work"
    record = start_and_kill_platform(work, "sleep 1; echo survived; exit 5")

    result = ProcessRunner().reattach(invocation(work), record)

    assert (result.exit_code, result.timed_out) == (5, False)
    assert "survived" in (tmp_path / "job.log").read_text()


def test_a_script_that_ended_while_nobody_watched_is_found_finished(tmp_path: Path) -> None:
    work = tmp_path / "work"
    record = start_and_kill_platform(work, "echo quick")
    time.sleep(0.5)

    assert ProcessRunner().reattach(invocation(work), record).exit_code == 0


def test_a_script_killed_with_the_platform_leaves_no_exit_code_and_must_run_again(tmp_path: Path) -> None:
    work = tmp_path / "work"
    record = start_and_kill_platform(work, "sleep 30")
    os.killpg(record.pid, signal.SIGKILL)
    time.sleep(0.3)

    with pytest.raises(BackendError, match="no exit code"):
        ProcessRunner().reattach(invocation(work), record)


def test_the_timeout_still_counts_from_the_first_start(tmp_path: Path) -> None:
    work = tmp_path / "work"
    record = start_and_kill_platform(work, "sleep 60")
    started = time.monotonic()

    result = ProcessRunner().reattach(invocation(work, timeout_s=1), record)

    assert result.timed_out and time.monotonic() - started < 5
