"""Reading small objects from the embedded SeaweedFS: boto3 through the S3 gateway vs the filer's HTTP API.

Every job stages its input in, so one GET per file is on Conveyor's per-file path. This puts N
objects of `--size` bytes, then reads them all `--repeats` times each way, interleaved, and
reports per GET: this process's CPU, SeaweedFS' CPU (from /proc) and wall time. One reader
thread, as a job's supervisor has. Results go to bench/results/filer-reads.{json,md}.

    .venv/bin/python -m bench.filer_reads --objects 500 --size 1024 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import command_line, describe_machine
from conveyor.model.event import ObjectRef
from conveyor.storage.embedded import EmbeddedSeaweed, WebhookTarget
from conveyor.storage.s3 import S3Credentials, S3Provider
from conveyor.storage.seaweedfs import FilerReadS3Provider

RESULTS = Path(__file__).parent / "results"
BUCKET = "reads"


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(read: Callable[[ObjectRef, Path], Path], refs: list[ObjectRef], dest: Path, weed_pid: int) -> dict:
    own, weed, wall = time.process_time(), process_cpu_s(weed_pid), time.perf_counter()
    for ref in refs:
        read(ref, dest)
    count = len(refs)
    return {
        "client_cpu_ms": (time.process_time() - own) / count * 1000,
        "seaweedfs_cpu_ms": (process_cpu_s(weed_pid) - weed) / count * 1000,
        "wall_ms": (time.perf_counter() - wall) / count * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=500)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        store = EmbeddedSeaweed(
            Path(scratch) / "seaweedfs",
            s3_port=0,
            access_key="benchkey",
            secret_key="benchsecret",
            webhook=WebhookTarget("http://127.0.0.1:9/nowhere", "unused"),
        )
        store.start()
        try:
            credentials = S3Credentials(endpoint=store.s3_endpoint, access_key="benchkey", secret_key="benchsecret")
            s3 = S3Provider(credentials)
            filer = FilerReadS3Provider(credentials, filer_url=store.filer_url)
            s3.ensure_bucket(BUCKET)
            refs = [ObjectRef(bucket=BUCKET, key=f"in/f{i:05d}.bin") for i in range(args.objects)]
            for ref in refs:
                s3.put_bytes(ref, os.urandom(args.size))
            ways = {"boto3 via the S3 gateway": s3.download, "httpx via the filer": filer.download}
            runs: dict[str, list[dict]] = {name: [] for name in ways}
            dest = Path(scratch) / "read.bin"
            weed_pid = int(store.pid_path.read_text())
            for _ in range(args.repeats):
                for name, read in ways.items():
                    runs[name].append(measure(read, refs, dest, weed_pid))
            s3.close()
            filer.close()
        finally:
            store.stop()

    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    result = {"command": command_line("bench.filer_reads"), "machine": describe_machine(), "args": vars(args)}
    result |= {"runs": runs, "medians": medians}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "filer-reads.json").write_text(json.dumps(result, indent=2))
    baseline = medians["boto3 via the S3 gateway"]
    baseline_cpu = baseline["client_cpu_ms"] + baseline["seaweedfs_cpu_ms"]
    lines = [
        f"# Small-object reads from the embedded SeaweedFS ({args.objects} × {args.size} B, median of {args.repeats})",
        "",
        f"Machine: {result['machine']}. Command: `{result['command']}`",
        "",
        "| way | this process CPU ms/GET | SeaweedFS CPU ms/GET | wall ms/GET | CPU (both) vs boto3 |",
        "|---|---|---|---|---|",
    ]
    for name, m in medians.items():
        ratio = (m["client_cpu_ms"] + m["seaweedfs_cpu_ms"]) / baseline_cpu
        lines.append(
            f"| {name} | {m['client_cpu_ms']:.2f} | {m['seaweedfs_cpu_ms']:.2f} | {m['wall_ms']:.2f} | {ratio:.2f}× |"
        )
    (RESULTS / "filer-reads.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
