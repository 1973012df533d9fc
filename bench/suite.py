"""Conveyor against real baselines, on this machine, in one invocation.

Every row runs the same workload: N files of 1 KB, the same `sh` script, 2 at a time.
W is a trivial copy (what each platform adds per file); W2 adds ~50 ms of deterministic CPU
per file (how close to the compute floor a platform gets). Each measurement runs in a fresh
process; repeats are interleaved (all rows, then all rows again) so that a burst of load from
another user of the machine spreads over rows instead of hitting one. Compare ratios, not
seconds: only ratios between rows of the same invocation survive a noisy machine.

Throughput rows (per workload):
  floor             the script's own CPU (measured serially), divided by the workers
  pool              ProcessPoolExecutor + subprocess over local files
  xargs, parallel   xargs -P / GNU parallel over local files
  lithops-v1/-v2    Lithops localhost, offline, this Python as runtime
  podman-run        one `podman run --rm` per file (the containers' reference)
  conveyor-process  put N files into a service's input → N outputs stored; host processes
  conveyor-batch-each, conveyor-batch-dir
                    the same, the service running queued inputs in batches of up to 20
                    (`batch.mode` each: the script per input; directory: once per batch)
  conveyor-podman   the same with containers through podman's Docker API
  conveyor-dockerd  the same with dockerd
Scenario rows (once per invocation):
  latency-process, latency-podman, latency-dockerd
                    single uploads: PUT → job created / script start / output stored
  chain             3 services in a chain: what each hop adds
  queue             events queued at once: peak memory and API latency while draining

Results: bench/results/suite.json, suite.md and suite.png (or --out DIR).
A row whose tool is missing is reported as not installed, with how to install it.
Exit status: 0 when every selected row that can run ran; 1 when one failed.

Examples:
  python -m bench.suite                          # everything: about 30 minutes on 2 cores
  python -m bench.suite --quick                  # every row, tiny N, 1 repeat: about 2 minutes
  python -m bench.suite --only pool,conveyor-process --files 300 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import PSS_SAMPLE_S, REPO, RESULTS, command_line, describe_machine, tree_pss_kib
from bench.report import Report, write_report
from bench.rows import BY_KEY, ROWS, Row
from bench.workloads import WORKLOADS

QUICK_OUT = Path(tempfile.gettempdir()) / "conveyor-bench-quick"
"""Quick runs never overwrite the committed results of a full run."""
PARAMS = ("files", "slow_files", "repeats", "workers", "uploads", "queue_events", "workloads")
FULL = {
    "files": 1000,
    "slow_files": 100,
    "repeats": 3,
    "uploads": 300,
    "queue_events": 10_000,
    "workloads": "w,w2",
}
QUICK = {"files": 10, "slow_files": 4, "repeats": 1, "uploads": 5, "queue_events": 50, "workloads": "w"}


@dataclass(frozen=True)
class Task:
    """One measurement to take: a row, for a workload (None for scenario rows), at one repeat."""

    row: Row
    workload: str | None
    repeat: int

    def describe(self) -> str:
        return " ".join(part for part in (self.workload, self.row.key, f"#{self.repeat + 1}") if part)


@dataclass
class Outcome:
    task: Task
    result: dict[str, Any] = field(default_factory=dict)
    peak_pss_mib: float = 0.0
    wall_s: float = 0.0
    error: str | None = None


def _quick_help() -> str:
    return ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in QUICK.items())


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.suite", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, metavar="N", help="files per throughput run (default 1000)")
    parser.add_argument(
        "--slow-files", type=int, metavar="N", help="files per run of a slow row: containers, Lithops v2 (default 100)"
    )
    parser.add_argument(
        "--repeats", type=int, metavar="R", help="measurements per throughput row and workload (default 3)"
    )
    parser.add_argument("--only", metavar="ROWS", help="comma-separated row keys (see above); default: all rows")
    parser.add_argument("--workloads", metavar="W[,W2]", help="comma-separated: w, w2 (default both)")
    parser.add_argument(
        "--uploads", type=int, metavar="N", help="single uploads for latency and chain rows (default 300)"
    )
    parser.add_argument(
        "--queue-events", type=int, metavar="N", help="events queued at once for the queue row (default 10000)"
    )
    parser.add_argument("--workers", type=int, metavar="N", default=2, help="jobs at a time, for every row (default 2)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test of the harness, not of the numbers: " + _quick_help()
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help=f"where suite.json/.md/.png go (default {RESULTS}; with --quick {QUICK_OUT})",
    )
    args = parser.parse_args(argv)
    defaults: dict[str, object] = {**QUICK, "out": QUICK_OUT} if args.quick else {**FULL, "out": RESULTS}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def select_rows(only: str | None) -> list[Row]:
    if not only:
        return ROWS
    keys = [key.strip() for key in only.split(",") if key.strip()]
    unknown = [key for key in keys if key not in BY_KEY]
    if unknown:
        raise SystemExit(f"unknown row(s) {', '.join(unknown)}; rows are: {', '.join(BY_KEY)}")
    return [BY_KEY[key] for key in keys]


def plan(rows: list[Row], workloads: list[str], repeats: int) -> list[Task]:
    """Throughput rows interleaved repeat by repeat, then each scenario row once."""
    tasks = [
        Task(row, workload, repeat)
        for repeat in range(repeats)
        for workload in workloads
        for row in rows
        if row.is_throughput
    ]
    return tasks + [Task(row, None, 0) for row in rows if not row.is_throughput]


def child_command(task: Task, args: argparse.Namespace) -> list[str]:
    files = args.slow_files if task.row.slow else args.files
    return [
        sys.executable,
        "-m",
        "bench.run_row",
        task.row.key,
        "--workload",
        task.workload or "w",
        "--files",
        str(files),
        "--workers",
        str(args.workers),
        "--uploads",
        str(args.uploads),
        "--queue-events",
        str(args.queue_events),
    ]


def timeout_for(task: Task, args: argparse.Namespace) -> float:
    """Generous: a timeout is for a hung run, never for a slow one (Lithops v2 takes ~0.3 s per file)."""
    if task.row.key == "queue":
        return 600 + args.queue_events * 0.3
    if not task.row.is_throughput:
        return 300 + args.uploads * 5
    return 300 + (args.slow_files * 3 if task.row.slow else args.files * 1.0)


def measure(task: Task, args: argparse.Namespace) -> Outcome:
    """Run one measurement in a child process while weighing its process tree."""
    outcome = Outcome(task)
    started = time.perf_counter()
    child = subprocess.Popen(
        child_command(task, args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = _PeakSampler(child.pid)
    try:
        stdout, stderr = child.communicate(timeout=timeout_for(task, args))
    except subprocess.TimeoutExpired:
        child.kill()
        stdout, stderr = child.communicate()
        outcome.error = f"timed out after {timeout_for(task, args):.0f} s"
    finally:
        outcome.peak_pss_mib = peak.stop() / 1024
    outcome.wall_s = time.perf_counter() - started
    if outcome.error is None:
        outcome.result, outcome.error = _parse_child(child.returncode, stdout, stderr)
    # A run shorter than the first samples still has a weight: its runner's own peak.
    outcome.peak_pss_mib = max(outcome.peak_pss_mib, outcome.result.get("runner_peak_rss_mib", 0.0))
    return outcome


def _parse_child(code: int, stdout: str, stderr: str) -> tuple[dict[str, Any], str | None]:
    lines = stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if code == 0 and result:
        return result, None
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    return {}, f"exit code {code}:\n{tail}"


class _PeakSampler:
    """Largest PSS of a process tree, sampled in a thread until stop().

    Sampling starts every 10 ms and slows down to PSS_SAMPLE_S, so a run of a few hundred
    milliseconds is weighed too, without a long run paying for frequent /proc scans.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = 0.01
        while not self._done.wait(interval):
            self.peak_kib = max(self.peak_kib, tree_pss_kib(self.pid))
            interval = min(PSS_SAMPLE_S, interval * 1.5)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak_kib


