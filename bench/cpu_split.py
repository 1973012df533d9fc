"""Where the CPU of Conveyor's host-process path goes, per file, process by process.

On 2 cores a platform that spends more CPU per file than the work itself cannot be fast, so
this accounts the CPU seconds of one run of W (put N files → N outputs) to: the platform's
Python process, the job processes it starts (reaped children: the `sh` wrapper, the script, its
`cp` and `basename`), the embedded SeaweedFS, and the uploader (the user's client). The same
script in a bare process pool is measured beside it. Only the timed window counts: start-up and
shut-down are outside it. A companion to py-spy, which sees inside the Python process only.

    python -m bench.cpu_split --files 1000
    python -m bench.cpu_split --files 1000 --batch directory   # the service runs batches (each|directory)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.baselines import process_pool
from bench.conveyor_runs import copy_service, platform_for, uploader_for, wait_for_jobs
from bench.workloads import W, input_name, lay_out

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int, *, children: bool = False) -> float:
    """utime+stime of `pid` (or of its reaped children) in seconds, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    first = 13 if children else 11  # utime, stime at 11, 12; cutime, cstime at 13, 14 (0-based after the name)
    return (int(fields[first]) + int(fields[first + 1])) * TICK_S


def conveyor_split(files: int, batch: str | None = None) -> dict[str, float]:
    """CPU seconds per component during one run of W, and its wall time; `batch` a batch mode."""
    script = W.batch_script if batch == "directory" else W.script
    with tempfile.TemporaryDirectory() as scratch, platform_for("process", Path(scratch), 2) as platform:
        platform.catalog.apply([copy_service("bench", script, "bench-in/in", "bench-out/out", batch)])
        with uploader_for(platform) as uploader:
            weed = int((platform.layout.seaweedfs / "weed.pid").read_text())
            client = _uploader_pid(uploader)
            meters: dict[str, Callable[[], float]] = {
                "platform (Python)": lambda: cpu_s(os.getpid()),
                "job processes": lambda: cpu_s(os.getpid(), children=True),
                "SeaweedFS": lambda: cpu_s(weed),
                "uploader (the user's client)": lambda: cpu_s(client),
            }
            before = {name: meter() for name, meter in meters.items()}
            started = time.perf_counter()
            uploader.put_many("bench-in", [f"in/{input_name(i)}" for i in range(files)])
            wait_for_jobs(platform, "bench", files, timeout_s=60 + files * 2.0)
            split = {name: meter() - before[name] for name, meter in meters.items()}
            return split | {"wall": time.perf_counter() - started}


def pool_split(files: int) -> dict[str, float]:
    """CPU seconds of the pool's parent and of its workers with their `sh` children."""
    with tempfile.TemporaryDirectory() as scratch:
        jobs = lay_out(Path(scratch), W, files)
        before = os.times()
        wall = process_pool(jobs, 2)
        after = os.times()
    return {
        "parent (Python)": after.user + after.system - before.user - before.system,
        "workers and scripts": after.children_user
        + after.children_system
        - before.children_user
        - before.children_system,
        "wall": wall,
    }


def _uploader_pid(uploader: object) -> int:
    pool: ProcessPoolExecutor = uploader._pool  # type: ignore[attr-defined]
    return next(iter(pool._processes))  # type: ignore[attr-defined]


def show(title: str, split: dict[str, float], files: int) -> None:
    print(f"{title}: wall {split['wall']:.2f} s")
    total = sum(value for name, value in split.items() if name != "wall")
    for name, value in split.items():
        if name != "wall":
            print(f"  {name:32s} {value:7.2f} s  {value / files * 1000:6.2f} ms/file  {value / total:6.1%}")
    print(f"  {'total CPU':32s} {total:7.2f} s  {total / files * 1000:6.2f} ms/file")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--batch", choices=["each", "directory"], help="the service runs queued inputs in batches")
    args = parser.parse_args()
    show("bare ProcessPoolExecutor", pool_split(args.files), args.files)
    title = "Conveyor, host processes" + (f", batches ({args.batch})" if args.batch else "")
    show(title, conveyor_split(args.files, args.batch), args.files)


if __name__ == "__main__":
    main()
