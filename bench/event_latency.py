"""Event → job latency from an external store's notifications: from the start of each PUT to the
job's creation in the ledger (`created_at`).

`--source ceph`: a single-node Ceph RGW (scripts/ceph-rgw-up.sh) pushing S3 records to the
platform through an SNS topic (`events: sns`). RGW's topics are non-persistent: it posts before it
answers the PUT. `--source seaweedfs`: the platform's own embedded store and its filer webhook.
An embedded platform (host processes, reconciler off) serves one service on the input; PUTs go one
at a time, `--gap-s` apart, while earlier jobs run. Also timed: PUT → the job's start (the
supervisor begins stage-in), DESIGN.md's "upload → script start". Same measure and table as
bench/event_latency_sqs.py.

    .venv/bin/python bench/event_latency.py --source ceph --puts 50
    .venv/bin/python bench/event_latency.py --source seaweedfs --puts 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for bench and tests.support

from bench.conveyor_runs import embedded_platform
from bench.harness import RESULTS, command_line, describe_machine, summarize_ms
from bench.workloads import COPY
from conveyor.model.event import utcnow
from conveyor.model.job import TERMINAL_STATES
from conveyor.model.service import Service

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
KEYS = {"access_key": "bench", "secret_key": "bench-secret"}


@contextmanager
def ceph_rgw(timings: dict[str, float]) -> Iterator[str]:
    """A fresh cluster's S3 endpoint; stopped and removed afterwards. Puts "start_s" in `timings`."""
    directory = Path(tempfile.mkdtemp(prefix="ceph-bench-", dir="/tmp")) / "cluster"
    env = {**os.environ, "ACCESS_KEY": KEYS["access_key"], "SECRET_KEY": KEYS["secret_key"]}
    try:
        up = [str(SCRIPTS / "ceph-rgw-up.sh"), str(directory), "0"]
        started = time.perf_counter()
        endpoint = subprocess.run(up, check=True, capture_output=True, text=True, env=env).stdout.strip()
        timings["start_s"] = round(time.perf_counter() - started, 2)
        yield endpoint
    finally:
        subprocess.run([str(SCRIPTS / "ceph-rgw-down.sh"), str(directory)], check=False)
        directory.parent.rmdir()


def measure(endpoint: str | None, puts: int, gap_s: float, bucket: str) -> tuple[list[float], list[float]]:
    """Seconds from each PUT's start to its job's creation, and to its job's start.

    `endpoint` None: the input is on the platform's own store (`minio.default`).
    """
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-ceph-latency-") as scratch,
        embedded_platform(
            Path(scratch), local={"runtime": "process"}, dispatch={"reconcile_interval_s": 0}
        ) as platform,
    ):
        provider_name = "s3.ceph" if endpoint else "minio.default"
        providers = {"s3": {"ceph": {"endpoint": endpoint, **KEYS, "events": "sns"}}} if endpoint else {}
        service = Service.model_validate(
            {
                "name": "latency",
                "image": "-",
                "script": COPY,
                "input": [{"storage_provider": provider_name, "path": f"{bucket}/in"}],
                "output": [{"path": "bench-out/out"}],
                "storage_providers": providers,
            }
        )
        platform.catalog.apply([service])
        creds = platform.s3_credentials
        s3: Any = boto3.client(
            "s3",
            endpoint_url=endpoint or creds.endpoint,
            aws_access_key_id=KEYS["access_key"] if endpoint else creds.access_key,
            aws_secret_access_key=KEYS["secret_key"] if endpoint else creds.secret_key,
            region_name="us-east-1",
        )
        put_at: dict[str, datetime] = {}
        for i in range(puts):
            key = f"in/f{i:05d}.txt"
            put_at[key] = utcnow()
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
            time.sleep(gap_s)
        while True:
            jobs = [r for _, r in platform.ledger.list_jobs("latency", limit=puts * 2)]
            if sum(1 for job in jobs if job.state in TERMINAL_STATES) >= puts:
                break
            time.sleep(0.05)
        platform.catalog.delete("latency")  # takes the topic and the notification down
        triggered = [job for job in jobs if job.trigger and job.started_at]
        created = [(job.created_at - put_at[job.trigger.ref.key]).total_seconds() for job in triggered]
        started = [(job.started_at - put_at[job.trigger.ref.key]).total_seconds() for job in triggered]
        return created, started


def radosgw_version() -> str:
    answer = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "radosgw"], capture_output=True, text=True)
    return answer.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--source", choices=["ceph", "seaweedfs"], default="ceph", help="the store whose notifications are timed"
    )
    parser.add_argument("--puts", type=int, default=50)
    parser.add_argument("--gap-s", type=float, nargs="+", default=[0.3, 0.02], help="one run per gap between PUTs")
    args = parser.parse_args()

    runs = []
    timings: dict[str, float] = {}
    with ceph_rgw(timings) if args.source == "ceph" else contextlib.nullcontext() as endpoint:
        for index, gap_s in enumerate(args.gap_s):
            created, started = measure(endpoint, args.puts, gap_s, bucket=f"latency-{index}")
            runs.append(
                {
                    "gap_s": gap_s,
                    "jobs": len(created),
                    "latency_ms": summarize_ms(created),
                    "put_to_job_start_ms": summarize_ms(started),
                }
            )

    result = {
        "benchmark": f"event_latency_{args.source}",
        "command": command_line(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "store": (
            f"Ceph RGW {radosgw_version()} (single node, memstore OSD), non-persistent SNS topic, HTTP push"
            if args.source == "ceph"
            else "the embedded SeaweedFS (weed mini), filer webhook"
        ),
        "measured": "job created_at (ledger) minus the start of the S3 PUT that triggered it",
        "store_start_s": timings.get("start_s"),
        "puts": args.puts,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"event_latency_{args.source}.json").write_text(json.dumps(result, indent=2) + "\n")
    path = "RGW SNS push" if args.source == "ceph" else "embedded SeaweedFS webhook"
    table = (
        f"| S3 PUT → {path} → job, {args.puts} PUTs one at a time | p50 | p99 | min | max |\n|---|---|---|---|---|\n"
        + "".join(
            f"| PUTs {run['gap_s'] * 1000:.0f} ms apart: {what} | "
            + " | ".join(f"{run[field][name]} ms" for name in ("p50", "p99", "min", "max"))
            + " |\n"
            for run in runs
            for what, field in (("job created", "latency_ms"), ("job started", "put_to_job_start_ms"))
        )
    )
    (RESULTS / f"event_latency_{args.source}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
