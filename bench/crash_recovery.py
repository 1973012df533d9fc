"""The crash scenario at scale: N files through a two-service chain, `kill -9` of `conveyor up` when
30 % of the first service's jobs are done, a restart, and a count of what came out.

    .venv/bin/python bench/crash_recovery.py --files 10000

Results: bench/results/crash_recovery.json and .md. The same scenario runs in CI at 500 files
(tests/e2e/test_crash.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests.support

from tests.support.crash import SERVICES, run_crash_scenario

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--kill-at", type=float, default=0.3, help="fraction of first-service jobs done at the kill")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="conveyor-crash-") as scratch:
        result = run_crash_scenario(Path(scratch), args.files, args.kill_at, timeout_s=3600)

    exactly_once = all(result.jobs_per_input[name] == {1: args.files} for name in SERVICES)
    summary = {
        "benchmark": "crash_recovery",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()}, {os.cpu_count()} cores, Python {host.python_version()}",
        "files": args.files,
        "outputs": result.outputs,
        "lost": result.lost,
        "succeeded_per_service": result.succeeded,
        "inputs_with_exactly_one_success": {n: result.jobs_per_input[n].get(1, 0) for n in SERVICES},
        "exactly_once": exactly_once,
        "pending_after": result.pending,
        "duplicate_notifications_absorbed": result.duplicates,
        "seconds_first_put_to_kill": round(result.seconds_to_kill, 1),
        "seconds_restart_to_all_done": round(result.seconds_after_restart, 1),
        "recovery": result.recovery_note,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "crash_recovery.json").write_text(json.dumps(summary, indent=2))
    table = (
        f"| crash recovery, {args.files} files × 2 services, kill -9 at {args.kill_at:.0%} | |\n|---|---|\n"
        f"| outputs / lost | {result.outputs} / **{result.lost}** |\n"
        f"| one succeeded job per input, per service | {exactly_once} |\n"
        f"| duplicate notifications absorbed | {result.duplicates} |\n"
        f"| first put → kill | {result.seconds_to_kill:.1f} s |\n"
        f"| restart → every job done | {result.seconds_after_restart:.1f} s |\n"
        f"| at restart | {result.recovery_note} |\n"
    )
    (RESULTS / "crash_recovery.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
