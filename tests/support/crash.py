"""The crash scenario: files through a two-service chain, `kill -9` of `conveyor up` mid-way, a restart,
and a count of what came out. Used by tests/e2e/test_crash.py and bench/crash_recovery.py.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.client import Config
from sqlalchemy import func, select

from conveyor.ledger.store import Ledger
from conveyor.ledger.tables import EventRow
from tests.support.cli import Cli, cli_environment, start_up, stop_up
from tests.support.ledger_rows import ledger_session

FIRST = 'sleep 0.05; tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
SECOND = 'sleep 0.05; rev "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
WORKFLOW = """\
functions:
  oscar:
  - local:
      name: shout
      image: unused
      script: first.sh
      cpu: '0.5'
      input: [{path: crash/in}]
      output: [{path: crash/mid}]
  - local:
      name: flip
      image: unused
      script: second.sh
      cpu: '0.5'
      input: [{path: crash/mid}]
      output: [{path: crash/out}]
"""
SERVICES = ("shout", "flip")
EVERY_INPUT = (
    'printf "%s\\n" "$INPUT_FILE_PATHS" | while read -r f; do {} "$f" > "$TMP_OUTPUT_DIR/$(basename "$f")"; done'
)
EACH_INPUT = {  # the same work over every input of a batch run in one folder (batch.mode: directory)
    "first.sh": "sleep 0.05; " + EVERY_INPUT.format("tr a-z A-Z <"),
    "second.sh": "sleep 0.05; " + EVERY_INPUT.format("rev"),
}


def workflow(batch: str | None) -> str:
    """The two-service FDL; with `batch` (a batch mode) both services run queued inputs in batches of 10."""
    if batch is None:
        return WORKFLOW
    return WORKFLOW.replace("      cpu: '0.5'\n", f"      cpu: '0.5'\n      batch: {{max_files: 10, mode: {batch}}}\n")


@dataclass
class CrashResult:
    files: int
    outputs: int
    middles: int
    succeeded: dict[str, int]
    jobs_per_input: dict[str, Counter[int]]
    """For each service: how many inputs got 1, 2, ... succeeded jobs (exactly-once: only 1s)."""
    pending: dict[str, int]
    duplicates: int
    """Notifications of an object version the ledger already had: delivered again, run once."""
    seconds_to_kill: float
    seconds_after_restart: float
    recovery_note: str
    states: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.files - self.outputs


def run_crash_scenario(
    workdir: Path, files: int, kill_at_fraction: float = 0.3, timeout_s: float = 900, batch: str | None = None
) -> CrashResult:
    """`batch`: both services run batches of this mode (`each`, `directory`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    scripts = EACH_INPUT if batch == "directory" else {"first.sh": FIRST, "second.sh": SECOND}
    for name, script in scripts.items():
        (workdir / name).write_text(script + "\n")
    (workdir / "workflow.yaml").write_text(workflow(batch))
    env = cli_environment(workdir)
    cli = Cli(env, workdir)
    up = start_up(env, workdir)
    try:
        cli("apply", str(workdir / "workflow.yaml"))
        started = time.monotonic()
        _put_files(Path(env["CONVEYOR_DATA_DIR"]), files)
        _wait_for(lambda: _finished(env, "shout") >= files * kill_at_fraction, timeout_s, "jobs to get going")
    except BaseException:
        up.kill()
        raise
    up.kill()  # kill -9: no clean-up of any kind
    up.wait(30)
    seconds_to_kill = time.monotonic() - started

    restarted = time.monotonic()
    up = start_up(env, workdir)
    try:
        _wait_for(lambda: _all_done(env, files), timeout_s, "every job to finish after the restart")
        seconds_after_restart = time.monotonic() - restarted
        result = _count(env, files, seconds_to_kill, seconds_after_restart)
    finally:
        stop_up(up, workdir)
    result.recovery_note = next(
        (line.strip() for line in (workdir / "up.log").read_text().splitlines() if "the last run left" in line), ""
    )
    result.duplicates = _duplicates(Path(env["CONVEYOR_DATA_DIR"]))
    return result


def _connection(data_dir: Path) -> tuple[str, tuple[str, str], dict[str, Any]]:
    running = json.loads((data_dir / "platform.json").read_text())
    creds = json.loads((data_dir / "credentials.json").read_text())
    return running["api_url"], (creds["admin_user"], creds["admin_password"]), {**running, **creds}


def s3_client(data_dir: Path) -> Any:
    _, _, info = _connection(data_dir)
    return boto3.client(
        "s3",
        endpoint_url=info["s3_endpoint"],
        aws_access_key_id=info["s3_access_key"],
        aws_secret_access_key=info["s3_secret_key"],
        region_name="us-east-1",
        config=Config(max_pool_connections=16, s3={"addressing_style": "path"}),
    )


def _put_files(data_dir: Path, files: int) -> None:
    s3 = s3_client(data_dir)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(lambda i: s3.put_object(Bucket="crash", Key=f"in/f{i:06d}.txt", Body=f"file {i}\n"), range(files))
        )


def job_counts(env: dict[str, str]) -> dict[str, dict[str, int]]:
    url, auth, _ = _connection(Path(env["CONVEYOR_DATA_DIR"]))
    return httpx.get(f"{url}/conveyor/v1/status", auth=auth, timeout=30).json()["jobs"]


def _finished(env: dict[str, str], service: str) -> int:
    return job_counts(env).get(service, {}).get("succeeded", 0)


def _all_done(env: dict[str, str], files: int) -> bool:
    jobs = job_counts(env)
    return all(
        jobs.get(name, {}).get("succeeded", 0) >= files
        and not jobs.get(name, {}).get("queued")
        and not jobs.get(name, {}).get("running")
        for name in SERVICES
    )


def _wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def _count(env: dict[str, str], files: int, to_kill: float, after: float) -> CrashResult:
    data_dir = Path(env["CONVEYOR_DATA_DIR"])
    url, auth, _ = _connection(data_dir)
    s3 = s3_client(data_dir)
    paginator = s3.get_paginator("list_objects_v2")

    def keys(prefix: str) -> list[str]:
        return [
            o["Key"] for page in paginator.paginate(Bucket="crash", Prefix=prefix) for o in page.get("Contents", [])
        ]

    jobs_per_input: dict[str, Counter[int]] = {}
    succeeded: dict[str, int] = {}
    for name in SERVICES:
        listing = httpx.get(
            f"{url}/conveyor/v1/jobs", params={"service": name, "limit": 10_000}, auth=auth, timeout=60
        ).json()["jobs"]
        done = [j for j in listing if j["state"] == "succeeded"]
        succeeded[name] = len(done)
        per_input = Counter(j["trigger"]["ref"]["key"] for j in done)
        jobs_per_input[name] = Counter(per_input.values())
    states = job_counts(env)
    return CrashResult(
        files=files,
        outputs=len([k for k in keys("out/") if not k.endswith("/")]),
        middles=len([k for k in keys("mid/") if not k.endswith("/")]),
        succeeded=succeeded,
        jobs_per_input=jobs_per_input,
        pending={n: states.get(n, {}).get("queued", 0) + states.get(n, {}).get("running", 0) for n in SERVICES},
        duplicates=0,
        seconds_to_kill=to_kill,
        seconds_after_restart=after,
        recovery_note="",
        states=states,
    )


def _duplicates(data_dir: Path) -> int:
    ledger = Ledger(f"sqlite:///{data_dir / 'conveyor.db'}")
    try:
        with ledger_session(ledger) as session:
            return int(session.scalar(select(func.coalesce(func.sum(EventRow.duplicates), 0))) or 0)
    finally:
        ledger.close()
