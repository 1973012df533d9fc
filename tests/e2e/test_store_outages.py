"""When a store goes away, work waits instead of dying, and comes back by itself.

Real SeaweedFS processes killed with SIGKILL or stopped: the platform's own store (its watchdog
restarts it) and a second store a service writes to (its jobs wait until it answers again).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from conveyor.errors import StorageError
from conveyor.model.job import JobState
from conveyor.platform.platform import Platform
from conveyor.storage.embedded import EmbeddedSeaweed
from tests.conftest import PlatformFactory
from tests.support.cli import Cli, cli_environment
from tests.support.platform import FAST_RETRIES, admin, keys_under, put_text, service, wait_for_jobs
from tests.support.readiness import ReadinessLog

pytestmark = pytest.mark.e2e

COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
FILES = 300


def put_until_stored(platform: Platform, path: str, text: str, timeout_s: float = 120) -> None:
    """A user's upload: tried again while the store does not answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            put_text(platform, path, text)
            return
        except StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def kill_weed(platform: Platform) -> float:
    pid = int((platform.layout.seaweedfs / "weed.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def test_the_embedded_store_killed_mid_burst_is_restarted_and_each_file_runs_once_per_stage(
    make_platform: PlatformFactory,
) -> None:
    platform = make_platform(dispatch=FAST_RETRIES)
    platform.catalog.apply(
        [
            service("first", COPY, ["burst/in"], ["burst/mid"], retries=1),
            service("second", COPY, ["burst/mid"], ["burst/out"], retries=1),
        ]
    )
    names = [f"file-{i:03d}.txt" for i in range(FILES)]
    a_third_uploaded = threading.Event()

    def upload() -> None:
        for index, name in enumerate(names):
            put_until_stored(platform, f"burst/in/{name}", f"payload {index}")
            if index == FILES // 3:
                a_third_uploaded.set()

    with ReadinessLog(platform.api_url) as readiness:
        uploader = threading.Thread(target=upload)
        uploader.start()
        assert a_third_uploaded.wait(120)
        killed = kill_weed(platform)
        recovered_s = readiness.ready_again_after(killed)
        uploader.join(180)
        first = wait_for_jobs(platform, "first", FILES, timeout_s=240)
        second = wait_for_jobs(platform, "second", FILES, timeout_s=240)

    print(f"\nthe store was ready again {recovered_s:.1f} s after SIGKILL")  # for the note, with -s
    for jobs in (first, second):
        assert len(jobs) == FILES, "one job per input object: none twice"
        assert {job.state for job in jobs} == {JobState.SUCCEEDED}, [j.message for j in jobs if j.state != "succeeded"]
        assert sorted(job.trigger.ref.name for job in jobs if job.trigger) == names
    assert keys_under(platform, "burst/out/") == [f"out/{name}" for name in names]
    assert platform.watchdog.problem is None
    assert list((platform.layout.seaweedfs / "logs").glob("crash-*.log")), "the crash's output is kept"
    answer = httpx.get(f"{platform.api_url}/conveyor/v1/health", auth=admin(platform))
    assert answer.json() == {"ready": True, "problems": {}, "waiting_for_stores": {}}


def test_jobs_wait_while_the_store_they_write_to_is_down_and_finish_when_it_is_back(
    make_platform: PlatformFactory, seaweedfs: EmbeddedSeaweed
) -> None:
    """`seaweedfs` is a second store, apart from the platform's: the one the service writes its results to."""
    outside_store = seaweedfs
    platform = make_platform(dispatch=FAST_RETRIES)
    outside = {"endpoint": outside_store.s3_endpoint, "access_key": "testkey", "secret_key": "testsecret"}
    platform.catalog.apply(
        [
            service(
                "export",
                COPY,
                ["export/in"],
                [{"storage_provider": "s3.outside", "path": "exported/out"}],
                retries=1,
                storage_providers={"s3": {"outside": outside}},
            )
        ]
    )
    outside_store.stop()
    for index in range(20):
        put_text(platform, f"export/in/{index:02d}.txt", f"x{index}")

    deadline = time.monotonic() + 60
    health: dict[str, object] = {}
    while time.monotonic() < deadline and not health.get("waiting_for_stores"):
        health = httpx.get(f"{platform.api_url}/conveyor/v1/health", auth=admin(platform)).json()
        time.sleep(0.1)
    assert health["ready"] is True, health  # only this service's jobs wait; the platform works
    assert list(health["waiting_for_stores"]) == ["s3.outside"]  # type: ignore[call-overload]
    time.sleep(5)  # far longer than the retries of an ordinary failure take to give up
    waiting = [record for _, record in platform.ledger.list_jobs("export", limit=100)]
    assert {record.state for record in waiting} <= {JobState.QUEUED, JobState.RUNNING}
    assert any(record.message.startswith("waiting for s3.outside") for record in waiting)

    outside_store.start()
    jobs = wait_for_jobs(platform, "export", 20, timeout_s=120)

    assert {job.state for job in jobs} == {JobState.SUCCEEDED}
    assert {job.attempt for job in jobs} == {1}, "waiting for a store is not an attempt"


def test_a_store_that_keeps_crashing_is_given_up_and_every_answer_says_why(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform(data_dir=tmp_path / "data")
    with ReadinessLog(platform.api_url) as readiness:
        for _ in range(4):  # MAX_CRASHES - 1: each time it comes back
            readiness.ready_again_after(kill_weed(platform))
        kill_weed(platform)
        deadline = time.monotonic() + 30
        while platform.watchdog.problem is None or "not restarted again" not in platform.watchdog.problem:
            assert time.monotonic() < deadline, platform.watchdog.problem
            time.sleep(0.1)

    ready = httpx.get(platform.api_url + "/ready")
    assert (ready.status_code, ready.text) == (503, "not ready: store")
    health = httpx.get(f"{platform.api_url}/conveyor/v1/health", auth=admin(platform)).json()
    assert "exited 5 times" in health["problems"]["store"]
    for route in ("/system/status", "/system/buckets"):
        answer = httpx.get(platform.api_url + route, auth=admin(platform))
        assert answer.status_code == 503, (route, answer.text)
        assert "not restarted again" in answer.text
    (tmp_path / "a.txt").write_text("a")
    cli = Cli(cli_environment(tmp_path), tmp_path)
    refused = cli("put", "--force", str(tmp_path / "a.txt"), "bucket/in/", check=False)
    assert refused.returncode == 1
    assert "the platform's store does not answer: the embedded store exited 5 times" in refused.stderr
    assert "Traceback" not in refused.stderr
    status = cli("status", check=False)
    assert status.returncode == 1 and "NOT ready" in status.stdout
