"""10,000 events queued at once: the platform's peak memory and the API's latency while they drain.

Starts `conveyor up` (host processes), deploys one trivial service, puts N files as fast as 16
threads can, then samples every 0.2 s until every job is done: the `conveyor up` process's RSS
and the latency of `GET /system/services` and `GET /conveyor/v1/status`.

    .venv/bin/python bench/queue_backpressure.py --files 10000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import boto3
import httpx
from botocore.client import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for bench and tests.support

from bench.harness import RESULTS, command_line, describe_machine, percentile, status_kib
from bench.workloads import COPY
from tests.support.cli import Cli, cli_environment, start_up, stop_up

WORKFLOW = """\
functions:
  oscar:
  - local:
      name: drain
      image: unused
      script: copy.sh
      cpu: '0.5'
      input: [{path: queue/in}]
      output: [{path: queue/out}]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args()

    result = run(args.files) | {
        "benchmark": "queue_backpressure",
        "command": command_line(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "files": args.files,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "queue_backpressure.json").write_text(json.dumps(result, indent=2))
    table = (
        f"| {args.files} events queued at once | |\n|---|---|\n"
        f"| put rate (16 threads) | {result['put_per_s']:.0f} files/s |\n"
        f"| most jobs queued at one time | {result['max_queued']} |\n"
        f"| peak RSS of `conveyor up` (Python) | {result['peak_rss_mib']:.0f} MiB |\n"
        f"| RSS of the embedded SeaweedFS at the end | {result['seaweedfs_rss_mib']:.0f} MiB |\n"
        f"| API latency while draining, p50 / p99 / max | {result['api_p50_ms']:.0f} / {result['api_p99_ms']:.0f} / "
        f"{result['api_max_ms']:.0f} ms |\n"
        f"| drain: first put → last job done | {result['drain_s']:.0f} s ({result['jobs_per_s']:.1f} jobs/s) |\n"
    )
    (RESULTS / "queue_backpressure.md").write_text(table)
    print(table)


def run(files: int) -> dict[str, float | int]:
    """Start `conveyor up`, queue `files` events, measure while they drain, stop it."""
    with tempfile.TemporaryDirectory(prefix="conveyor-queue-") as scratch:
        work = Path(scratch)
        (work / "copy.sh").write_text(COPY + "\n")
        (work / "workflow.yaml").write_text(WORKFLOW)
        env = cli_environment(work)
        up = start_up(env, work)
        try:
            return measure(env, work, up.pid, files)
        finally:
            stop_up(up, work)


def measure(env: dict[str, str], work: Path, up_pid: int, files: int) -> dict[str, float | int]:
    cli = Cli(env, work)
    cli("apply", str(work / "workflow.yaml"))
    data = Path(env["CONVEYOR_DATA_DIR"])
    running = json.loads((data / "platform.json").read_text())
    creds = json.loads((data / "credentials.json").read_text())
    api = httpx.Client(base_url=running["api_url"], auth=(creds["admin_user"], creds["admin_password"]), timeout=60)
    s3 = boto3.client(
        "s3",
        endpoint_url=running["s3_endpoint"],
        aws_access_key_id=creds["s3_access_key"],
        aws_secret_access_key=creds["s3_secret_key"],
        region_name="us-east-1",
        config=Config(max_pool_connections=32, s3={"addressing_style": "path"}),
    )
    latencies: list[float] = []
    max_queued = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal max_queued
        while not done.is_set():
            for path in ("/system/services", "/conveyor/v1/status"):
                started = time.perf_counter()
                answer = api.get(path)
                latencies.append((time.perf_counter() - started) * 1000)
                if path.endswith("status"):
                    max_queued = max(max_queued, answer.json()["jobs"].get("drain", {}).get("queued", 0))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    sampler.start()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket="queue", Key=f"in/f{i:06d}", Body=b"x" * 1024), range(files)))
    put_s = time.perf_counter() - started
    while True:
        counts = api.get("/conveyor/v1/status").json()["jobs"].get("drain", {})
        if counts.get("succeeded", 0) + counts.get("failed", 0) + counts.get("dead", 0) >= files:
            break
        time.sleep(1)
    drain_s = time.perf_counter() - started
    done.set()
    sampler.join()
    weed_pid = int((data / "seaweedfs" / "weed.pid").read_text())
    return {
        "put_per_s": files / put_s,
        "max_queued": max_queued,
        "peak_rss_mib": status_kib(up_pid, "VmHWM") / 1024,
        "seaweedfs_rss_mib": status_kib(weed_pid, "VmRSS") / 1024,
        "api_p50_ms": statistics.median(latencies),
        "api_p99_ms": percentile(latencies, 0.99),
        "api_max_ms": max(latencies),
        "api_samples": len(latencies),
        "drain_s": drain_s,
        "jobs_per_s": files / drain_s,
        "succeeded": counts.get("succeeded", 0),
    }


if __name__ == "__main__":
    main()
