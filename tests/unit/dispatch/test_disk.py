"""The disk gate: when the data directory's disk holds jobs back, what a failure on a full disk
becomes, and who hears when the disk fills and empties. The free space is the test's to set; a full
SQLite database is a real one (a page limit stands in for the disk)."""

from __future__ import annotations

import errno
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from conveyor.dispatch.disk import MB, DiskGate, LowDisk
from conveyor.errors import StorageError, StorageUnreachable, no_space_left
from conveyor.model.job import DISK, JobOutcome, JobState
from conveyor.supervisor.run import failed_outcome


class Disk:
    """Free space the test sets; counts how often it is read."""

    def __init__(self, free_mb: float) -> None:
        self.free_mb = free_mb
        self.reads = 0

    def __call__(self, _path: Path) -> int:
        self.reads += 1
        return int(self.free_mb * MB)


def gate_on(disk: Disk, min_free_mb: int = 64, **options: float) -> DiskGate:
    return DiskGate(Path("/data"), min_free_mb, free_bytes=disk, **options)


def no_space() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", "/data/work/copy/job-1/input/a.bin")


RAN_OUT = JobOutcome(state=JobState.FAILED, message="[Errno 28] No space left", failure="unavailable", waiting_for=DISK)
SCRIPT_FAILED = JobOutcome(
    state=JobState.FAILED, exit_code=1, message="the script exited with code 1", failure="script"
)


# ---- holding jobs back --------------------------------------------------------------------------


def test_jobs_are_held_while_the_disk_has_less_than_the_threshold_free() -> None:
    disk = Disk(200)
    gate = gate_on(disk, cache_s=0)
    assert gate.holding() is None

    disk.free_mb = 12
    assert gate.holding() == "the data directory /data has 12 MB free (needs 64 MB); jobs wait"


def test_a_low_disk_is_back_only_with_a_margin_above_the_threshold() -> None:
    """So that a disk at the edge, which each job that starts fills a little, does not flap."""
    disk = Disk(10)
    gate = gate_on(disk, cache_s=0)
    assert gate.holding()
    disk.free_mb = 65
    assert gate.holding(), "just above the threshold: still low"
    disk.free_mb = 64 * 1.125
    assert gate.holding() is None


def test_a_threshold_of_zero_holds_jobs_only_on_a_disk_with_nothing_left() -> None:
    disk = Disk(0.5)
    gate = gate_on(disk, min_free_mb=0, cache_s=0)
    assert gate.holding() is None
    disk.free_mb = 0
    assert gate.holding() is not None


def test_the_free_space_is_read_at_most_once_per_cache_period() -> None:
    disk = Disk(200)
    gate = gate_on(disk, cache_s=60)
    for _ in range(100):
        gate.holding()
    assert disk.reads == 1
    assert gate.check() is None and disk.reads == 2, "check() reads it again"


def test_listeners_hear_once_when_the_disk_fills_and_once_when_it_has_room_again() -> None:
    disk = Disk(200)
    gate = gate_on(disk, cache_s=0, probe_s=0.01)
    heard: list[tuple[str, LowDisk]] = []
    gate.on_low(lambda low: heard.append(("low", low)))
    gate.on_back(lambda low: heard.append(("back", low)))
    gate.start()
    try:
        disk.free_mb = 3
        _eventually(lambda: heard)
        time.sleep(0.05)  # several readings while low
        disk.free_mb = 150
        _eventually(lambda: len(heard) == 2)
        time.sleep(0.05)
    finally:
        gate.stop()

    assert [kind for kind, _ in heard] == ["low", "back"]
    assert heard[0][1].free == "3 MB"
    back = heard[1][1]
    assert back.free == "150 MB" and back.seconds >= 0.05, "the episode: how long it lasted, what is free now"


def test_a_disk_already_low_when_the_gate_starts_is_announced() -> None:
    disk = Disk(1)
    gate = gate_on(disk, cache_s=0)
    assert gate.holding(), "the dispatcher saw it first, before anyone listened"
    heard: list[LowDisk] = []
    gate.on_low(heard.append)
    gate.start()
    gate.stop()
    assert [low.free for low in heard] == ["1 MB"]


def test_a_free_space_that_cannot_be_read_keeps_what_was_known(tmp_path: Path) -> None:
    gate = DiskGate(tmp_path / "gone", 64, cache_s=0)
    assert gate.holding() is None


# ---- what a failure becomes ---------------------------------------------------------------------


