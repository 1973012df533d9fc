"""The embedded store killed in the middle of a burst: how long until it serves again, what the outage
costs the burst, and what is lost (nothing, if the platform heals).

N files are put into a two-service chain (copy → copy) by a user who tries an upload again while the
store does not answer; SeaweedFS gets SIGKILL when a third of them are in. The same burst without a
kill runs first, in the same invocation, as the baseline.

    .venv/bin/python -m bench.store_crash --files 2000

Results: bench/results/store_crash.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.conveyor_runs import embedded_platform
from bench.harness import RESULTS, command_line, describe_machine
from conveyor.errors import StorageError
from conveyor.model.event import ObjectRef
from conveyor.model.job import JobState
from conveyor.model.service import Service
from conveyor.platform.platform import Platform

COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
STAGES = ("first", "second")


def chain() -> list[Service]:
    paths = [("crash/in", "crash/mid"), ("crash/mid", "crash/out")]
    return [
        Service.model_validate(
            {"name": name, "image": "busybox", "script": COPY, "input": [{"path": i}], "output": [{"path": o}]}
        )
        for name, (i, o) in zip(STAGES, paths, strict=True)
    ]


def burst(files: int, *, kill: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch, embedded_platform(Path(scratch), local={"runtime": "process"}) as p:
        p.catalog.apply(chain())
        started = time.perf_counter()
        recovered_s = None
        failed_puts = 0
        for index in range(files):
            if kill and index == files // 3:
                os.kill(int((p.layout.seaweedfs / "weed.pid").read_text()), signal.SIGKILL)
                clock = ThreadPoolExecutor(1)
                recovered = clock.submit(_seconds_until_back, p, time.perf_counter())
            failed_puts += _put_until_stored(p, f"crash/in/{index:06d}.txt", f"payload {index}")
        if kill:
            recovered_s = recovered.result()
            clock.shutdown()
        counts = _wait_for_all(p, files)
        wall = time.perf_counter() - started
        return {"wall_s": round(wall, 2), "recovered_s": recovered_s, "failed_puts": failed_puts} | counts


def _seconds_until_back(platform: Platform, killed_at: float, timeout_s: float = 120) -> float:
    """From the kill until the watchdog has the store serving again (noticing included)."""
    deadline = time.monotonic() + timeout_s
    while platform.watchdog.problem is None and time.monotonic() < deadline:  # not noticed yet
        time.sleep(0.01)
    while platform.watchdog.problem is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    return round(time.perf_counter() - killed_at, 2)


def _put_until_stored(platform: Platform, path: str, text: str) -> int:
    """Puts the file, again and again while the store does not answer; returns the failed tries."""
    failures = 0
    while True:
        try:
            platform.storage.default.put_bytes(ObjectRef.parse(path), text.encode())
            return failures
        except StorageError:
            failures += 1
            time.sleep(0.05)


def _wait_for_all(platform: Platform, files: int, timeout_s: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = platform.ledger.count_jobs()
        pending = sum(
            counts.get(s, {}).get(JobState.QUEUED, 0) + counts.get(s, {}).get(JobState.RUNNING, 0) for s in STAGES
        )
        done = sum(counts.get(s, {}).get(JobState.SUCCEEDED, 0) for s in STAGES)
        if not pending and done + sum(counts.get(s, {}).get(JobState.DEAD, 0) for s in STAGES) >= 2 * files:
            break
        time.sleep(0.2)
    counts = platform.ledger.count_jobs()
    per_stage = {s: {state.value: n for state, n in counts.get(s, {}).items()} for s in STAGES}
    return {
        "jobs": per_stage,
        "lost": sum(max(0, files - counts.get(s, {}).get(JobState.SUCCEEDED, 0)) for s in STAGES),
        "dead": sum(counts.get(s, {}).get(JobState.DEAD, 0) for s in STAGES),
        "duplicates": sum(max(0, sum(counts.get(s, {}).values()) - files) for s in STAGES),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1, help="crash runs (the baseline runs once)")
    args = parser.parse_args()
    baseline = burst(args.files, kill=False)
    crashes = [burst(args.files, kill=True) for _ in range(args.rounds)]
    summary = {
        "command": command_line("bench.store_crash"),
        "machine": describe_machine(),
        "files": args.files,
        "baseline": baseline,
        "crashes": crashes,
        "recovered_s_median": statistics.median(c["recovered_s"] for c in crashes),
        "wall_over_baseline": round(statistics.median(c["wall_s"] for c in crashes) / baseline["wall_s"], 2),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "store_crash.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# The embedded store killed mid-burst",
        "",
        f"`{summary['command']}` on {summary['machine']}; {args.files} files through two services.",
        "",
        "| run | wall | store back after SIGKILL | lost | dead | duplicate jobs | failed user PUTs |",
        "|---|---|---|---|---|---|---|",
        f"| no kill | {baseline['wall_s']} s | | {baseline['lost']} | {baseline['dead']} | "
        f"{baseline['duplicates']} | {baseline['failed_puts']} |",
        *(
            f"| kill -9 at 1/3 | {c['wall_s']} s | {c['recovered_s']} s | {c['lost']} | {c['dead']} | "
            f"{c['duplicates']} | {c['failed_puts']} |"
            for c in crashes
        ),
    ]
    (RESULTS / "store_crash.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
