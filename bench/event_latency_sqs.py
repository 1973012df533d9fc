"""Event → job latency through S3 → SQS, against moto: from the start of each PUT to the job's
creation in the ledger (`created_at`).

An embedded platform (host processes, reconciler off) serves one service whose input is on moto's
S3 with `events: sqs`; PUTs go one at a time, `--gap-s` apart, while earlier jobs run. moto runs as
its own process (`--moto in-process` puts it in the platform's, as the tests do, where the two
compete for the interpreter). AWS's own S3 → SQS delivery is slower than moto's and not measured.

    .venv/bin/python bench/event_latency_sqs.py --puts 50
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform as host
import socket
import statistics
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
import httpx
from moto.server import ThreadedMotoServer

from conveyor.model.event import utcnow
from conveyor.model.job import TERMINAL_STATES
from conveyor.model.service import Service
from conveyor.platform.platform import Platform
from conveyor.settings import Settings

SCRIPT = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
RESULTS = Path(__file__).parent / "results"
KEYS = {"access_key": "bench", "secret_key": "bench-secret", "region": "us-east-1"}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[round(fraction * (len(ordered) - 1))]


@contextmanager
def moto_server(in_process: bool) -> Iterator[str]:
    """moto's endpoint, in this process (a thread) or in its own."""
    if in_process:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            yield "http://{}:{}".format(*server.get_host_and_port())
        finally:
            server.stop()
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(10)


def measure(endpoint: str, puts: int, gap_s: float) -> list[float]:
    """Seconds from each PUT's start to its job's creation."""
    with tempfile.TemporaryDirectory(prefix="conveyor-sqs-latency-") as scratch:
        settings = Settings(
            data_dir=Path(scratch) / "data",
            api={"port": 0},
            storage={"s3_port": 0},
            local={"runtime": "process"},
            dispatch={"reconcile_interval_s": 0},
        )
        platform = Platform(settings)
        platform.start()
        try:
            provider = {"endpoint": endpoint, **KEYS, "events": "sqs"}
            service = Service.model_validate(
                {
                    "name": "latency",
                    "image": "-",
                    "script": SCRIPT,
                    "input": [{"storage_provider": "s3.aws", "path": "bench-in/in"}],
                    "output": [{"storage_provider": "s3.aws", "path": "bench-out/out"}],
                    "storage_providers": {"s3": {"aws": provider}},
                }
            )
            platform.catalog.apply([service])
            s3: Any = boto3.client(
                "s3",
                endpoint_url=endpoint,
                aws_access_key_id=KEYS["access_key"],
                aws_secret_access_key=KEYS["secret_key"],
                region_name=KEYS["region"],
            )
            put_at: dict[str, datetime] = {}
            for i in range(puts):
                key = f"in/f{i:05d}.txt"
                put_at[key] = utcnow()
                s3.put_object(Bucket="bench-in", Key=key, Body=b"x")
                time.sleep(gap_s)
            while True:
                jobs = [r for _, r in platform.ledger.list_jobs("latency", limit=puts * 2)]
                if sum(1 for job in jobs if job.state in TERMINAL_STATES) >= puts:
                    break
                time.sleep(0.05)
            return [(job.created_at - put_at[job.trigger.ref.key]).total_seconds() for job in jobs if job.trigger]
        finally:
            platform.stop()


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(latencies) * 1000, 1),
        "p99": round(percentile(latencies, 0.99) * 1000, 1),
        "min": round(min(latencies) * 1000, 1),
        "max": round(max(latencies) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--puts", type=int, default=50)
    parser.add_argument("--gap-s", type=float, nargs="+", default=[0.3, 0.02], help="one run per gap between PUTs")
    parser.add_argument("--moto", choices=["process", "in-process"], default="process")
    args = parser.parse_args()

    runs = []
    for gap_s in args.gap_s:
        with moto_server(args.moto == "in-process") as endpoint:
            latencies = measure(endpoint, args.puts, gap_s)
        runs.append({"gap_s": gap_s, "jobs": len(latencies), "latency_ms": summary(latencies)})

    where = "the platform's" if args.moto == "in-process" else "its own"
    result = {
        "benchmark": "event_latency_sqs",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()}, {os.cpu_count()} cores, Python {host.python_version()}",
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),  # the machine is shared: context for the spread
        "store": f"moto 5.2.5 server (S3 + SQS) in {where} process",
        "measured": "job created_at (ledger) minus the start of the S3 PUT that triggered it",
        "puts": args.puts,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "event_latency_sqs.json").write_text(json.dumps(result, indent=2) + "\n")
    table = (
        f"| S3 PUT → SQS → job created, {args.puts} PUTs one at a time, moto in {where} process "
        "| p50 | p99 | min | max |\n|---|---|---|---|---|\n"
        + "".join(
            f"| PUTs {run['gap_s'] * 1000:.0f} ms apart | "
            + " | ".join(f"{run['latency_ms'][name]} ms" for name in ("p50", "p99", "min", "max"))
            + " |\n"
            for run in runs
        )
    )
    (RESULTS / "event_latency_sqs.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