def progress(index: int, total: int, outcome: Outcome) -> None:
    result = outcome.result
    what = (f"{result['elapsed_s']:.2f} s" if "elapsed_s" in result else "done") if not outcome.error else "FAILED"
    print(
        f"[{index}/{total}] {outcome.task.describe()}: {what} (peak {outcome.peak_pss_mib:.0f} MiB, "
        f"wall {outcome.wall_s:.1f} s)",
        file=sys.stderr,
        flush=True,
    )
    if outcome.error:
        print(outcome.error, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rows = select_rows(args.only)
    workloads = [key.strip() for key in args.workloads.split(",")]
    if unknown := [key for key in workloads if key not in WORKLOADS]:
        raise SystemExit(f"unknown workload(s) {', '.join(unknown)}; workloads are: {', '.join(WORKLOADS)}")
    missing = {row.key: hint for row in rows if (hint := row.missing())}
    for key, hint in missing.items():
        print(f"{key}: {hint}", file=sys.stderr)
    tasks = plan([row for row in rows if row.key not in missing], workloads, args.repeats)
    started, when = time.perf_counter(), datetime.now(UTC)
    outcomes = []
    for index, task in enumerate(tasks, 1):
        outcomes.append(measure(task, args))
        progress(index, len(tasks), outcomes[-1])
    report = Report(
        when=when.isoformat(timespec="seconds"),
        command=command_line("bench.suite"),
        machine=describe_machine(),
        params={name: getattr(args, name) for name in PARAMS},
        duration_s=time.perf_counter() - started,
        rows=rows,
        workloads=[WORKLOADS[key] for key in workloads],
        outcomes=outcomes,
        missing=missing,
    )
    print(write_report(report, args.out))
    return 1 if any(outcome.error for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
