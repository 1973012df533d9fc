"""Helpers for tests that drive a running platform."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conveyor.model.event import ObjectRef
from conveyor.model.job import TERMINAL_STATES, JobRecord, JobState
from conveyor.model.service import Service
from conveyor.platform.platform import Platform

# Retries would turn every job that meets the outage into a dead letter within a second or two:
# waiting for a store must not be one of them.
FAST_RETRIES = {"retry_base_s": 0.1, "retry_max_s": 0.2}


def admin(platform: Platform) -> tuple[str, str]:
    return platform.credentials.admin_user, platform.credentials.admin_password


def service(name: str, script: str, inputs: list[str], outputs: list[Any], **fields: Any) -> Service:
    """A service on the platform's own store; outputs are paths or dicts with filters."""
    return Service.model_validate(
        {
            "name": name,
            "image": fields.pop("image", "localhost/conveyor-test:busybox"),
            "script": script,
            "input": [{"path": path} for path in inputs],
            "output": [o if isinstance(o, dict) else {"path": o} for o in outputs],
            **fields,
        }
    )


def put_text(platform: Platform, path: str, text: str) -> None:
    platform.storage.default.put_bytes(ObjectRef.parse(path), text.encode())


def keys_under(platform: Platform, path: str) -> list[str]:
    ref = ObjectRef.parse(path)
    return sorted(
        info.ref.key for info in platform.storage.default.list(ref.bucket, ref.key) if not info.ref.key.endswith("/")
    )


def read_text(platform: Platform, path: str, scratch: Path) -> str:
    target = scratch / f"read-{time.monotonic_ns()}"
    platform.storage.default.download(ObjectRef.parse(path), target)
    return target.read_text()


def wait_for_jobs(platform: Platform, service_name: str, count: int, timeout_s: float = 60.0) -> list[JobRecord]:
    """Wait until the service has at least `count` finished jobs and none pending; return them all."""
    deadline = time.monotonic() + timeout_s
    records: list[JobRecord] = []
    while time.monotonic() < deadline:
        records = [r for _, r in platform.ledger.list_jobs(service_name, limit=100_000)]
        finished = [r for r in records if r.state in TERMINAL_STATES]
        if len(finished) >= count and len(finished) == len(records):
            return records
        time.sleep(0.05)
    states = {r.job_id: r.state.value for r in records}
    raise AssertionError(f"{service_name}: expected {count} finished jobs within {timeout_s} s, have {states}")


def wait_for_state(platform: Platform, job_id: str, states: set[str], timeout_s: float = 30.0) -> JobRecord:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = platform.ledger.fetch_job(job_id)
        if record is not None and record.state.value in states:
            return record
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {states} within {timeout_s} s: {record}")


def gated(gate: Path, runs: Path, then: str) -> str:
    """Wait for `gate`, note how many inputs this run got (one line per run in `runs`), then `then`."""
    return (
        f'while [ ! -f "{gate}" ]; do sleep 0.02; done; '
        f'printf "%s\\n" "$INPUT_FILE_PATHS" | grep -c . >> "{runs}"; {then}'
    )


def hold_the_slot_and_queue(platform: Platform, name: str, queued: list[str]) -> str:
    """Put `first.txt` (its job takes the only slot), then `queued`; returns the first job's id."""
    put_text(platform, f"{name}/in/first.txt", "first")
    first = wait_for_running(platform, name)
    for key in queued:
        put_text(platform, f"{name}/in/{key}", key)
    wait_for_queued(platform, name, len(queued))
    return first


def wait_for_running(platform: Platform, name: str) -> str:
    """The id of the service's first job, once it runs."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        records = [r for _, r in platform.ledger.list_jobs(name)]
        if records:
            return wait_for_state(platform, records[0].job_id, {"running"}).job_id
        time.sleep(0.02)
    raise AssertionError(f"{name}: no job started within 30 s")


def wait_for_queued(platform: Platform, name: str, count: int) -> None:
    """Until at least `count` jobs of the service are queued."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if platform.ledger.count_jobs(name).get(name, {}).get(JobState.QUEUED, 0) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{name}: {count} jobs were not queued within 30 s: {platform.ledger.count_jobs(name)}")
