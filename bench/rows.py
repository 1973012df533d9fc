"""Every row of the suite, by key: what it runs and how one measurement of it is taken.

Throughput rows run a workload (W, W2) over N files and return `elapsed_s`; the floor row returns
the scripts' CPU divided by the workers, so every row reads as "seconds for N files, 2 at a time".
Slow rows (a container or a Lithops v2 call per file: ≥ 0.1 s each) take `slow_files` instead of
`files`, and the report compares rows per file. Scenario rows (latency, chain, queue) run once per invocation: each
already measures hundreds of uploads or thousands of events.

Conveyor and the engines' SDK are imported inside the rows that use them, so a baseline's process
tree holds nothing of them and its memory is its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from bench import baselines
from bench.harness import ToolMissing
from bench.workloads import LocalJobs, Workload, lay_out

Measure = Callable[["Params", Path], dict[str, Any]]


@dataclass(frozen=True)
class Params:
    """What one measurement needs; the suite passes it to the child process on its command line."""

    workload: Workload
    files: int
    workers: int
    uploads: int
    queue_events: int


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    kind: Literal["floor", "baseline", "conveyor", "scenario"]
    measure: Measure
    slow: bool = False
    """Costs ≥ 0.1 s per file: runs `slow_files` files instead of `files`."""
    requires: Callable[[], object] | None = None
    """Raises ToolMissing when the row's tool is not installed; checked before anything runs."""

    def missing(self) -> str | None:
        """How to install what the row needs, or None when it can run."""
        try:
            if self.requires is not None:
                self.requires()
        except ToolMissing as missing:
            return str(missing)
        return None

    @property
    def is_throughput(self) -> bool:
        return self.kind != "scenario"


def _local(run: Callable[[LocalJobs, int], float]) -> Measure:
    """A baseline over local files; fails if an output is missing, so no row is fast by doing less."""

    def measure(params: Params, scratch: Path) -> dict[str, Any]:
        jobs = lay_out(scratch / "jobs", params.workload, params.files)
        elapsed = run(jobs, params.workers)
        if jobs.count_outputs() != params.files:
            raise RuntimeError(f"{jobs.count_outputs()} outputs for {params.files} inputs")
        return {"elapsed_s": elapsed}

    return measure


def _engine(name: str) -> Callable[[], None]:
    def check() -> None:
        from bench.containers import require_engine

        require_engine("dockerd" if name == "dockerd" else "podman")

    return check


def _podman_run(jobs: LocalJobs, workers: int) -> float:
    from bench.containers import podman_run_per_file

    return podman_run_per_file(jobs, workers)


def _floor(params: Params, scratch: Path) -> dict[str, Any]:
    """N times the script's CPU per file, divided by the workers (see baselines.script_alone)."""
    jobs = lay_out(scratch / "jobs", params.workload, params.files)
    wall, cpu = baselines.script_alone(jobs)
    if jobs.count_outputs() != params.files:
        raise RuntimeError(f"{jobs.count_outputs()} outputs for {params.files} inputs")
    return {"elapsed_s": cpu / params.workers, "serial_s": wall, "script_cpu_s": cpu}


def _conveyor(runtime: str, batch: str | None = None) -> Measure:
    def measure(params: Params, scratch: Path) -> dict[str, Any]:
        from bench.conveyor_runs import files_through  # Conveyor is imported only by its own rows

        run = files_through(runtime, params.workload, params.files, params.workers, scratch, batch)
        return {"elapsed_s": run.elapsed_s, "mean_job_s": run.mean_job_s}

    return measure


def _latency(runtime: str) -> Measure:
    def measure(params: Params, scratch: Path) -> dict[str, Any]:
        from bench import latency

        return latency.single_uploads(runtime, params.uploads, scratch)

    return measure


def _chain(params: Params, scratch: Path) -> dict[str, Any]:
    from bench import latency

    return latency.chain(params.uploads, scratch)


def _queue(params: Params, scratch: Path) -> dict[str, Any]:
    from bench import queue_backpressure

    return queue_backpressure.run(params.queue_events)


_XARGS = partial(baselines.require_tool, "xargs", baselines.XARGS_HINT)
_PARALLEL = partial(baselines.require_tool, "parallel", baselines.PARALLEL_HINT)
_LITHOPS = baselines.require_lithops
ROWS = [
    Row("floor", "floor: the script's own CPU ÷ workers", "floor", _floor),
    Row("pool", "ProcessPoolExecutor + subprocess", "baseline", _local(baselines.process_pool)),
    Row("xargs", "xargs -P", "baseline", _local(baselines.xargs), requires=_XARGS),
    Row("parallel", "GNU parallel", "baseline", _local(baselines.gnu_parallel), requires=_PARALLEL),
    Row("lithops-v1", "Lithops localhost v1", "baseline", _local(baselines.lithops_v1), requires=_LITHOPS),
    Row("lithops-v2", "Lithops localhost v2 (default)", "baseline", _local(baselines.lithops_v2), True, _LITHOPS),
    Row("podman-run", "podman run --rm per file", "baseline", _local(_podman_run), True, _engine("podman")),
    Row("conveyor-process", "Conveyor, host processes", "conveyor", _conveyor("process")),
    Row(
        "conveyor-batch-each",
        "Conveyor, host processes, batches of ≤ 20 (each)",
        "conveyor",
        _conveyor("process", "each"),
    ),
    Row(
        "conveyor-batch-dir",
        "Conveyor, host processes, batches of ≤ 20 (directory)",
        "conveyor",
        _conveyor("process", "directory"),
    ),
    Row("conveyor-podman", "Conveyor, podman (Docker API)", "conveyor", _conveyor("podman"), True, _engine("podman")),
    Row("conveyor-dockerd", "Conveyor, dockerd", "conveyor", _conveyor("dockerd"), True, _engine("dockerd")),
    Row("latency-process", "single uploads, host processes", "scenario", _latency("process")),
    Row("latency-podman", "single uploads, podman", "scenario", _latency("podman"), True, _engine("podman")),
    Row("latency-dockerd", "single uploads, dockerd", "scenario", _latency("dockerd"), True, _engine("dockerd")),
    Row("chain", "3-stage chain, host processes, single uploads", "scenario", _chain),
    Row("queue", "events queued at once (`conveyor up`, host processes)", "scenario", _queue),
]
BY_KEY = {row.key: row for row in ROWS}
