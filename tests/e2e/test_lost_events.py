"""Lost and repeated notifications on the embedded platform: the reconciler and the ledger's idempotency.

A lost notification is simulated where it is lost in real life: the webhook answers 200 (so
SeaweedFS forgets the event) but the intake drops it, as when the platform was down or the
store's in-memory queue went with a restart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from conveyor.ledger.tables import EventRow
from conveyor.model.event import ObjectEvent
from conveyor.model.job import JobState
from conveyor.platform.platform import Platform
from tests.conftest import PlatformFactory
from tests.support.ledger_rows import ledger_session
from tests.support.platform import put_text, service, wait_for_jobs

pytestmark = pytest.mark.e2e

COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
QUIET = {"reconcile_interval_s": 3600}
"""Only the start-up round runs by itself: the test decides when the others do."""


@contextmanager
def notifications_lost(platform: Platform) -> Iterator[list[ObjectEvent]]:
    """Every event the webhook brings is answered and dropped; yields the dropped events."""
    dropped: list[ObjectEvent] = []

    def drop(events: list[ObjectEvent], only_service: str | None = None) -> list[list[str]]:
        dropped.extend(events)
        return [[] for _ in events]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(platform.intake, "accept_many", drop)  # the intake's one door: accept() goes through it too
        yield dropped


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def put_files(platform: Platform, folder: str, names: list[str]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: put_text(platform, f"{folder}/{name}", f"payload of {name}"), names))


def lose_notifications_of(platform: Platform, folder: str, names: list[str]) -> None:
    """Put the files while notifications are lost, and wait until SeaweedFS has sent (and forgotten) them all."""
    with notifications_lost(platform) as dropped:
        put_files(platform, folder, names)
        wait_until(lambda: len(dropped) >= len(names), f"{len(names)} notifications were dropped")


def admin(platform: Platform) -> tuple[str, str]:
    return platform.credentials.admin_user, platform.credentials.admin_password


def test_lost_notifications_are_found_by_the_reconciler_and_run_once(make_platform: PlatformFactory) -> None:
    platform = make_platform(dispatch=QUIET)
    platform.catalog.apply([service("copy", COPY, ["lost/in"], ["lost/out"])])
    names = [f"file-{i:03d}.txt" for i in range(100)]

    lose_notifications_of(platform, "lost/in", names)
    assert platform.ledger.count_jobs() == {}
    time.sleep(platform.reconciler.settle_s)  # past the time a webhook could still be on its way
    url = f"{platform.api_url}/conveyor/v1/reconcile"
    assert httpx.post(url).status_code == 401
    report = httpx.post(url, auth=admin(platform), timeout=60).json()

    assert (report["listed"], report["accepted"], report["errors"]) == (100, 100, 0)
    jobs = wait_for_jobs(platform, "copy", 100, timeout_s=120)
    assert len(jobs) == 100
    assert {(job.state, job.attempt) for job in jobs} == {(JobState.SUCCEEDED, 1)}
    assert sorted(job.trigger.ref.key for job in jobs) == [f"in/{name}" for name in names]
    again = platform.reconciler.reconcile_once()
    assert (again.listed, again.accepted) == (100, 0)
    assert platform.ledger.count_jobs("copy") == {"copy": {JobState.SUCCEEDED: 100}}


def test_a_notification_delivered_twice_makes_one_job_and_is_counted(make_platform: PlatformFactory) -> None:
    platform = make_platform(dispatch=QUIET)
    platform.catalog.apply([service("twice", COPY, ["dup/in"], ["dup/out"])])
    deliver = platform.intake.accept_many

    def twice(events: list[ObjectEvent], only_service: str | None = None) -> list[list[str]]:
        first, again = deliver(events, only_service), deliver(events, only_service)
        return [jobs + more for jobs, more in zip(first, again, strict=True)]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(platform.intake, "accept_many", twice)
        put_files(platform, "dup/in", [f"f{i}.txt" for i in range(20)])
        jobs = wait_for_jobs(platform, "twice", 20)

    assert len(jobs) == 20
    assert len({job.trigger.ref.key for job in jobs}) == 20
    with ledger_session(platform.ledger) as session:
        duplicates = list(session.scalars(select(EventRow.duplicates).where(EventRow.service == "twice")))
    assert len(duplicates) == 20
    assert min(duplicates) >= 1, "every second delivery is counted on the first event"
    assert platform.reconciler.reconcile_once().accepted == 0


def test_files_older_than_the_service_are_left_and_files_put_while_down_run_after_restart(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "kept"
    first = make_platform(data_dir=data_dir, dispatch=QUIET)
    first.storage.default.ensure_bucket("early")
    put_files(first, "early/in", [f"old-{i}.txt" for i in range(5)])
    time.sleep(3.1)  # the store's times are to the second; the service must be clearly younger
    first.catalog.apply([service("late", COPY, ["early/in"], ["early/out"])])

    before = first.reconciler.reconcile_once()
    assert (before.listed, before.older_than_service, before.accepted) == (5, 5, 0)
    new_names = [f"new-{i}.txt" for i in range(10)]
    lose_notifications_of(first, "early/in", new_names)
    assert first.ledger.count_jobs() == {}
    first.stop()

    second = make_platform(data_dir=data_dir, dispatch=QUIET)  # no API call: the start-up round finds them

    jobs = wait_for_jobs(second, "late", 10, timeout_s=120)
    assert sorted(job.trigger.ref.key for job in jobs) == [f"in/{name}" for name in new_names]
    assert {job.state for job in jobs} == {JobState.SUCCEEDED}
    after = second.reconciler.reconcile_once()
    assert (after.older_than_service, after.accepted) == (5, 0)


def conveyor(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The command line as a subprocess, finding the platform through its data dir."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    clean |= {"CONVEYOR_CONFIG": str(data_dir / "absent.toml"), "COLUMNS": "200", **env}
    command = [sys.executable, "-m", "conveyor", "--data-dir", str(data_dir), *args]
    return subprocess.run(command, env=clean, capture_output=True, text=True, timeout=120)


def test_conveyor_reconcile_runs_a_round_and_oscar_has_none(make_platform: PlatformFactory, tmp_path: Path) -> None:
    data_dir = tmp_path / "cli"
    platform = make_platform(data_dir=data_dir, dispatch=QUIET)
    platform.catalog.apply([service("copy", COPY, ["cli/in"], ["cli/out"])])
    lose_notifications_of(platform, "cli/in", ["a.txt", "b.txt"])
    time.sleep(platform.reconciler.settle_s)

    report = conveyor(data_dir, "reconcile", "--json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["accepted"] == 2
    shown = conveyor(data_dir, "reconcile")
    assert shown.returncode == 0, shown.stderr
    assert "0 lost file(s) accepted out of 2 listed" in shown.stdout
    wait_for_jobs(platform, "copy", 2)

    oscar = conveyor(data_dir, "reconcile", CONVEYOR_CLIENT__API="oscar")
    assert oscar.returncode == 2
    assert "OSCAR has no reconciler" in oscar.stderr


def test_between_listings_lost_notifications_come_back_from_the_change_log_with_their_lineage(
    make_platform: PlatformFactory,
) -> None:
    platform = make_platform(dispatch=QUIET)
    platform.catalog.apply(
        [
            service("first", COPY, ["replay/in"], ["replay/mid"]),
            service("second", COPY, ["replay/mid"], ["replay/out"]),
        ]
    )
    assert platform.reconciler.reconcile_once(full=True).mode == "listing"
    dropped: list[ObjectEvent] = []
    accept_many = platform.intake.accept_many

    def lose_outputs(events: list[ObjectEvent], only_service: str | None = None) -> list[list[str]]:
        dropped.extend(event for event in events if event.ref.key.startswith("mid/"))
        created = iter(accept_many([e for e in events if not e.ref.key.startswith("mid/")], only_service))
        return [[] if event.ref.key.startswith("mid/") else next(created) for event in events]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(platform.intake, "accept_many", lose_outputs)
        put_text(platform, "replay/in/x.txt", "x")
        first = wait_for_jobs(platform, "first", 1)[0]
        wait_until(lambda: len(dropped) == 1, "the output's notification was dropped")
    time.sleep(platform.reconciler.settle_s + 0.5)

    report = platform.reconciler.reconcile_once(full=False)

    assert (report.mode, report.accepted) == ("replay", 1)
    second = wait_for_jobs(platform, "second", 1)[0]
    assert second.state == JobState.SUCCEEDED
    assert (second.parent_job, second.depth) == (first.job_id, 1), "the log keeps the producer a listing cannot see"
