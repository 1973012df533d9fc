"""The Slurm backend's decisions, with Slurm's answers scripted: what squeue's lines mean, which
sbatch options a service gets, and how each way a job ends becomes an outcome. tests/e2e/test_slurm.py
runs the same code against a real cluster."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.backends.slurm.backend import SlurmBackend, walltime_minutes
from conveyor.backends.slurm.commands import QueueEntry, SlurmUnavailable, parse_queue_line
from conveyor.model.job import JobHandle, JobSpec, JobState
from conveyor.model.service import Service
from conveyor.settings import SlurmSettings
from conveyor.storage.s3 import S3Credentials


class ScriptedSlurm:
    """Answers like SlurmCommands; `lines` is what squeue lists, `down` makes the controller silent."""

    def __init__(self) -> None:
        self.lines: list[QueueEntry] = []
        self.down = False
        self.known: set[str] = set()
        self.submitted: list[list[str]] = []
        self.cancelled: list[str] = []

    def missing(self) -> list[str]:
        return []

    def version(self) -> str:
        return "slurm 22.05.8"

    def submit(self, options: list[str], script: Path) -> str:
        self.submitted.append(options)
        return str(100 + len(self.submitted))

    def queue(self) -> list[QueueEntry]:
        if self.down:
            raise SlurmUnavailable("squeue: Unable to contact slurm controller (connect failure)")
        return list(self.lines)

    def forgotten(self, native_id: str) -> bool:
        if self.down:
            raise SlurmUnavailable("scontrol: Unable to contact slurm controller")
        return native_id not in self.known

    def cancel(self, native_ids: list[str]) -> bool:
        self.cancelled += native_ids
        return True


def _service(**fields: object) -> Service:
    return Service.model_validate(
        {"name": "svc", "image": "img", "script": "true", "input": [{"path": "bucket/in"}], **fields}
    )


def _spec(tmp_path: Path, job_id: str = "svc-1", **fields: object) -> JobSpec:
    return JobSpec(
        job_id=job_id, service=_service(**fields), work_dir=tmp_path / "w", log_path=tmp_path / f"{job_id}.log"
    )


@pytest.fixture
def slurm() -> ScriptedSlurm:
    return ScriptedSlurm()


@pytest.fixture
def backend(tmp_path: Path, slurm: ScriptedSlurm) -> Iterator[SlurmBackend]:
    config = SlurmSettings(enabled=True, partition="batch", poll_interval_s=3600, forget_after_s=0.01)
    backend = SlurmBackend(config, tmp_path / "shared", S3Credentials(endpoint="http://s3:8333"), commands=slurm)  # type: ignore[arg-type]
    try:
        yield backend
    finally:
        backend.close()


def _handle(spec: JobSpec) -> JobHandle:
    return JobHandle(job_id=spec.job_id, backend="slurm")


def test_squeue_lines_parse_jobs_and_array_tasks() -> None:
    assert parse_queue_line("123|conveyor.a.1|RUNNING|None") == QueueEntry("123", "conveyor.a.1", "RUNNING", "None")
    task = parse_queue_line("77_3|conveyor.array.x|PENDING|Resources")
    assert task is not None and task.native_id == "77_3" and task.active
    assert parse_queue_line("9|n|CANCELLED+|None") == QueueEntry("9", "n", "CANCELLED", "None")
    assert parse_queue_line("garbage") is None


def test_walltime_is_the_timeout_plus_the_margin_in_whole_minutes() -> None:
    assert walltime_minutes(60, 300) == 6
    assert walltime_minutes(1, 0) == 1
    assert walltime_minutes(3600, 30) == 61


def test_sbatch_options_carry_resources_walltime_and_the_service_settings_over_the_platform_ones(
    backend: SlurmBackend, slurm: ScriptedSlurm, tmp_path: Path
) -> None:
    spec = _spec(
        tmp_path, cpu="1.5", memory="1Gi", timeout=120, enable_gpu=True,
        slurm={"qos": "short", "sbatch_options": ["--nice=5"]},
        labels={"team": "bio"}, annotations={"team": "old", "cost": "lab-7"},
    )  # fmt: skip
    backend.submit(spec)

    [options] = slurm.submitted
    assert "--job-name=conveyor.svc-1.1" in options
    assert "--cpus-per-task=2" in options and "--mem=1024M" in options
    assert "--time=7" in options  # 120 s + the default 300 s margin
    assert "--partition=batch" in options and "--qos=short" in options
    assert "--gres=gpu:1" in options and options[-1] == "--nice=5"
    assert "--comment=team=bio,cost=lab-7" in options, "OSCAR's labels (over its annotations) make the comment"
    assert not any("SECRET" in option or "AWS" in option for option in options)
    export = next(option for option in options if option.startswith("--export="))
    assert "CONVEYOR" not in export


def test_the_job_file_with_the_secrets_is_readable_by_its_owner_only(backend: SlurmBackend, tmp_path: Path) -> None:
    spec = _spec(tmp_path, environment={"secrets": {"TOKEN": "s3cr3t"}})
    backend.submit(spec)

    job_file = tmp_path / "shared" / "jobs" / "svc-1-1" / "job.json"
    assert job_file.stat().st_mode & 0o777 == 0o600
    assert "s3cr3t" in job_file.read_text()
    assert "s3cr3t" not in (job_file.parent / "job.sh").read_text()


@pytest.mark.parametrize(
    ("state", "expected", "failure", "words"),
    [
        ("TIMEOUT", JobState.TIMED_OUT, "timeout", "reached its time limit"),
        ("CANCELLED", JobState.FAILED, "infrastructure", "cancelled outside Conveyor"),
        ("NODE_FAIL", JobState.FAILED, "infrastructure", "ended NODE_FAIL"),
        ("FAILED", JobState.FAILED, "infrastructure", "could not run"),
    ],
)
def test_slurms_verdict_becomes_an_outcome_when_the_node_wrote_none(
    backend: SlurmBackend,
    slurm: ScriptedSlurm,
    tmp_path: Path,
    state: str,
    expected: JobState,
    failure: str,
    words: str,
) -> None:
    spec = _spec(tmp_path)
    backend.submit(spec)
    slurm.lines = [QueueEntry("101", "conveyor.svc-1.1", state, "None")]

    backend._poll_once()

    [status] = backend.status([_handle(spec)])
    assert status.state == expected and status.outcome is not None
    assert status.outcome.failure == failure and words in status.outcome.message
    assert words in spec.log_path.read_text(), "Slurm's verdict is in the job's log"
    assert not (tmp_path / "shared" / "jobs" / "svc-1-1").exists()


def test_a_job_slurm_forgot_is_lost_but_a_silent_controller_concludes_nothing(
    backend: SlurmBackend, slurm: ScriptedSlurm, tmp_path: Path
) -> None:
    spec = _spec(tmp_path)
    backend.submit(spec)
    slurm.down = True
    backend._poll_once()
    time.sleep(0.02)
    backend._poll_once()
    [status] = backend.status([_handle(spec)])
    assert status.state == JobState.RUNNING, "no conclusion while the controller does not answer"

    slurm.down = False
    backend._poll_once()  # squeue answers without the job: the clock starts
    time.sleep(0.02)
    backend._poll_once()  # past forget_after_s, and scontrol does not know it
    [status] = backend.status([_handle(spec)])
    assert status.state == JobState.FAILED and status.outcome is not None
    assert status.outcome.failure == "infrastructure" and "no longer known to Slurm" in status.outcome.message


def test_admission_counts_the_jobs_of_one_service_only(tmp_path: Path, slurm: ScriptedSlurm) -> None:
    config = SlurmSettings(enabled=True, max_pending_per_service=1, poll_interval_s=3600)
    backend = SlurmBackend(config, tmp_path / "shared", S3Credentials(), commands=slurm)  # type: ignore[arg-type]
    try:
        first = _spec(tmp_path, "svc-1")
        other = JobSpec(
            job_id="other-1",
            service=_service(name="other"),
            work_dir=tmp_path / "o",
            log_path=tmp_path / "o.log",
        )
        assert backend.can_accept(first)
        backend.submit(first)
        assert not backend.can_accept(_spec(tmp_path, "svc-2"))
        assert backend.can_accept(other)
    finally:
        backend.close()
