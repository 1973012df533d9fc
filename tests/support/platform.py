"""Helpers for tests that drive a running platform."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conveyor.model.event import ObjectRef
from conveyor.model.job import TERMINAL_STATES, JobRecord
from conveyor.model.service import Service
from conveyor.platform.platform import Platform


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
