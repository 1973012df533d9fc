"""Batches (Service.batch): inputs queued behind a busy service run several per job run, each input
still a job of its own with its own outcome, retries and log.

Every test holds the service's one job slot with a first upload whose script waits for a gate file,
queues more uploads behind it, then opens the gate: what is queued then runs as one batch.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from conveyor.model.event import ObjectRef
from conveyor.model.job import JobState
from tests.conftest import PlatformFactory
from tests.support.platform import (
    gated,
    hold_the_slot_and_queue,
    keys_under,
    put_text,
    read_text,
    service,
    wait_for_jobs,
)

pytestmark = pytest.mark.e2e

COPY_ALL = 'printf "%s\\n" "$INPUT_FILE_PATHS" | while read -r f; do cp "$f" "$TMP_OUTPUT_DIR/"; done'


def test_a_directory_batch_runs_the_script_once_for_every_queued_input(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    platform = make_platform(max_jobs=1)
    batch = {"max_files": 10, "mode": "directory"}
    platform.catalog.apply([service("bunch", gated(gate, runs, COPY_ALL), ["bunch/in"], ["bunch/out"], batch=batch)])
    names = [f"f{i}.txt" for i in range(5)]
    first = hold_the_slot_and_queue(platform, "bunch", names)

    gate.touch()
    jobs = wait_for_jobs(platform, "bunch", 6)

    assert runs.read_text().split() == ["1", "5"]
    assert {job.state for job in jobs} == {JobState.SUCCEEDED}
    assert keys_under(platform, "bunch/out") == sorted(f"out/{n}" for n in ["first.txt", *names])
    assert read_text(platform, "bunch/out/f3.txt", tmp_path) == "f3.txt"
    batched = [job for job in jobs if job.job_id != first]
    leads = [job for job in batched if job.outputs]
    assert len(leads) == 1, "a batch run in one folder records its outputs on the job that led it"
    assert sorted(o.ref.key for o in leads[0].outputs) == sorted(f"out/{n}" for n in names)
    followers = [job for job in batched if job is not leads[0]]
    assert all(f"ran in one batch with job {leads[0].job_id} (5 inputs)" in job.message for job in followers)
    assert all(job.attempt == 1 for job in jobs)
    follower_log = platform.jobs.read_log("bunch", followers[0].job_id)
    assert f"runs in one batch with job {leads[0].job_id}" in follower_log


def test_an_each_batch_runs_the_script_once_per_input_with_each_job_its_own(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    platform = make_platform(max_jobs=1)
    copy = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"'
    platform.catalog.apply(
        [service("each", gated(gate, runs, copy), ["each/in"], ["each/out"], batch={"max_files": 3, "mode": "each"})]
    )
    names = [f"f{i}.txt" for i in range(5)]
    hold_the_slot_and_queue(platform, "each", names)

    gate.touch()
    jobs = wait_for_jobs(platform, "each", 6)

    assert runs.read_text().split() == ["1"] * 6
    assert {job.state for job in jobs} == {JobState.SUCCEEDED}
    assert all(len(job.outputs) == 1 and job.outputs[0].ref.key.endswith(job.trigger.ref.key[3:]) for job in jobs)  # type: ignore[union-attr]
    logs = [platform.jobs.read_log("each", job.job_id) for job in jobs]
    sizes = [re.findall(r"runs in a batch of (\d+) inputs", log) for log in logs]
    assert sorted(size for found in sizes for size in found) == ["2", "2", "3", "3", "3"]


def test_a_failed_batch_is_retried_input_by_input_so_only_the_bad_one_ends_dead(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    platform = make_platform(max_jobs=1)
    fussy = f'if grep -q bad $INPUT_FILE_PATHS; then echo "a bad input"; exit 7; fi; {COPY_ALL}'
    platform.catalog.apply(
        [
            service(
                "fussy",
                gated(gate, runs, fussy),
                ["fussy/in"],
                ["fussy/out"],
                batch={"max_files": 10, "mode": "directory"},
                retries=1,
                retry_script_failures=True,
            )
        ]
    )
    hold_the_slot_and_queue(platform, "fussy", ["a.txt", "bad.txt", "b.txt"])

    gate.touch()
    jobs = {job.trigger.ref.key: job for job in wait_for_jobs(platform, "fussy", 4, timeout_s=90)}  # type: ignore[union-attr]

    assert sorted(runs.read_text().split()) == sorted(["1", "3", "1", "1", "1"])
    assert (jobs["in/a.txt"].state, jobs["in/a.txt"].attempt) == (JobState.SUCCEEDED, 2)
    assert (jobs["in/b.txt"].state, jobs["in/b.txt"].attempt) == (JobState.SUCCEEDED, 2)
    assert (jobs["in/bad.txt"].state, jobs["in/bad.txt"].attempt) == (JobState.DEAD, 2)
    assert keys_under(platform, "fussy/out") == ["out/a.txt", "out/b.txt", "out/first.txt"]


def test_an_input_gone_before_its_batch_ran_fails_alone_and_the_rest_succeed(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    platform = make_platform(max_jobs=1)
    batch = {"max_files": 10, "mode": "directory"}
    platform.catalog.apply([service("gone", gated(gate, runs, COPY_ALL), ["gone/in"], ["gone/out"], batch=batch)])
    hold_the_slot_and_queue(platform, "gone", ["a.txt", "b.txt", "c.txt"])
    platform.storage.default.delete(ObjectRef.parse("gone/in/a.txt"))

    gate.touch()
    jobs = {job.trigger.ref.key: job for job in wait_for_jobs(platform, "gone", 4)}  # type: ignore[union-attr]

    assert runs.read_text().split() == ["1", "2"]
    assert (jobs["in/a.txt"].state, jobs["in/a.txt"].attempt) == (JobState.FAILED, 1)
    assert "no longer exists" in jobs["in/a.txt"].message
    assert [jobs[k].state for k in ("in/b.txt", "in/c.txt")] == [JobState.SUCCEEDED] * 2
    assert len(jobs["in/b.txt"].outputs) == 2, "the run's outputs are recorded on its first job whose input was staged"
    assert "the outputs are recorded on job " + jobs["in/b.txt"].job_id in jobs["in/c.txt"].message
    assert keys_under(platform, "gone/out") == ["out/b.txt", "out/c.txt", "out/first.txt"]


def test_cancelling_a_job_of_a_running_batch_stops_it_and_queues_the_others_again(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    gate, held, runs = tmp_path / "gate", tmp_path / "held", tmp_path / "runs"
    platform = make_platform(max_jobs=1)
    hold_batches = (
        f'if [ "$(printf "%s\\n" "$INPUT_FILE_PATHS" | grep -c .)" -gt 1 ]; then touch "{held}"; sleep 60; fi'
    )
    script = gated(gate, runs, f"{hold_batches}; {COPY_ALL}")
    platform.catalog.apply(
        [service("stop", script, ["stop/in"], ["stop/out"], batch={"max_files": 10, "mode": "directory"})]
    )
    hold_the_slot_and_queue(platform, "stop", ["a.txt", "b.txt", "c.txt"])
    gate.touch()
    _wait_for_file(held)
    by_key = {job.trigger.ref.key: job for _, job in platform.ledger.list_jobs("stop")}  # type: ignore[union-attr]

    answer = platform.dispatcher.cancel(by_key["in/b.txt"].job_id)
    jobs = {job.trigger.ref.key: job for job in wait_for_jobs(platform, "stop", 4)}  # type: ignore[union-attr]

    assert answer is not None and "the batch's unfinished jobs are queued again" in answer
    assert jobs["in/b.txt"].state == JobState.CANCELLED
    assert [(jobs[k].state, jobs[k].attempt) for k in ("in/a.txt", "in/c.txt")] == [(JobState.SUCCEEDED, 2)] * 2
    assert keys_under(platform, "stop/out") == ["out/a.txt", "out/c.txt", "out/first.txt"]


def test_a_lone_upload_starts_at_once_without_waiting_for_a_batch(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform()
    platform.catalog.apply([service("alone", COPY_ALL, ["alone/in"], ["alone/out"], batch={"max_files": 50})])
    put_text(platform, "alone/in/x.txt", "x")

    [job] = wait_for_jobs(platform, "alone", 1, timeout_s=10)

    assert (job.state, len(job.outputs)) == (JobState.SUCCEEDED, 1)
    assert "batch" not in platform.jobs.read_log("alone", job.job_id)


def _wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within 30 s")
        time.sleep(0.02)
