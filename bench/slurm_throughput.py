"""Throughput of trivial jobs through Slurm: bare sbatch (Slurm's own floor), then Conveyor's Slurm
backend with one sbatch per job, with job arrays, and with batches (several inputs per Slurm job),
in the same invocation on the same cluster.

A single-node Slurm (scripts/slurm-up.sh, as root) runs every variant; Conveyor's jobs copy a
1 KB file from the embedded store to it (stage-in, script, stage-out on the "node"). Results go to
bench/results/slurm_throughput.{json,md}.

    .venv/bin/python bench/slurm_throughput.py --jobs 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from conveyor.model.event import ObjectRef
from conveyor.model.job import TERMINAL_STATES, JobState
from conveyor.model.service import Service
from conveyor.platform.platform import Platform
from conveyor.settings import Settings

RESULTS = Path(__file__).parent / "results"
SCRIPTS = Path(__file__).parent.parent / "scripts"
SCRIPT = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"'


@contextmanager
def slurm_cluster() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="conveyor-bench-slurm-"))
    subprocess.run(["bash", str(SCRIPTS / "slurm-up.sh"), str(directory)], check=True, capture_output=True)
    os.environ["SLURM_CONF"] = str(directory / "slurm.conf")
    try:
        yield directory
    finally:
        subprocess.run(["bash", str(SCRIPTS / "slurm-down.sh"), str(directory)], check=False)


def wait_for_empty_queue() -> None:
    while subprocess.run(
        ["squeue", "--me", "--noheader", "--states=PENDING,RUNNING,CONFIGURING,COMPLETING"],
        capture_output=True, text=True, check=True,
    ).stdout.strip():  # fmt: skip
        time.sleep(0.1)


def bare_sbatch(jobs: int, scratch: Path, array: bool) -> float:
    """Seconds from the first submission until Slurm has run `jobs` trivial jobs."""
    started = time.perf_counter()
    if array:
        subprocess.run(
            ["sbatch", "--parsable", f"--array=0-{jobs - 1}", f"--output={scratch}/%A_%a.out", "--wrap", "true"],
            check=True, capture_output=True,
        )  # fmt: skip
    else:
        for _ in range(jobs):
            subprocess.run(
                ["sbatch", "--parsable", f"--output={scratch}/%j.out", "--wrap", "true"],
                check=True,
                capture_output=True,
            )
    wait_for_empty_queue()
    return time.perf_counter() - started


BATCH = {"max_files": 20, "mode": "each"}
BATCH_PENDING = 4
"""Slurm jobs of the batched service at once: inputs queue behind them and go in batches."""


def conveyor(
    jobs: int, scratch: Path, array_window_s: float, *, batch: dict[str, object] | None = None, pending: int = 0
) -> tuple[float, int]:
    """Seconds from the first put until every job succeeded, and the jobs that did."""
    settings = Settings(
        data_dir=scratch / f"data-{array_window_s}-{bool(batch)}",
        api={"port": 0},
        storage={"s3_port": 0},
        local={"runtime": "process"},
        backend="slurm",
        slurm={
            "enabled": True,
            "max_pending_per_service": pending or jobs,
            "poll_interval_s": 0.5,
            "array_window_s": array_window_s,
        },
        dispatch={"reconcile_interval_s": 0},
    )
    platform = Platform(settings)
    platform.start()
    try:
        service = Service.model_validate(
            {"name": "trivial", "image": "-", "script": SCRIPT, "input": [{"path": "bench/in"}],
             "output": [{"path": "bench/out"}], "batch": batch}
        )  # fmt: skip
        platform.catalog.apply([service])
        body = os.urandom(512).hex().encode()
        started = time.perf_counter()
        for index in range(jobs):
            platform.storage.default.put_bytes(ObjectRef.parse(f"bench/in/f{index:05d}.txt"), body)
        while True:
            records = [record for _, record in platform.ledger.list_jobs("trivial", limit=jobs * 2)]
            if len(records) >= jobs and all(record.state in TERMINAL_STATES for record in records):
                break
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        return elapsed, sum(record.state == JobState.SUCCEEDED for record in records)
    finally:
        platform.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--array-window-s", type=float, default=0.5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the test cluster's daemons run as root (scripts/slurm-up.sh)")

    rows = []
    with slurm_cluster(), tempfile.TemporaryDirectory(prefix="conveyor-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        for label, run in (
            ("sbatch --wrap true, one per job (Slurm's floor)", lambda: (bare_sbatch(args.jobs, scratch, False), None)),
            ("sbatch --array --wrap true (Slurm's floor)", lambda: (bare_sbatch(args.jobs, scratch, True), None)),
            ("Conveyor, one sbatch per job", lambda: conveyor(args.jobs, scratch, 0.0)),
            (f"Conveyor, job arrays ({args.array_window_s} s window)",
             lambda: conveyor(args.jobs, scratch, args.array_window_s)),
            (f"Conveyor, batches of ≤ {BATCH['max_files']} inputs per Slurm job, {BATCH_PENDING} at once",
             lambda: conveyor(args.jobs, scratch, 0.0, batch=BATCH, pending=BATCH_PENDING)),
        ):  # fmt: skip
            seconds, succeeded = run()
            rows.append(
                {"variant": label, "seconds": round(seconds, 2), "jobs_per_s": round(args.jobs / seconds, 2),
                 "succeeded": succeeded}
            )  # fmt: skip
            print(rows[-1], flush=True)

    floor = rows[0]["seconds"]
    result = {
        "benchmark": "slurm_throughput",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()}, {os.cpu_count()} cores, Python {host.python_version()}",
        "cluster": f"single-node Slurm 22.05 (scripts/slurm-up.sh): {os.environ.get('SLURM_CPUS') or os.cpu_count()} "
        "CPUs, one per job",
        "jobs": args.jobs,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "slurm_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    table = (
        f"| {args.jobs} trivial jobs through Slurm ({result['machine']}) | wall | jobs/s | × sbatch floor |\n"
        "|---|---|---|---|\n"
        + "".join(
            f"| {row['variant']} | {row['seconds']} s | {row['jobs_per_s']} | {row['seconds'] / floor:.2f} |\n"
            for row in rows
        )
        + f"\n`{result['command']}`, {result['when']}\n"
    )
    (RESULTS / "slurm_throughput.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
