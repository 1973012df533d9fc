"""Conveyor end to end: an embedded Platform in this process, files put into a service's input by a
separate uploader process, and the clock stopped when the last output is stored.

"Stored" is the ledger's `finished_at` of the last job: the supervisor sets it after stage-out has
uploaded the outputs, and every row checks afterwards that all N outputs are in the store.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.containers import running_engine
from bench.upload import Uploader
from bench.workloads import Workload, input_name
from conveyor.model.job import TERMINAL_STATES, JobRecord, JobState
from conveyor.model.service import Service
from conveyor.platform.platform import Platform
from conveyor.settings import Settings
from tests.support.engines import BUSYBOX_TAG, EngineName

POLL_S = 0.1
"""How often the ledger is counted while jobs run; the end time comes from the ledger, not the poll."""


@contextlib.contextmanager
def embedded_platform(scratch: Path, **settings: Any) -> Iterator[Platform]:
    """A platform on free ports with its data under `scratch`; `settings` override Settings fields."""
    free_ports: dict[str, Any] = {"api": {"port": 0}, "storage": {"s3_port": 0}}
    platform = Platform(Settings(data_dir=scratch / "data", **(free_ports | settings)))
    platform.start()
    try:
        yield platform
    finally:
        platform.stop()


@contextlib.contextmanager
def platform_for(runtime: str, scratch: Path, workers: int, **settings: Any) -> Iterator[Platform]:
    """`runtime` "process", or an engine name ("podman", "dockerd") started privately for this run."""
    with contextlib.ExitStack() as stack:
        if runtime == "process":
            local: dict[str, Any] = {"runtime": "process", "cpus": float(workers)}
        else:
            engine: EngineName = "podman" if runtime == "podman" else "dockerd"
            url = stack.enter_context(running_engine(engine, scratch))
            local = {"runtime": "container", "docker_host": url, "network": "none", "cpus": float(workers)}
        yield stack.enter_context(embedded_platform(scratch, local=local, **settings))


def uploader_for(platform: Platform) -> Uploader:
    keys = platform.credentials
    return Uploader(platform.store.s3_endpoint, keys.s3_access_key, keys.s3_secret_key)


BATCH_FILES = 20
"""max_files of the batch rows: small enough that two workers share a 1,000-file tail evenly."""


def copy_service(name: str, script: str, source: str, target: str, batch: str | None = None) -> Service:
    """One CPU per job, so `local.cpus` = workers runs `workers` jobs at a time; `batch` a batch mode."""
    return Service.model_validate(
        {
            "name": name,
            "image": BUSYBOX_TAG,
            "script": script,
            "cpu": "1",
            "input": [{"path": source}],
            "output": [{"path": target}],
            "batch": {"max_files": BATCH_FILES, "mode": batch} if batch else None,
        }
    )


@dataclass(frozen=True)
class FilesRun:
    elapsed_s: float
    mean_job_s: float
    """Mean of the ledger's job durations (stage-in + script + stage-out)."""


def files_through(
    runtime: str, workload: Workload, files: int, workers: int, scratch: Path, batch: str | None = None
) -> FilesRun:
    """Put `files` files into a service's input; seconds until the last of the N outputs is stored.

    `batch`: the service runs queued inputs in batches of this mode (`each`, `directory`).
    """
    script = workload.batch_script if batch == "directory" else workload.script
    with platform_for(runtime, scratch, workers) as platform, uploader_for(platform) as uploader:
        platform.catalog.apply([copy_service("bench", script, "bench-in/in", "bench-out/out", batch)])
        first_put = uploader.put_many("bench-in", [f"in/{input_name(i)}" for i in range(files)])
        jobs = wait_for_jobs(platform, "bench", files, timeout_s=60 + files * 2.0)
        check_outputs(platform, jobs, "bench-out", "out/", files)
        last_stored = max(job.finished_at.timestamp() for job in jobs if job.finished_at)
        durations = [
            (job.finished_at - job.started_at).total_seconds() for job in jobs if job.finished_at and job.started_at
        ]
        return FilesRun(last_stored - first_put, sum(durations) / len(durations))


def wait_for_jobs(platform: Platform, service: str, count: int, timeout_s: float) -> list[JobRecord]:
    """Every job of `service` once `count` of them are finished (counted, not listed, while waiting)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = platform.ledger.count_jobs(service).get(service, {})
        if sum(n for state, n in states.items() if state in TERMINAL_STATES) >= count:
            return [record for _, record in platform.ledger.list_jobs(service, limit=count * 2)]
        time.sleep(POLL_S)
    raise TimeoutError(f"{service}: fewer than {count} jobs finished within {timeout_s:.0f} s")


def check_outputs(platform: Platform, jobs: list[JobRecord], bucket: str, prefix: str, count: int) -> None:
    """A run counts only if every job succeeded and every output is in the store."""
    failed = [job for job in jobs if job.state != JobState.SUCCEEDED]
    if failed:
        raise RuntimeError(f"{len(failed)} job(s) did not succeed, e.g. {failed[0].job_id}: {failed[0].message}")
    stored = sum(1 for _ in platform.storage.default.list(bucket, prefix))
    if stored < count:
        raise RuntimeError(f"{stored} outputs in {bucket}/{prefix}, expected {count}")