def test_a_job_that_ran_out_of_space_waits_while_the_disk_is_low() -> None:
    judged = gate_on(Disk(0)).judge(RAN_OUT)

    assert (judged.failure, judged.waiting_for) == ("unavailable", DISK)
    assert judged.message == "[Errno 28] No space left; the data directory /data has 0 MB free (needs 64 MB)"
    assert judged.awaited() == "free space under the data directory"


def test_a_job_that_ran_out_of_space_on_a_disk_with_room_again_is_an_ordinary_failure() -> None:
    """Its own files filled the disk and went with its work directory: waiting would fill it again, for ever."""
    judged = gate_on(Disk(500)).judge(RAN_OUT)

    assert (judged.failure, judged.waiting_for) == ("infrastructure", None)
    assert "the job may need more space than the disk has" in judged.message


@pytest.mark.parametrize("failure", ["infrastructure", "script"])
def test_any_failure_of_a_job_or_its_script_while_the_disk_is_low_waits(failure: str) -> None:
    """A script that cannot write its output says only that it failed (exit 1)."""
    outcome = SCRIPT_FAILED.model_copy(update={"failure": failure})
    judged = gate_on(Disk(10)).judge(outcome)
    assert (judged.failure, judged.waiting_for) == ("unavailable", DISK)
    assert judged.message.startswith("the script exited with code 1; the data directory /data has 10 MB free")


@pytest.mark.parametrize(
    "outcome",
    [
        JobOutcome(state=JobState.SUCCEEDED, message="1 output(s) stored"),
        JobOutcome(state=JobState.FAILED, message="gone", failure="input"),
        JobOutcome(state=JobState.TIMED_OUT, message="killed after 5 s", failure="timeout"),
        JobOutcome(state=JobState.CANCELLED, message="cancelled on request"),
        JobOutcome(state=JobState.FAILED, message="refused", failure="unavailable", waiting_for="minio.default"),
    ],
)
def test_what_the_disk_does_not_explain_is_left_as_it_is(outcome: JobOutcome) -> None:
    assert gate_on(Disk(0)).judge(outcome) == outcome


def test_a_script_failure_on_a_disk_with_room_is_left_as_it_is() -> None:
    assert gate_on(Disk(500)).judge(SCRIPT_FAILED) == SCRIPT_FAILED


def test_each_job_of_a_batch_is_judged() -> None:
    done = JobOutcome(state=JobState.SUCCEEDED)
    batch = JobOutcome(state=JobState.FAILED, failure="script", members={"a": done, "b": SCRIPT_FAILED})

    judged = gate_on(Disk(0)).judge(batch)

    assert judged.members["a"] == done
    assert judged.members["b"].waiting_for == DISK
    assert judged.waiting_for == DISK


# ---- telling a full disk from an error ----------------------------------------------------------


def test_no_space_left_is_found_anywhere_in_the_chain_of_causes() -> None:
    assert no_space_left(no_space())
    assert no_space_left(OSError(errno.EDQUOT, "Disk quota exceeded"))
    try:
        try:
            raise no_space()
        except OSError as error:
            raise StorageError("stage-in failed: could not download bucket/a.bin") from error
    except StorageError as wrapped:
        assert no_space_left(wrapped)
    assert not no_space_left(OSError(errno.EACCES, "Permission denied"))
    assert not no_space_left(StorageError("InternalError We encountered an internal error"))


def test_a_full_sqlite_database_is_no_space_left(tmp_path: Path) -> None:
    """SQLite says `database or disk is full` (SQLITE_FULL) on a full disk; a page limit says it the same way."""
    engine = create_engine(f"sqlite:///{tmp_path / 'full.db'}")
    with pytest.raises(OperationalError) as raised, engine.begin() as connection:
        connection.execute(text("CREATE TABLE t (x BLOB)"))
        connection.execute(text("PRAGMA max_page_count = 8"))
        for _ in range(100):
            connection.execute(text("INSERT INTO t VALUES (zeroblob(4096))"))
    engine.dispose()

    assert "database or disk is full" in str(raised.value)
    assert isinstance(raised.value.orig, sqlite3.OperationalError)
    assert no_space_left(raised.value)


def test_a_job_that_ran_out_of_space_waits_for_the_disk_and_a_store_that_does_not_answer_for_the_store() -> None:
    outcome = failed_outcome(no_space())
    assert (outcome.state, outcome.failure, outcome.waiting_for) == (JobState.FAILED, "unavailable", DISK)
    assert "No space left on device" in outcome.message

    down = failed_outcome(StorageUnreachable("no answer", provider="minio.default"))
    assert down.waiting_for == "minio.default"
    other = failed_outcome(OSError(errno.EACCES, "Permission denied"))
    assert (other.failure, other.waiting_for) == ("infrastructure", None)


def _eventually(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.005)
