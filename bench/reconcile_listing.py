"""How long a reconciliation round takes, and how much memory, when an input holds N objects.

An embedded SeaweedFS gets N tiny objects under one prefix (16 threads of boto3 put_object); a
ledger on a temporary SQLite file gets one service on that prefix and an event for every object
but `--missing` of them (bulk-inserted, as if their webhooks had come). Then, in a fresh child
process so its peak RSS is the round's and not the uploads', `Reconciler.reconcile_once()` runs
`--repeats` times with the missing events deleted again before each round (each round lists N,
finds `--missing` and records them), and `--repeats` times with nothing to find. The intake
records into the ledger; the dispatcher wake-up it would call is a no-op. Results go to
bench/results/ as JSON and markdown.

    .venv/bin/python bench/reconcile_listing.py --objects 100000 --missing 1000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select

from conveyor.events.intake import EventIntake
from conveyor.events.reconciler import Reconciler
from conveyor.events.routing import InputIndex
from conveyor.ledger.db import create_ledger_engine
from conveyor.ledger.store import Ledger
from conveyor.ledger.tables import EventRow, JobRow
from conveyor.model.event import utcnow
from conveyor.model.service import Service
from conveyor.storage.embedded import EmbeddedSeaweed, WebhookTarget, find_weed
from conveyor.storage.registry import ProviderRegistry
from conveyor.storage.s3 import S3Credentials, S3Provider

RESULTS = Path(__file__).parent / "results"
BUCKET, FOLDER, SERVICE = "bench", "in", "reconcile"
ACCESS_KEY, SECRET_KEY = "benchkey", "benchsecret"


# ---- the store and its notifications ---------------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    """Answers SeaweedFS' webhook at once, so its queue drains instead of retrying a dead URL."""

    received = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        with _Sink.lock:
            _Sink.received += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def put_objects(provider: S3Provider, count: int, workers: int) -> float:
    """Objects `in/f000000.txt`... with distinct tiny bodies; returns objects per second."""
    provider.ensure_bucket(BUCKET)
    client = provider.client

    def put(start: int) -> None:
        for i in range(start, min(start + 500, count)):
            client.put_object(Bucket=BUCKET, Key=f"{FOLDER}/f{i:06d}.txt", Body=str(i).encode())

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, range(0, count, 500)))
    return count / (time.perf_counter() - started)


