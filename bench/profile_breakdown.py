"""Rank where the platform's Python time goes, from a py-spy profile of one Conveyor row.

py-spy's flame graph answers "which stack"; the question here is "which step of a file's way
through Conveyor", so each sampled stack is charged to the first step (top to bottom of STEPS)
whose pattern it contains. Start-up and the bench's own main thread are left out, so the
percentages are of the per-file work.

    py-spy record --gil --rate 200 --format raw -o /tmp/w.txt -- \\
        python -m bench.run_row conveyor-process --files 1000
    python -m bench.profile_breakdown /tmp/w.txt --files 1000 --rate 200
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

NOT_PER_FILE = "start-up, apply, and the bench's main thread"
STEPS = [
    (NOT_PER_FILE, r"<module>|Platform\.start |Platform\.apply|_find_and_load|Platform\.stop"),
    ("dispatcher: Ledger.next_queued", r"Ledger\.next_queued"),
    ("dispatcher: Ledger.next_retry_time", r"Ledger\.next_retry_time"),
    ("dispatcher: Ledger.mark_running", r"Ledger\.mark_running"),
    ("dispatcher: Ledger.finish_job", r"Ledger\.finish_job"),
    ("dispatcher: the rest (JobSpec, status, wake-ups)", r"Dispatcher\._loop"),
    ("webhook: Ledger.record_event", r"Ledger\.record_event"),
    ("webhook: parse and route the event", r"seaweedfs_event|accept_event|GroupedIntake|accept_many"),
    ("webhook: HTTP server, ASGI middleware, FastAPI", r"uvicorn|starlette|fastapi|anyio|h11"),
    ("job: stage-in (GET; the filer for the own store)", r"Supervisor\._stage_in"),
    ("job: start and wait for the script (Popen, run.json, timer)", r"HostCommandRunner\.run"),
    ("job: stage-out (boto3 PUT)", r"stage_out \("),
    ("job: log lines, work dir, outcome", r"Supervisor\.|LocalBackend\._run"),
    ("thread pools, locks", r"threading\.py|concurrent/futures"),
]


def charge(raw: Path) -> Counter[str]:
    """Samples per step; py-spy's raw format is one `frame;frame;... count` line per stack."""
    samples: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        step = next((name for name, pattern in STEPS if re.search(pattern, stack)), "other")
        samples[step] += int(count)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path, help="py-spy output in --format raw")
    parser.add_argument("--files", type=int, default=1000, help="files the profiled run processed")
    parser.add_argument("--rate", type=int, default=200, help="py-spy's --rate (samples per second)")
    args = parser.parse_args()
    samples = charge(args.profile)
    per_file = sum(samples.values()) - samples[NOT_PER_FILE]
    print(f"{per_file / args.rate / args.files * 1000:.1f} ms of Python per file; left out: {NOT_PER_FILE}")
    print("| step | share | ms/file |\n|---|---|---|")
    for step, count in samples.most_common():
        if step != NOT_PER_FILE:
            print(f"| {step} | {count / per_file:.1%} | {count / args.rate / args.files * 1000:.2f} |")


if __name__ == "__main__":
    main()
