"""One measurement of one row, in a process of its own; the suite starts one per row and repeat.

A fresh process per measurement means no row inherits another's threads, caches or heap, and its
process tree's memory is its own. The result is one JSON line on stdout: the measurement, the
process's own peak RSS, or `missing` (exit code 3) when the row's tool is not installed.

    python -m bench.run_row pool --workload w --files 100
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from bench.harness import ToolMissing, status_kib
from bench.rows import BY_KEY, Params
from bench.workloads import WORKLOADS

EXIT_MISSING = 3


def parse(argv: list[str]) -> tuple[str, Params]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run_row", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("row", choices=sorted(BY_KEY))
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="w")
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--uploads", type=int, default=20, help="single uploads (latency and chain rows)")
    parser.add_argument("--queue-events", type=int, default=200, help="events queued at once (queue row)")
    args = parser.parse_args(argv)
    params = Params(WORKLOADS[args.workload], args.files, args.workers, args.uploads, args.queue_events)
    return args.row, params


def main(argv: list[str] | None = None) -> int:
    key, params = parse(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix=f"bench-{key}-") as scratch:
        try:
            result = BY_KEY[key].measure(params, Path(scratch))
        except ToolMissing as missing:
            print(json.dumps({"missing": str(missing)}))
            return EXIT_MISSING
    result["runner_peak_rss_mib"] = status_kib(os.getpid(), "VmHWM") / 1024
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
