"""Services on a real single-node Slurm (scripts/slurm-up.sh): jobs go through sbatch, come back
through squeue, and every way a Slurm job can end badly becomes a retry, never a hang."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from conveyor.model.job import JobState
from tests.conftest import PlatformFactory
from tests.support.cli import Cli, cli_environment
from tests.support.platform import (
    gated,
    hold_the_slot_and_queue,
    keys_under,
    put_text,
    read_text,
    service,
    wait_for_jobs,
    wait_for_state,
)
from tests.support.slurm import Slurm

pytestmark = pytest.mark.e2e

FAST = {"poll_interval_s": 0.5, "forget_after_s": 3.0, "time_margin_s": 60}


def test_a_two_service_workflow_runs_on_slurm(slurm: Slurm, make_platform: PlatformFactory, tmp_path: Path) -> None:
    platform = make_platform(slurm=FAST, backend="slurm")
    first = service(
        "upper",
        'tr a-z A-Z < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"; echo "on $SLURM_JOB_ID"',
        ["flow/in"],
        ["flow/mid"],
    )
    second = service(
        "count",
        'wc -c < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").len"',
        ["flow/mid"],
        ["flow/out"],
    )
    platform.catalog.apply([first, second])
    put_text(platform, "flow/in/a.txt", "hello slurm")

    [upper] = wait_for_jobs(platform, "upper", 1, timeout_s=60)
    [count] = wait_for_jobs(platform, "count", 1, timeout_s=60)

    assert upper.state == JobState.SUCCEEDED, platform.jobs.read_log("upper", upper.job_id)
    assert count.state == JobState.SUCCEEDED, platform.jobs.read_log("count", count.job_id)
    assert read_text(platform, "flow/mid/a.txt", tmp_path) == "HELLO SLURM"
    assert read_text(platform, "flow/out/a.txt.len", tmp_path).strip() == "11"
    log = platform.jobs.read_log("upper", upper.job_id) or ""
    assert "on " in log and "stored minio.default:flow/mid/a.txt" in log, log
    assert not list((platform.layout.root / "slurm" / "jobs").iterdir()), "job dirs (with secrets) are removed"


class QueueWatcher:
    """Samples squeue in the background: the most Conveyor jobs Slurm held at once."""

    def __init__(self, slurm: Slurm) -> None:
        self.slurm, self.peak, self.samples = slurm, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> QueueWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, len(self.slurm.active()))
            self.samples += 1
            self._stop.wait(0.1)


def test_admission_keeps_at_most_20_jobs_in_slurm_and_runs_200_files_once(
    slurm: Slurm, make_platform: PlatformFactory
) -> None:
    platform = make_platform(slurm={**FAST, "max_pending_per_service": 20}, backend="slurm")
    platform.catalog.apply([service("copy", 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"', ["burst/in"], ["burst/out"])])
    with QueueWatcher(slurm) as watcher:
        for index in range(200):
            put_text(platform, f"burst/in/f{index:03d}.txt", str(index))
        records = wait_for_jobs(platform, "copy", 200, timeout_s=400)

    assert [r.state for r in records].count(JobState.SUCCEEDED) == 200
    assert len({r.trigger.ref.key for r in records if r.trigger}) == 200, "one job per file"
    assert len(keys_under(platform, "burst/out")) == 200
    assert 0 < watcher.peak <= 20, f"{watcher.peak} jobs in squeue at once ({watcher.samples} samples)"


@pytest.mark.parametrize("mode", ["each", "directory"])
def test_queued_inputs_go_to_slurm_in_batches_each_input_still_its_own_job(
    slurm: Slurm, make_platform: PlatformFactory, tmp_path: Path, mode: str
) -> None:
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    platform = make_platform(slurm={**FAST, "max_pending_per_service": 1}, backend="slurm")
    copy = 'printf "%s\\n" "$INPUT_FILE_PATHS" | while read -r f; do cp "$f" "$TMP_OUTPUT_DIR/"; done'
    batch = {"max_files": 10, "mode": mode}
    platform.catalog.apply([service("lots", gated(gate, runs, copy), ["lots/in"], ["lots/out"], batch=batch)])
    names = [f"f{i}.txt" for i in range(4)]
    hold_the_slot_and_queue(platform, "lots", names)

    gate.touch()
    jobs = wait_for_jobs(platform, "lots", 5, timeout_s=120)

    assert {job.state for job in jobs} == {JobState.SUCCEEDED}
    assert runs.read_text().split() == (["1", "4"] if mode == "directory" else ["1"] * 5)
    assert keys_under(platform, "lots/out") == sorted(f"out/{n}" for n in ["first.txt", *names])
    logs = {job.job_id: platform.jobs.read_log("lots", job.job_id) or "" for job in jobs}
    node_runs = {run for log in logs.values() for run in re.findall(r"/conveyor-(lots-[0-9a-f-]{36})-", log)}
    assert len(node_runs) == 2, f"one Slurm job for the first input, one for the batch: {logs}"
    batched = [log for log in logs.values() if "batch" in log]
    assert len(batched) == 4, "every job of the batch has its own log, taken back from the node"


def test_a_job_past_its_timeout_is_retried_then_dead(slurm: Slurm, make_platform: PlatformFactory) -> None:
    platform = make_platform(slurm=FAST, backend="slurm")
    slow = service("slow", "sleep 60", ["slow/in"], ["slow/out"], timeout=2, retries=1, retry_script_failures=True)
    platform.catalog.apply([slow])
    put_text(platform, "slow/in/a.txt", "x")

    [job] = wait_for_jobs(platform, "slow", 1, timeout_s=90)

    assert job.state == JobState.DEAD
    assert job.attempt == 2
    assert "killed after 2 s" in job.message
    assert not slurm.active(), "no Conveyor job is left in Slurm"


def test_scancel_from_outside_is_noticed_and_the_job_runs_again(slurm: Slurm, make_platform: PlatformFactory) -> None:
    platform = make_platform(slurm=FAST, backend="slurm")
    platform.catalog.apply(
        [service("nap", 'sleep 4; cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"', ["nap/in"], ["nap/out"])]
    )
    put_text(platform, "nap/in/a.txt", "x")
    native_id = _first_running(slurm, "conveyor.nap-")

    slurm.run("scancel", native_id)
    [job] = wait_for_jobs(platform, "nap", 1, timeout_s=90)

    assert job.state == JobState.SUCCEEDED
    assert job.attempt == 2, "the cancelled attempt was retried"
    log = platform.jobs.read_log("nap", job.job_id) or ""
    assert f"slurm: Slurm job {native_id} was cancelled outside Conveyor" in log, log
    assert keys_under(platform, "nap/out") == ["out/a.txt"]


def test_conveyor_cancel_stops_a_running_slurm_job_for_good(slurm: Slurm, make_platform: PlatformFactory) -> None:
    platform = make_platform(slurm=FAST, backend="slurm")
    platform.catalog.apply([service("long", "sleep 60", ["long/in"], ["long/out"], retry_script_failures=True)])
    put_text(platform, "long/in/a.txt", "x")
    _first_running(slurm, "conveyor.long-")
    [job] = [r for _, r in platform.ledger.list_jobs("long")]

    assert platform.dispatcher.cancel(job.job_id) in ("stopping", "asked to stop")
    finished = wait_for_state(platform, job.job_id, {"cancelled"}, timeout_s=30)

    assert finished.attempt == 1, "a cancelled job is not retried"
    assert not slurm.active("conveyor.long-")


def test_a_slurmctld_restart_while_jobs_run_loses_nothing(slurm: Slurm, make_platform: PlatformFactory) -> None:
    platform = make_platform(slurm=FAST, backend="slurm")
    platform.catalog.apply(
        [service("steady", 'sleep 2; cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"', ["steady/in"], ["steady/out"])]
    )
    for index in range(6):
        put_text(platform, f"steady/in/f{index}.txt", str(index))
    _first_running(slurm, "conveyor.steady-")

    slurm.restart_controller(down_s=3.0)
    records = wait_for_jobs(platform, "steady", 6, timeout_s=120)

    assert [r.state for r in records].count(JobState.SUCCEEDED) == 6
    assert all(r.attempt == 1 for r in records), [(r.attempt, r.message) for r in records]
    assert len(keys_under(platform, "steady/out")) == 6


def test_a_restarted_platform_adopts_the_jobs_it_left_in_slurm(
    slurm: Slurm, make_platform: PlatformFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "adopt"
    # The node's job file names the store's endpoint: the platform must come back on the same port.
    storage = {"s3_port": _free_port()}
    first = make_platform(slurm=FAST, backend="slurm", data_dir=data_dir, storage=storage)
    # The script ends only once the second platform (and its store, for the stage-out) is up.
    gate = tmp_path / "second-is-up"
    script = f'while [ ! -f "{gate}" ]; do sleep 0.1; done; cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"'
    first.catalog.apply([service("keep", script, ["keep/in"], ["keep/out"])])
    put_text(first, "keep/in/a.txt", "x")
    native_id = _first_running(slurm, "conveyor.keep-")
    _wait_until_script_runs(data_dir / "slurm" / "jobs")  # stage-in needs the store this platform serves
    first.stop()

    second = make_platform(slurm=FAST, backend="slurm", data_dir=data_dir, storage=storage)
    gate.touch()
    [job] = wait_for_jobs(second, "keep", 1, timeout_s=60)

    assert second.adopted == 1
    assert job.state == JobState.SUCCEEDED and job.attempt == 1, second.jobs.read_log("keep", job.job_id)
    assert native_id not in [entry[0] for entry in slurm.active()]


def _wait_until_script_runs(jobs_dir: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any("INPUT_FILE_PATH" in log.read_text() for log in jobs_dir.glob("*/job.log")):
            return
        time.sleep(0.05)
    raise AssertionError(f"no script started under {jobs_dir} within {timeout_s} s")


def _free_port() -> int:
    """A port free now, whose SeaweedFS gRPC twin (+10000) is free too."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as twin:
            try:
                twin.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def _first_running(slurm: Slurm, prefix: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = [job_id for job_id, name, state in slurm.active(prefix) if state == "RUNNING"]
        if running:
            return running[0]
        time.sleep(0.1)
    raise AssertionError(f"no job named {prefix}* ran within {timeout_s} s: {slurm.queue()}")


def test_a_service_waiting_for_slurm_does_not_hold_back_a_local_one(
    slurm: Slurm, make_platform: PlatformFactory
) -> None:
    platform = make_platform(slurm={**FAST, "max_pending_per_service": 1})
    on_slurm = service(
        "queued", 'sleep 2; cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"', ["waits/in"], ["waits/out"], backend="slurm"
    )
    local = service("quick", 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"', ["quick/in"], ["quick/out"])
    platform.catalog.apply([on_slurm, local])
    for index in range(3):
        put_text(platform, f"waits/in/f{index}.txt", "x")
    for index in range(3):
        put_text(platform, f"quick/in/f{index}.txt", "x")

    quick = wait_for_jobs(platform, "quick", 3, timeout_s=30)
    waiting = [r for _, r in platform.ledger.list_jobs("queued")]

    assert all(r.state == JobState.SUCCEEDED for r in quick)
    assert any(r.state == JobState.QUEUED for r in waiting), "slurm's jobs of 'queued' wait one at a time"
    assert all(r.state == JobState.SUCCEEDED for r in wait_for_jobs(platform, "queued", 3, timeout_s=90))


def test_slurm_check_reports_the_node_and_names_what_is_missing(slurm: Slurm, tmp_path: Path) -> None:
    cli = Cli(cli_environment(tmp_path, SLURM_CONF=str(slurm.conf)), tmp_path)

    report = cli.json("slurm", "check", "--timeout", "60")
    assert isinstance(report, dict) and report["ok"]
    assert report["node"]["conveyor_version"] and report["node"]["slurm_job_id"]

    cli.env["CONVEYOR_STORAGE__S3_PUBLIC_ENDPOINT"] = "http://127.0.0.1:9"
    unreachable = cli("slurm", "check", "--timeout", "60", "--json", check=False)
    assert unreachable.returncode == 1
    assert "cannot reach the object store" in " ".join(json.loads(unreachable.stdout)["problems"])

    cli.env["CONVEYOR_STORAGE__S3_PUBLIC_ENDPOINT"] = ""
    cli.env["CONVEYOR_SLURM__RUNTIME"] = "apptainer"
    no_engine = cli("slurm", "check", "--timeout", "60", check=False)
    assert no_engine.returncode == 1
    assert "runtime 'apptainer' is not on node" in " ".join(no_engine.stderr.split())


def test_the_demo_workflow_runs_with_both_services_on_slurm(slurm: Slurm, tmp_path: Path) -> None:
    cli = Cli(cli_environment(tmp_path, SLURM_CONF=str(slurm.conf), CONVEYOR_SLURM__POLL_INTERVAL_S="0.5"), tmp_path)

    done = cli("demo", "--backend", "slurm", "--seconds", "3", "--demo-dir", str(tmp_path / "demo"), timeout=300)

    assert "jobs run as slurm:" in " ".join(done.stderr.split())
    assert "3 frames" in done.stdout and "all expected outputs exist" in done.stdout
    logs = list((tmp_path / "demo" / "logs" / "detect-faces").glob("*.log"))
    assert len(logs) == 3 and all("job succeeded" in log.read_text() for log in logs)
    assert not list((tmp_path / "demo" / "slurm" / "jobs").iterdir()), "every Slurm job was collected"