def wait_for_notifications(count: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while _Sink.received < count and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # let the filer's last deliveries end before anything is timed


# ---- the ledger ------------------------------------------------------------------------------


def fill_ledger(ledger_url: str, provider: S3Provider, missing: int) -> list[str]:
    """An event for every listed object but `missing` evenly spread ones; returns the missing keys."""
    objects = [(info.ref.key, info.etag, info.size) for info in provider.list(BUCKET, f"{FOLDER}/")]
    step = max(1, len(objects) // missing) if missing else len(objects) + 1
    left_out = {key for key, _, _ in objects[::step][:missing]}
    now = utcnow()
    rows = [
        {"service": SERVICE, "provider": "minio.default", "bucket": BUCKET, "key": key, "etag": etag, "size": size,
         "event_time": now, "received_at": now, "source": "seaweedfs", "duplicates": 0}
        for key, etag, size in objects
        if key not in left_out
    ]  # fmt: skip
    engine = create_ledger_engine(ledger_url, immediate=True)
    with engine.begin() as connection:
        connection.execute(insert(EventRow), rows)
    engine.dispose()
    return sorted(left_out)


def forget_reconciled(ledger_url: str) -> None:
    """Delete what a round recorded, so the next round finds the same objects missing."""
    engine = create_ledger_engine(ledger_url, immediate=True)
    with engine.begin() as connection:
        ids = select(EventRow.id).where(EventRow.source == "reconciler")
        connection.execute(delete(JobRow).where(JobRow.event_id.in_(ids)))
        connection.execute(delete(EventRow).where(EventRow.source == "reconciler"))
    engine.dispose()


# ---- the measured child ----------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process image's peak RSS (VmHWM), else getrusage's.

    getrusage's ru_maxrss survives exec on Linux: a child started by a parent holding 200 MB
    reports at least that. VmHWM belongs to the image, so it is the rounds' own figure.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: the rounds, and the listing and the ledger query on their own."""
    ledger = Ledger(spec["ledger_url"])
    provider = S3Provider(S3Credentials(endpoint=spec["endpoint"], access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    intake = EventIntake(ledger, InputIndex(), on_new_jobs=lambda: None)
    reconciler = Reconciler(ledger, ProviderRegistry(provider), intake, interval_s=0)
    provider.list_buckets()  # connect before anything is timed
    rss_before = peak_rss_mb()

    listing = _timed(lambda: sum(1 for _ in provider.list(BUCKET, f"{FOLDER}/")))
    query = _timed(lambda: len(ledger.known_versions(SERVICE, "minio.default", BUCKET, f"{FOLDER}/")))
    finding, nothing_new = [], []
    for _ in range(spec["repeats"]):
        forget_reconciled(spec["ledger_url"])
        finding.append(_round(reconciler, expected=spec["missing"], listed=spec["objects"]))
    for _ in range(spec["repeats"]):
        nothing_new.append(_round(reconciler, expected=0, listed=spec["objects"]))
    ledger.close()
    provider.close()
    return {
        "listing_only_s": listing,
        "known_versions_only_s": query,
        "rounds_finding_missing_s": finding,
        "rounds_nothing_new_s": nothing_new,
        "rss_before_rounds_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _timed(action: Any) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _round(reconciler: Reconciler, *, expected: int, listed: int) -> float:
    report = reconciler.reconcile_once()
    assert (report.listed, report.accepted, report.errors) == (listed, expected, 0), report
    return report.seconds


# ---- putting it together ---------------------------------------------------------------------


def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    store = EmbeddedSeaweed(
        scratch / "seaweedfs",
        s3_port=0,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        webhook=WebhookTarget(f"http://127.0.0.1:{sink.server_port}/", "bench"),
    )
    store.start()
    try:
        ledger_url = f"sqlite:///{scratch / 'ledger.db'}"
        ledger = Ledger(ledger_url)
        service = {"name": SERVICE, "image": "-", "script": "true", "input": [{"path": f"{BUCKET}/{FOLDER}"}]}
        ledger.put_service(Service.model_validate(service))  # before the puts: the objects are its work
        ledger.close()
        provider = S3Provider(S3Credentials(endpoint=store.s3_endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY))
        rate = put_objects(provider, args.objects, args.workers)
        print(f"put {args.objects} objects at {rate:.0f}/s", flush=True)
        wait_for_notifications(args.objects)
        started = time.perf_counter()
        fill_ledger(ledger_url, provider, args.missing)
        print(f"ledger filled in {time.perf_counter() - started:.1f} s", flush=True)
        provider.close()
        spec = {"ledger_url": ledger_url, "endpoint": store.s3_endpoint, **vars(args)}
        child = subprocess.run(
            [sys.executable, __file__, "--measure", json.dumps(spec)], capture_output=True, text=True, check=True
        )
        return {"put_rate_per_s": rate, **json.loads(child.stdout)}
    finally:
        store.stop()
        sink.shutdown()


def weed_version() -> str:
    done = subprocess.run([str(find_weed()), "version"], capture_output=True, text=True)
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "unknown"


def write_results(args: argparse.Namespace, measured: dict[str, Any]) -> str:
    finding, nothing_new = measured["rounds_finding_missing_s"], measured["rounds_nothing_new_s"]
    result = {
        "benchmark": "reconcile_listing",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()}, {os.cpu_count()} cores, Python {host.python_version()}",
        "store": weed_version(),
        "objects": args.objects,
        "missing": args.missing,
        "repeats": args.repeats,
        **measured,
        "objects_listed_per_s_median": args.objects / statistics.median(finding),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reconcile_listing.json").write_text(json.dumps(result, indent=2))
    rows = (
        (f"round finding {args.missing} lost events", finding),
        ("round with nothing new", nothing_new),
    )
    table = (
        f"`{result['command']}` on {result['machine']}, {result['store']}\n\n"
        f"| one input with {args.objects:,} objects | min | median | max | objects listed/s (median) |\n"
        "|---|---|---|---|---|\n"
        + "".join(
            f"| {name} | {min(v):.2f} s | {statistics.median(v):.2f} s | {max(v):.2f} s "
            f"| {args.objects / statistics.median(v):,.0f} |\n"
            for name, v in rows
        )
        + f"\nOn their own: listing {measured['listing_only_s']:.2f} s, "
        f"`known_versions` {measured['known_versions_only_s']:.2f} s. "
        f"Peak RSS of the process running the rounds: {measured['peak_rss_mb']:.0f} MB "
        f"({measured['rss_before_rounds_mb']:.0f} MB before the first round; VmHWM, since getrusage "
        f"says {measured['ru_maxrss_mb']:.0f} MB, the parent's size when it started the child). "
        f"Puts (16 threads, boto3): {measured['put_rate_per_s']:.0f} objects/s.\n"
    )
    (RESULTS / "reconcile_listing.md").write_text(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--missing", type=int, default=1000, help="objects the ledger has no event for")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=16, help="threads putting objects")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return
    with tempfile.TemporaryDirectory() as scratch:
        measured = run(args, Path(scratch))
    print(write_results(args, measured))


if __name__ == "__main__":
    main()
