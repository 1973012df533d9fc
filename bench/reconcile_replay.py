"""What a periodic reconciliation round costs: replaying the store's change log vs listing the input.

Puts N objects under one prefix of an embedded SeaweedFS, waits until they are older than one
round (`--round-s`), puts `--new` more, then times (a) listing the prefix, as a full round does,
and (b) replaying the change log of the last round, as the periodic rounds do.

    .venv/bin/python bench/reconcile_replay.py --objects 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conveyor.events.seaweedfs_log import replay_changes
from conveyor.model.event import ObjectRef, utcnow
from conveyor.storage.embedded import EmbeddedSeaweed, WebhookTarget, find_weed
from conveyor.storage.s3 import S3Credentials, S3Provider

RESULTS = Path(__file__).parent / "results"


def put(store: S3Provider, keys: list[str]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: store.put_bytes(ObjectRef(bucket="replay", key=key), b"x"), keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument("--round-s", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="conveyor-replay-") as scratch:
        seaweed = EmbeddedSeaweed(
            Path(scratch),
            s3_port=0,
            access_key="bench",
            secret_key="bench-secret",
            webhook=WebhookTarget("http://127.0.0.1:9/nowhere", "unused"),
        )
        seaweed.start()
        try:
            store = S3Provider(
                S3Credentials(endpoint=seaweed.s3_endpoint, access_key="bench", secret_key="bench-secret")
            )
            store.ensure_bucket("replay")
            started = time.perf_counter()
            put(store, [f"in/old-{i:07d}" for i in range(args.objects)])
            put_s = time.perf_counter() - started
            time.sleep(args.round_s + 2)  # every old object is now before the round's window
            round_start = utcnow() - timedelta(seconds=args.round_s)
            put(store, [f"in/new-{i:05d}" for i in range(args.new)])
            time.sleep(2)
            until = utcnow()
            listing, replay, replayed = [], [], 0
            for _ in range(args.repeats):
                clock = time.perf_counter()
                listed = sum(1 for _ in store.list("replay", "in/"))
                listing.append(time.perf_counter() - clock)
                clock = time.perf_counter()
                replayed = sum(
                    1
                    for _ in replay_changes(find_weed(), seaweed.filer_address, "/buckets/replay/", round_start, until)
                )
                replay.append(time.perf_counter() - clock)
        finally:
            seaweed.stop()

    result = {
        "benchmark": "reconcile_replay",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()}, {os.cpu_count()} cores, Python {host.python_version()}",
        "objects": args.objects + args.new,
        "put_per_s": args.objects / put_s,
        "listed": listed,
        "replayed_events": replayed,
        "listing_s": listing,
        "replay_s": replay,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reconcile_replay.json").write_text(json.dumps(result, indent=2))
    table = (
        f"| a {args.round_s:.0f} s round over {args.objects + args.new:,} objects, {args.new} of them new "
        "| min | median | max |\n|---|---|---|---|\n"
        f"| list the input (full round) | {min(listing):.2f} s | {statistics.median(listing):.2f} s | "
        f"{max(listing):.2f} s |\n"
        f"| replay the change log ({replayed} events) | {min(replay):.2f} s | {statistics.median(replay):.2f} s | "
        f"{max(replay):.2f} s |\n"
    )
    (RESULTS / "reconcile_replay.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
