"""A full disk under the data directory: jobs wait instead of dying, every answer says why, the ledger
stays whole, and work resumes by itself when space is freed.

The data directory is on a small tmpfs the test mounts (root only; CI runs as root), filled to the
last byte with a file while jobs run and wait, then freed. Everything else is real: SeaweedFS, the
SQLite ledger, the API, the CLI, scripts run as processes.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from conveyor.errors import StorageError
from conveyor.model.event import ObjectRef
from conveyor.model.job import JobState
from tests.conftest import PlatformFactory
from tests.support.cli import Cli, cli_environment
from tests.support.platform import (
    FAST_RETRIES,
    admin,
    keys_under,
    put_text,
    service,
    wait_for_jobs,
    wait_for_queued,
)

pytestmark = pytest.mark.e2e

DISK_MB = 160
MIN_FREE_MB = 32
FILES = 12
SLOTS = 2
# Ordinary failures would make every job that meets the full disk a dead letter within a second.
SETTINGS = {**FAST_RETRIES, "min_free_mb": MIN_FREE_MB, "reconcile_interval_s": 3600}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_MB, unmounted whatever happens (request it before make_platform: it is torn down after)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs these tests as root)")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def fill(disk: Path) -> list[Path]:
    """Files that take every byte left, to the last page."""
    fillers = [disk / "filler-1m", disk / "filler-4k"]
    for filler, block in zip(fillers, ("1M", "4k"), strict=True):
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", f"bs={block}"], capture_output=True, check=False)
    stats = os.statvfs(disk)
    assert stats.f_bavail == 0, f"{stats.f_bavail} blocks still free"
    return fillers


def test_a_full_disk_holds_jobs_without_a_dead_letter_and_work_resumes_once_space_is_freed(
    small_disk: Path, make_platform: PlatformFactory, tmp_path: Path
) -> None:
    notices: list[tuple[str, str]] = []
    platform = make_platform(
        data_dir=small_disk / "data",
        dispatch=SETTINGS,
        max_jobs=SLOTS,
        on_notice=lambda level, message: notices.append((level, message)),
    )
    gate = tmp_path / "gate"  # on the test's own disk: the scripts wait for it, then need room for their output
    script = (
        f'while [ ! -f "{gate}" ]; do sleep 0.05; done; head -c 1000000 /dev/zero > "$TMP_OUTPUT_DIR/pad.bin"; '
        'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
    )
    platform.catalog.apply([service("squeeze", script, ["squeeze/in"], ["squeeze/out"], retries=1)])
    names = [f"file-{index:02d}.txt" for index in range(FILES)]
    for name in names:
        put_text(platform, f"squeeze/in/{name}", name)
    wait_for_queued(platform, "squeeze", FILES - SLOTS)

    fillers = fill(small_disk)
    gate.touch()  # the running scripts cannot write their output; the queued jobs find no room to start
    api = httpx.Client(base_url=platform.api_url, auth=admin(platform), timeout=30)
    deadline = time.monotonic() + 30
    while (ready := api.get("/ready")).status_code == 200:
        assert time.monotonic() < deadline, "readiness did not notice the full disk"
        time.sleep(0.1)
    assert (ready.status_code, ready.text) == (503, "not ready: disk")
    problem = api.get("/conveyor/v1/health").json()["problems"]["disk"]
    data_dir = small_disk / "data"
    assert problem == f"the data directory {data_dir} has 0 MB free (needs {MIN_FREE_MB} MB); jobs wait"

    # Uploads and invocations are refused with the reason, in one line.
    stored_meanwhile = []
    for index in range(3):  # small ones may still fit in the store's last pages; their events may not
        try:
            platform.storage.default.put_bytes(ObjectRef.parse(f"squeeze/in/small-{index}.txt"), b"small")
            stored_meanwhile.append(f"small-{index}.txt")
        except StorageError:
            pass
    invoked = api.post("/job/squeeze", content=b"x" * 100_000)
    assert invoked.status_code == 503
    assert invoked.text.startswith(f"the platform's disk is full: the data directory {data_dir} has 0 MB free")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2_000_000))
    cli = Cli(cli_environment(small_disk), tmp_path)
    refused = cli("put", str(big), "squeeze/in/", check=False)
    assert refused.returncode == 1
    assert f"uploading stopped: the platform's disk is full: the data directory {data_dir} has 0 MB free" in (
        refused.stderr
    )
    assert "Traceback" not in refused.stderr

    time.sleep(3)  # retries would have made every job a dead letter long ago
    jobs = [record for _, record in platform.ledger.list_jobs("squeeze", limit=100)]
    assert {job.state for job in jobs} <= {JobState.QUEUED, JobState.RUNNING}, [j.message for j in jobs]
    assert {job.attempt for job in jobs} == {1}
    assert (
        "warning",
        f"the data directory {data_dir} has 0 MB free (needs {MIN_FREE_MB} MB): jobs wait until there is room",
    ) in notices

    for filler in fillers:
        filler.unlink()
    freed = time.monotonic()
    while api.get("/ready").status_code != 200:
        assert time.monotonic() - freed < 30, "readiness did not notice the freed space"
        time.sleep(0.05)
    ready_s = time.monotonic() - freed
    done = wait_for_jobs(platform, "squeeze", FILES + len(stored_meanwhile), timeout_s=120)
    done_s = time.monotonic() - freed
    # for the note, with -s (the uploads whose event was lost wait for the reconciliation round's 3 s settle)
    print(f"\nready {ready_s:.1f} s and all {len(done)} jobs done {done_s:.1f} s after the space was freed")

    assert {job.state for job in done} == {JobState.SUCCEEDED}, [j.message for j in done]
    assert {job.attempt for job in done} == {1}, "waiting for room is not an attempt"
    triggers = sorted(job.trigger.ref.name for job in done if job.trigger)
    assert triggers == sorted(names + stored_meanwhile), "each stored input ran exactly once, none was lost"
    assert set(keys_under(platform, "squeeze/out/")) >= {f"out/{name}" for name in names}
    assert api.get("/ready").text == "ready"
    assert any(level == "note" and "has room again after" in message for level, message in notices), notices

    api.close()
    platform.stop()
    with closing(sqlite3.connect(data_dir / "conveyor.db")) as ledger:
        assert ledger.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
