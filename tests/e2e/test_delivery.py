"""Delivery guarantees under failure: retries with backoff, dead letters and their replay, and a
storage outage in the middle of a workflow."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from conveyor.model.job import JobState
from conveyor.platform.platform import Platform
from tests.conftest import PlatformFactory
from tests.support.cli import cli_for
from tests.support.platform import keys_under, put_text, read_text, service, wait_for_jobs

pytestmark = pytest.mark.e2e

COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'


def flaky(counter: Path, failures: int) -> str:
    """A script that fails its first `failures` runs (counted in a file outside the job), then copies."""
    return (
        f'n=$(cat "{counter}" 2>/dev/null || echo 0); echo $((n + 1)) > "{counter}"; '
        f'if [ "$n" -lt {failures} ]; then echo "run $n fails"; exit 9; fi; {COPY}'
    )


def test_a_script_that_fails_twice_succeeds_on_its_third_attempt(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform()
    svc = service("flaky", flaky(tmp_path / "runs", 2), ["flaky/in"], ["flaky/out"], retry_script_failures=True)
    platform.catalog.apply([svc])
    put_text(platform, "flaky/in/a.txt", "third time lucky")

    job = wait_for_jobs(platform, "flaky", 1, timeout_s=60)[0]

    assert (job.state, job.attempt) == (JobState.SUCCEEDED, 3)
    assert read_text(platform, "flaky/out/a.txt", tmp_path) == "third time lucky"
    log = platform.jobs.read_log("flaky", job.job_id)
    assert [f"(attempt {n})" in log for n in (1, 2, 3)] == [True, True, True]
    assert re.findall(r"^run \d fails$", log, re.MULTILINE) == ["run 0 fails", "run 1 fails"]


def test_script_failures_are_not_retried_unless_the_service_asks(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform()
    platform.catalog.apply([service("strict", flaky(tmp_path / "runs", 1), ["strict/in"], ["strict/out"])])
    put_text(platform, "strict/in/a.txt", "x")

    job = wait_for_jobs(platform, "strict", 1)[0]

    assert (job.state, job.attempt, job.exit_code) == (JobState.FAILED, 1, 9)


def test_a_job_that_always_fails_becomes_dead_and_is_replayed_with_conveyor_retry(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform()
    gate = tmp_path / "fixed"
    script = f'[ -f "{gate}" ] || {{ echo "still broken"; exit 4; }}; {COPY}'
    platform.catalog.apply(
        [service("hopeless", script, ["dead/in"], ["dead/out"], retries=2, retry_script_failures=True)]
    )
    for name in ("a", "b"):
        put_text(platform, f"dead/in/{name}.txt", name)

    dead = wait_for_jobs(platform, "hopeless", 2, timeout_s=60)
    assert {(j.state, j.attempt) for j in dead} == {(JobState.DEAD, 3)}
    assert all("gave up after 3 attempt(s)" in j.message and "exited with code 4" in j.message for j in dead)
    cli = cli_for(platform, tmp_path)
    listed = cli.json("jobs", "hopeless", "--status", "dead")
    assert len(listed) == 2

    gate.touch()  # the cause is fixed: replay the dead letters
    assert "queued again: 2 job(s)" in cli("retry", "hopeless", "--dead").stdout

    jobs = wait_for_jobs(platform, "hopeless", 2, timeout_s=60)
    assert {(j.state, j.attempt) for j in jobs} == {(JobState.SUCCEEDED, 4)}
    assert keys_under(platform, "dead/out/") == ["out/a.txt", "out/b.txt"]


def test_a_20_second_storage_outage_loses_nothing_and_runs_nothing_twice(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform(dispatch={"retry_base_s": 2.0, "retry_max_s": 30.0, "reconcile_interval_s": 5})
    slow_copy = f"sleep 0.5; {COPY}"
    platform.catalog.apply(
        [
            service("first", slow_copy, ["outage/in"], ["outage/mid"], cpu="0.5", retries=6),
            service("second", slow_copy, ["outage/mid"], ["outage/out"], cpu="0.5", retries=6),
        ]
    )
    files = 30
    for i in range(files):
        put_text(platform, f"outage/in/f{i:02d}.txt", f"file {i}")
    _wait_until(lambda: _succeeded(platform, "first") >= 5, 60)

    platform.store.stop()
    waited = _messages_for(platform, ("first", "second"), seconds=20)
    platform.store.start()

    first = wait_for_jobs(platform, "first", files, timeout_s=240)
    second = wait_for_jobs(platform, "second", files, timeout_s=240)
    assert any(m.startswith("waiting for minio.default, which does not answer") for m in waited)
    assert all(j.state == JobState.SUCCEEDED for j in first + second), "jobs wait out a 20 s outage"
    assert Counter(j.trigger.ref.key for j in second) == Counter({f"mid/f{i:02d}.txt": 1 for i in range(files)})
    assert len(keys_under(platform, "outage/out/")) == files


def _messages_for(platform: Platform, services: tuple[str, ...], seconds: float) -> set[str]:
    """Every job message of the services seen during `seconds`, looked at every 0.2 s."""
    seen: set[str] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name in services:
            seen |= {record.message for _, record in platform.ledger.list_jobs(name, limit=1000)}
        time.sleep(0.2)
    return seen


def _succeeded(platform: Platform, name: str) -> int:
    return platform.ledger.count_jobs(name).get(name, {}).get(JobState.SUCCEEDED, 0)


def _wait_until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
