"""Latency of single uploads: PUT → job created, → script start, → output stored; and a 3-stage chain.

Uploads go one at a time, the next only after the previous job finished, so each number is the
platform's own latency and never time spent queued behind another job. The script's first command
writes the wall-clock time into its output (`busybox adjtimex`: microseconds, and it runs the same
on the host and in the busybox image), so "script start" is measured by the script itself; it
includes starting `sh` and busybox (about a millisecond). PUT times are taken in the uploader
process just before the request leaves; the machine has one wall clock, so they compare.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from bench.conveyor_runs import check_outputs, copy_service, platform_for, uploader_for
from bench.harness import summarize_ms
from bench.workloads import COPY, input_name
from conveyor.model.event import ObjectRef
from conveyor.model.job import TERMINAL_STATES, JobRecord
from conveyor.platform.platform import Platform

STAMP_SCRIPT = 'busybox adjtimex > "$TMP_OUTPUT_DIR/${INPUT_FILE_PATH##*/}.start"'
"""Parameter expansion, not $(basename): no fork before the time is taken."""
CHAIN = ("hop1", "hop2", "hop3")
POLL_S = 0.01
GAP_S = 0.02
"""Pause between a job's end and the next PUT: the platform is idle again, not just between jobs."""


def single_uploads(runtime: str, uploads: int, scratch: Path) -> dict[str, dict[str, float]]:
    """p50/p95/p99 of PUT → job created, → job started, → script start, → output stored."""
    with platform_for(runtime, scratch, workers=2, dispatch={"reconcile_interval_s": 0}) as platform:
        platform.catalog.apply([copy_service("latency", STAMP_SCRIPT, "lat-in/in", "lat-out/out")])
        put_at = _put_one_by_one(platform, "lat-in", uploads, services=["latency"])
        jobs = _jobs(platform, "latency", uploads)
        check_outputs(platform, jobs, "lat-out", "out/", uploads)
        script_start = _script_starts(platform, jobs, scratch)
    intervals: dict[str, list[float]] = defaultdict(list)
    for job in jobs:
        name = _name(job)
        intervals["PUT → job created"].append(job.created_at.timestamp() - put_at[name])
        intervals["PUT → job started (supervisor)"].append(_ts(job.started_at) - put_at[name])
        intervals["PUT → script start"].append(script_start[name] - put_at[name])
        intervals["PUT → job finished (output stored)"].append(_ts(job.finished_at) - put_at[name])
    return {what: summarize_ms(values) for what, values in intervals.items()}


def chain(uploads: int, scratch: Path) -> dict[str, dict[str, float]]:
    """Three copy services, each reading the previous one's output; what each further stage adds.

    A hop is measured between jobs' ends, both taken the same way, so what the supervisor does
    after stage-out (log, clean-up) cancels out.
    """
    buckets = ["chain-in", *(f"chain-{n}" for n in range(1, len(CHAIN) + 1))]
    services = [
        copy_service(name, COPY, f"{source}/data", f"{target}/data")
        for name, source, target in zip(CHAIN, buckets, buckets[1:], strict=False)
    ]
    with platform_for("process", scratch, workers=2, dispatch={"reconcile_interval_s": 0}) as platform:
        platform.catalog.apply(services)
        put_at = _put_one_by_one(platform, "chain-in", uploads, services=list(CHAIN), prefix="data")
        stages = [{_name(job): job for job in _jobs(platform, name, uploads)} for name in CHAIN]
    first, last = [], []
    for name, put in put_at.items():
        first.append(_ts(stages[0][name].finished_at) - put)
        last.append(_ts(stages[-1][name].finished_at) - put)
    per_hop = [(end - start) / (len(CHAIN) - 1) for start, end in zip(first, last, strict=True)]
    return {
        "PUT → 1st stage job finished": summarize_ms(first),
        "PUT → 3rd stage job finished": summarize_ms(last),
        "per hop: (3rd − 1st) ÷ 2": summarize_ms(per_hop),
    }


def _put_one_by_one(
    platform: Platform, bucket: str, uploads: int, services: list[str], prefix: str = "in"
) -> dict[str, float]:
    """PUT file after file, each once every job of `services` is finished; file name → PUT time."""
    put_at: dict[str, float] = {}
    with uploader_for(platform) as uploader:
        for index in range(uploads):
            name = input_name(index)
            put_at[name] = uploader.put_one(bucket, f"{prefix}/{name}", index)
            _wait_finished(platform, services, (index + 1) * len(services), timeout_s=60)
            time.sleep(GAP_S)
    return put_at


def _wait_finished(platform: Platform, services: list[str], count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = platform.ledger.count_jobs()
        finished = sum(n for name in services for state, n in counts.get(name, {}).items() if state in TERMINAL_STATES)
        if finished >= count:
            return
        time.sleep(POLL_S)
    raise TimeoutError(f"{services}: fewer than {count} jobs finished within {timeout_s:.0f} s")


def _jobs(platform: Platform, service: str, count: int) -> list[JobRecord]:
    return [record for _, record in platform.ledger.list_jobs(service, limit=count * 2)]


def _script_starts(platform: Platform, jobs: list[JobRecord], scratch: Path) -> dict[str, float]:
    """File name → the time its script wrote as its first act (read back from its output)."""
    starts = {}
    for job in jobs:
        name = _name(job)
        stamp = platform.storage.default.download(ObjectRef.parse(f"lat-out/out/{name}.start"), scratch / "stamp")
        fields = dict(re.findall(r"time\.(tv_sec|tv_usec):\s+(\d+)", stamp.read_text()))
        starts[name] = int(fields["tv_sec"]) + int(fields["tv_usec"]) / 1e6
    return starts


def _name(job: JobRecord) -> str:
    if job.trigger is None:
        raise RuntimeError(f"job {job.job_id} has no triggering object")
    return job.trigger.ref.key.rsplit("/", 1)[-1]


def _ts(moment: datetime | None) -> float:
    if moment is None:
        raise RuntimeError("a finished job lacks its start or end time in the ledger")
    return moment.timestamp()
