"""N small files through Conveyor (put → job → output stored) against a bare process pool.

Both run the same trivial copy script with `sh`, two at a time on this machine's cores; the
baseline reads and writes local files, Conveyor goes through the embedded S3 store, its events,
the ledger, the dispatcher and the supervisor. Results go to bench/results/ as JSON and markdown.

    .venv/bin/python bench/files_end_to_end.py --files 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from conveyor.model.event import ObjectRef
from conveyor.model.job import TERMINAL_STATES
from conveyor.model.service import Service
from conveyor.platform.platform import Platform
from conveyor.settings import Settings

SCRIPT = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
RESULTS = Path(__file__).parent / "results"


def copy_one(paths: tuple[str, str]) -> int:
    source, target = paths
    env = {"INPUT_FILE_PATH": source, "TMP_OUTPUT_DIR": target, "PATH": os.environ["PATH"]}
    return subprocess.run(["/bin/sh", "-c", SCRIPT], env=env, check=True).returncode


def baseline_process_pool(files: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "out").mkdir()
        sources = []
        for i in range(files):
            path = root / f"f{i:05d}.txt"
            path.write_bytes(os.urandom(512).hex().encode())
            sources.append((str(path), str(root / "out")))
        started = time.perf_counter()
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(copy_one, sources, chunksize=1))
        return time.perf_counter() - started


def conveyor_end_to_end(files: int, workers: int) -> tuple[float, float]:
    """Seconds from the first put to the last output stored, and the ledger's mean job time."""
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(
            data_dir=Path(scratch) / "data",
            api={"port": 0},
            storage={"s3_port": 0},
            local={"runtime": "process", "cpus": float(workers)},
        )
        platform = Platform(settings)
        platform.start()
        try:
            svc = Service(name="copy", image="-", script=SCRIPT, cpu="1", input=[{"path": "bench/in"}],
                          output=[{"path": "bench/out"}])  # fmt: skip
            platform.apply([svc])
            store = platform.storage.default
            payload = os.urandom(512).hex().encode()
            started = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda i: store.put_bytes(ObjectRef.parse(f"bench/in/f{i:05d}.txt"), payload), range(files)
                    )
                )
            while True:
                counts = platform.ledger.count_jobs("copy").get("copy", {})
                if sum(n for state, n in counts.items() if state in TERMINAL_STATES) >= files:
                    break
                time.sleep(0.02)
            elapsed = time.perf_counter() - started
            jobs = [r for _, r in platform.ledger.list_jobs("copy", limit=files)]
            assert sum(1 for _ in store.list("bench", "out/")) >= files, "outputs missing"
            return elapsed, statistics.mean(j.duration_s or 0 for j in jobs)
        finally:
            platform.stop()


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
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()}, {os.cpu_count()} cores, Python {host.python_version()}",
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
