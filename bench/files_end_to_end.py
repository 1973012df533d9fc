"""N small files through Conveyor (put → job → output stored) against a bare process pool.

Both run the same trivial copy script with `sh`, two at a time on this machine's cores; the
baseline reads and writes local files, Conveyor goes through the embedded S3 store, its events,
the ledger, the dispatcher and the supervisor. Results go to bench/results/ as JSON and markdown.
The same two rows, with every other baseline beside them: `python -m bench.suite`.

    .venv/bin/python bench/files_end_to_end.py --files 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for bench and tests.support

from bench.baselines import process_pool
from bench.conveyor_runs import files_through
from bench.harness import RESULTS, command_line, describe_machine
from bench.workloads import W, lay_out


def baseline_process_pool(files: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        return process_pool(lay_out(Path(scratch), W, files), workers)


def conveyor_end_to_end(files: int, workers: int) -> tuple[float, float]:
    """Seconds from the first put to the last output stored, and the ledger's mean job time."""
    with tempfile.TemporaryDirectory() as scratch:
        run = files_through("process", W, files, workers, Path(scratch))
        return run.elapsed_s, run.mean_job_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    baseline, conveyor, job_means = [], [], []
    for _ in range(args.repeats):
        baseline.append(baseline_process_pool(args.files, args.workers))
        elapsed, mean_job = conveyor_end_to_end(args.files, args.workers)
        conveyor.append(elapsed)
        job_means.append(mean_job)

    result = {
        "benchmark": "files_end_to_end",
        "command": command_line(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "files": args.files,
        "workers": args.workers,
        "baseline_process_pool_s": baseline,
        "conveyor_process_runtime_s": conveyor,
        "conveyor_mean_job_s": job_means,
        "ratio_median": statistics.median(conveyor) / statistics.median(baseline),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "files_end_to_end.json").write_text(json.dumps(result, indent=2))
    table = (
        f"| {args.files} files of 1 KB, {args.workers} at a time | min | median | max |\n|---|---|---|---|\n"
        + "".join(
            f"| {name} | {min(v):.2f} s | {statistics.median(v):.2f} s | {max(v):.2f} s |\n"
            for name, v in (("bare ProcessPoolExecutor + sh", baseline), ("Conveyor, host processes", conveyor))
        )
        + f"\nConveyor / baseline (medians): **{result['ratio_median']:.2f}×**; "
        f"mean job (stage-in + script + stage-out): {statistics.mean(job_means) * 1000:.0f} ms\n"
    )
    (RESULTS / "files_end_to_end.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
