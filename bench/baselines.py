"""The baselines: the same script over the same local files, without Conveyor.

Each function runs one workload once, `workers` at a time, and returns the wall-clock seconds of
the run alone (inputs are laid out before the clock starts). A missing tool raises ToolMissing
with the command that installs it, so the report can say so instead of dropping the row.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

from bench.harness import REPO, ToolMissing
from bench.workloads import LocalJobs, run_script

XARGS_HINT = "apt-get install -y findutils"
PARALLEL_HINT = "apt-get install -y parallel (`make bench` installs it)"
LITHOPS_HINT = "pip install lithops (`make bench` installs the project's [bench] extra)"


def script_alone(jobs: LocalJobs) -> tuple[float, float]:
    """The script over every file, one after the other: wall seconds, and the scripts' CPU seconds.

    The floor is the CPU ÷ workers: what N files cost if the workers did nothing but the script.
    CPU, not wall time, because a serial run on a busy shared machine loses the CPU to others far
    more than a run that keeps both cores asking.
    """
    before = os.times()
    started = time.perf_counter()
    for source in jobs.inputs:
        run_script(str(jobs.script), str(source), str(jobs.output))
    wall = time.perf_counter() - started
    after = os.times()
    return wall, after.children_user + after.children_system - before.children_user - before.children_system


def process_pool(jobs: LocalJobs, workers: int) -> float:
    """A bare ProcessPoolExecutor whose workers start one `sh` per file: what a scientist would write."""
    arguments = [(str(jobs.script), str(source), str(jobs.output)) for source in jobs.inputs]
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_run_packed, arguments, chunksize=1))
    return time.perf_counter() - started


def _run_packed(arguments: tuple[str, str, str]) -> None:
    run_script(*arguments)


def xargs(jobs: LocalJobs, workers: int) -> float:
    """`xargs -P`: a fork and two execs (env, sh) per file, from a C parent."""
    tool = require_tool("xargs", XARGS_HINT)
    command = [tool, "-0", f"-P{workers}", "-I{}", *_env_command(jobs, "{}")]
    return _timed_with_stdin(command, jobs)


def gnu_parallel(jobs: LocalJobs, workers: int) -> float:
    """GNU parallel: the same command as xargs, from its Perl parent."""
    tool = require_tool("parallel", PARALLEL_HINT)
    command = [tool, "--will-cite", "-0", f"-j{workers}", *_env_command(jobs, "{}")]
    return _timed_with_stdin(command, jobs)


def _env_command(jobs: LocalJobs, placeholder: str) -> list[str]:
    return ["env", f"INPUT_FILE_PATH={placeholder}", f"TMP_OUTPUT_DIR={jobs.output}", "/bin/sh", str(jobs.script)]


def _timed_with_stdin(command: list[str], jobs: LocalJobs) -> float:
    names = b"".join(str(path).encode() + b"\0" for path in jobs.inputs)
    started = time.perf_counter()
    subprocess.run(command, input=names, check=True)
    return time.perf_counter() - started


def lithops_v1(jobs: LocalJobs, workers: int) -> float:
    """Lithops localhost, `localhost: {version: 1}`: worker processes fed through local storage."""
    return _lithops(jobs, workers, version=1)


def lithops_v2(jobs: LocalJobs, workers: int) -> float:
    """Lithops localhost's default (v2) mode."""
    return _lithops(jobs, workers, version=2)


def _lithops(jobs: LocalJobs, workers: int, *, version: int) -> float:
    """`FunctionExecutor.map` over the files, configured offline from a file written here.

    The clock includes creating the executor: a Lithops user pays it on every call.
    """
    require_lithops()
    import lithops

    arguments = [(str(jobs.script), str(source), str(jobs.output)) for source in jobs.inputs]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="bench-lithops-") as scratch:
        config = Path(scratch) / "lithops.yaml"
        config.write_text(yaml.safe_dump(lithops_config(workers, version)))
        started = time.perf_counter()
        executor = lithops.FunctionExecutor(config_file=str(config))
        executor.get_result(executor.map(run_script, arguments))  # Lithops unpacks each tuple
        elapsed = time.perf_counter() - started
        executor.clean()
    return elapsed


def lithops_config(workers: int, version: int) -> dict[str, dict[str, object]]:
    """Localhost compute and storage, this Python as the runtime: nothing reaches the network.

    `include_modules: none`: the workers import the bench from PYTHONPATH instead of unpacking
    shipped copies, which v2's concurrent workers rewrite under each other's imports (a run of
    1,000 calls failed on a half-written bench/workloads.py).
    """
    return {
        "lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING", "include_modules": "none"},
        "localhost": {"runtime": sys.executable, "worker_processes": workers, "version": version},
    }


def require_lithops() -> None:
    if importlib.util.find_spec("lithops") is None:
        raise ToolMissing(f"Lithops not installed: {LITHOPS_HINT}")


def require_tool(tool: str, hint: str) -> str:
    """The tool's path, or ToolMissing saying how to install it."""
    found = shutil.which(tool)
    if found is None:
        raise ToolMissing(f"`{tool}` not installed: {hint}")
    return found
