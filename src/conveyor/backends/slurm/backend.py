"""The Slurm backend: each job is one sbatch submission (or one task of a job array) that runs
the supervisor on a node; Slurm schedules, Conveyor keeps the ledger.

    submit ─▶ shared dir: jobs/<job>-<attempt>/{job.json (600), job.sh} ─▶ sbatch
    poller ─▶ one `squeue --me` per round for every job ─▶ states; a job's end ─▶ its outcome.json
              (written on the node), else Slurm's verdict (time limit, cancelled, node failure) ─▶
              an outcome the dispatcher retries under the delivery rules; a job squeue forgot and
              scontrol does not know is lost, and runs again.

Jobs are tracked by their Slurm job name, `conveyor.<job>.<attempt>`, so a restarted platform
finds what it submitted before (adopt), and a restarted slurmctld loses nothing: while the
controller does not answer, nothing is concluded.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from pydantic import BaseModel

from conveyor.backends.base import Backend, BackendContext, statuses_of
from conveyor.backends.slurm.commands import QueueEntry, SlurmCommands, SlurmUnavailable
from conveyor.backends.slurm.node import LOG_FILE, OUTCOME_FILE, NodeJob, member_log_name, read_outcome
from conveyor.errors import BackendError, BackendUnavailable
from conveyor.model.job import JobHandle, JobOutcome, JobSpec, JobState, JobStatus
from conveyor.model.service import Service
from conveyor.settings import SlurmSettings
from conveyor.storage.s3 import S3Credentials

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
SUBMISSION_FILE = "submission.json"
_EXPORTED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "CONTAINERS_CONF", "DOCKER_HOST", "XDG_RUNTIME_DIR")
"""The only variables of Conveyor's environment a job takes along (never its credentials)."""


class Submission(BaseModel):
    """Which Slurm job runs a Conveyor job, saved beside it for a restarted platform."""

    name: str
    task: int | None = None
    native_id: str | None = None


@dataclass
class _Tracked:
    spec: JobSpec
    job_dir: Path
    name: str
    task: int | None = None
    native_id: str | None = None
    slurm_out: Path | None = None
    state: str = "SUBMITTING"
    reason: str = ""
    missing_since: float | None = None
    cancelled: bool = False
    outcome: JobOutcome | None = None

    @property
    def key(self) -> tuple[str, int | None]:
        return self.name, self.task


@dataclass
class _Array:
    """Jobs waiting to go to Slurm together, as one job array."""

    jobs: list[_Tracked] = field(default_factory=list)
    due: float = 0.0


class SlurmBackend(Backend):
    name = "slurm"
    full_per_service = True
    runs_batches = True
    """A batch is one Slurm job: one Python start and one store client on the node for all its inputs."""

    def __init__(
        self,
        config: SlurmSettings,
        shared_dir: Path,
        default_store: S3Credentials,
        commands: SlurmCommands | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.commands = commands or SlurmCommands()
        missing = self.commands.missing()
        if missing:
            raise BackendUnavailable(
                f"the Slurm backend needs {', '.join(missing)} on this host's PATH (apt-get install slurm-client, "
                "or run Conveyor on a login node of the cluster)"
            )
        self.shared_dir = shared_dir
        self.default_store = default_store
        self.python = config.python or sys.executable
        self._jobs: dict[str, _Tracked] = {}
        self._pending_array = _Array()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._controller_down_since: float | None = None
        self._array_tasks_left: dict[str, int] = {}
        (shared_dir / "jobs").mkdir(parents=True, exist_ok=True)
        (shared_dir / "arrays").mkdir(parents=True, exist_ok=True)
        self._version = self.commands.version()
        self._thread = threading.Thread(target=self._poll_loop, name="slurm-poller", daemon=True)
        self._thread.start()

    @classmethod
    def create(cls, context: BackendContext) -> Self:
        """Job files go to `slurm.shared_dir` (default: the data dir's slurm/), which nodes must see."""
        shared = context.settings.slurm.shared_dir or context.layout.root / "slurm"
        return cls(context.settings.slurm, shared, context.platform_store)

    # ---- the interface -------------------------------------------------------------------

    def describe(self) -> str:
        where = ", ".join(
            f"{key} {value}"
            for key, value in (
                ("partition", self.config.partition),
                ("account", self.config.account),
                ("qos", self.config.qos),
            )
            if value
        )
        return (
            f"slurm: {self._version}{'; ' + where if where else ''}; scripts as {self.config.runtime} on the nodes; "
            f"at most {self.config.max_pending_per_service} jobs per service in Slurm"
        )

    def warnings_for(self, service: Service) -> list[str]:
        if self.config.runtime == "process":
            return [f"{service.name}: image {service.image!r} is ignored: Slurm nodes run scripts as host processes"]
        return []

    def can_accept(self, job: JobSpec) -> bool:
        with self._lock:
            in_slurm = sum(1 for t in self._jobs.values() if t.spec.service.name == job.service.name and not t.outcome)
        return in_slurm < self.config.max_pending_per_service

    def submit(self, job: JobSpec) -> JobHandle:
        tracked = self._prepare(job)
        if self.config.array_window_s > 0:
            with self._wake:
                if not self._pending_array.jobs:
                    self._pending_array.due = time.monotonic() + self.config.array_window_s
                self._pending_array.jobs.append(tracked)
                self._jobs[job.job_id] = tracked
                self._wake.notify_all()
        else:
            options = self._options(job.service, tracked.name, tracked.job_dir / "slurm.out", len(job.inputs))
            tracked.native_id = self.commands.submit(options, tracked.job_dir / "job.sh")
            self._save_submission(tracked)
            with self._wake:
                self._jobs[job.job_id] = tracked
                self._wake.notify_all()
        return JobHandle(job_id=job.job_id, backend=self.name, native_id=tracked.native_id or "")

    def adopt(self, job: JobSpec) -> JobHandle | None:
        """A job a stopped platform submitted: found again by its Slurm job name."""
        job_dir = self._job_dir(job)
        if not (job_dir / JOB_FILE).exists():
            return None
        try:
            saved = Submission.model_validate_json((job_dir / SUBMISSION_FILE).read_text())
        except (OSError, ValueError):
            saved = Submission(name=_job_name(job))
        tracked = _Tracked(spec=job, job_dir=job_dir, name=saved.name, native_id=saved.native_id)
        self._place(tracked, saved.name, saved.task)
        with self._wake:
            self._jobs[job.job_id] = tracked
            self._wake.notify_all()
        return JobHandle(job_id=job.job_id, backend=self.name, native_id=saved.native_id or "")

    def status(self, handles: list[JobHandle]) -> list[JobStatus]:
        with self._lock:
            return statuses_of(handles, self._jobs)

    def cancel(self, handles: list[JobHandle]) -> list[bool]:
        native_ids, answers = [], []
        with self._wake:
            for handle in handles:
                tracked = self._jobs.get(handle.job_id)
                if tracked is None or tracked.outcome is not None:
                    answers.append(False)
                    continue
                tracked.cancelled = True
                answers.append(True)
                if tracked in self._pending_array.jobs:  # not in Slurm yet
                    self._pending_array.jobs.remove(tracked)
                    self._conclude(tracked, None)
                elif tracked.native_id:
                    native_ids.append(tracked.native_id)
        self.commands.cancel(native_ids)
        self._listener()
        return answers

    def close(self) -> None:
        """Stop watching; jobs keep running in Slurm, and the next start adopts them."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(10)

    # ---- submission ----------------------------------------------------------------------

    def _job_dir(self, job: JobSpec) -> Path:
        return self.shared_dir / "jobs" / f"{job.job_id}-{job.attempt}"

    def _prepare(self, job: JobSpec) -> _Tracked:
        """The job's directory on the shared file system: the job file (secrets: mode 600) and the batch script."""
        job_dir = self._job_dir(job)
        shutil.rmtree(job_dir, ignore_errors=True)  # what an attempt cut short left
        job_dir.mkdir(parents=True, mode=0o700)
        node_job = NodeJob(
            spec=job,
            default_store=self.default_store,
            runtime=self.config.runtime,
            engine_options=self.config.engine_options,
            run_options=self.config.run_options,
            scratch_dir=self.config.scratch_dir,
        )
        job_file = job_dir / JOB_FILE
        descriptor = os.open(job_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(node_job.model_dump_json())
        (job_dir / "job.sh").write_text(
            "#!/bin/sh\n"
            f"# Conveyor job {job.job_id}, attempt {job.attempt}, service {job.service.name}\n"
            f"exec {shlex.quote(self.python)} -m conveyor.backends.slurm.node {shlex.quote(str(job_file))}\n"
        )
        tracked = _Tracked(spec=job, job_dir=job_dir, name=_job_name(job))
        self._place(tracked, tracked.name, None)
        return tracked

    def _array_dir(self, name: str) -> Path:
        return self.shared_dir / "arrays" / name

    def _place(self, tracked: _Tracked, name: str, task: int | None) -> None:
        """The Slurm job (or array task) that runs `tracked`, and where Slurm writes its output."""
        tracked.name, tracked.task = name, task
        if task is None:
            tracked.slurm_out = tracked.job_dir / "slurm.out"
        else:
            tracked.slurm_out = self._array_dir(name) / f"{task}.out"

    def _options(self, service: Service, name: str, output: Path | str, inputs: int = 1) -> list[str]:
        """sbatch options: the service's resources and walltime (its timeout per input of a batch), the
        platform's then the service's settings."""
        own = service.slurm
        options = [
            f"--job-name={name}",
            f"--output={output}",
            f"--chdir={self.shared_dir}",
            f"--cpus-per-task={max(1, math.ceil(service.cpu_cores))}",
            f"--mem={max(1, math.ceil(service.memory_bytes / 2**20))}M",
            f"--time={walltime_minutes(service.timeout * inputs, self.config.time_margin_s)}",
            "--export=" + ",".join(name for name in _EXPORTED if name in os.environ),
        ]
        for option in ("partition", "account", "qos"):
            value = (getattr(own, option) if own else None) or getattr(self.config, option)
            if value:
                options.append(f"--{option}={value}")
        if service.enable_gpu:
            options.append("--gres=gpu:1")
        if labels := service.user_labels:  # OSCAR's labels and annotations, for sacct and squeue -O comment
            options.append("--comment=" + ",".join(f"{key}={value}" for key, value in labels.items()))
        return [*options, *self.config.sbatch_options, *(own.sbatch_options if own else [])]

    def _save_submission(self, tracked: _Tracked) -> None:
        record = Submission(name=tracked.name, task=tracked.task, native_id=tracked.native_id)
        (tracked.job_dir / SUBMISSION_FILE).write_text(record.model_dump_json())

    def _submit_array(self, jobs: list[_Tracked]) -> None:
        """One sbatch for a burst: task i runs the job file on line i+1 of the manifest."""
        name = f"conveyor.array.{uuid.uuid4().hex[:12]}"
        array_dir = self._array_dir(name)
        array_dir.mkdir(parents=True)
        manifest = array_dir / "manifest"
        manifest.write_text("".join(f"{t.job_dir / JOB_FILE}\n" for t in jobs))
        script = array_dir / "job.sh"
        script.write_text(
            "#!/bin/sh\n"
            f"# Conveyor job array: {len(jobs)} jobs\n"
            f"exec {shlex.quote(self.python)} -m conveyor.backends.slurm.node array {shlex.quote(str(manifest))}\n"
        )
        self._array_tasks_left[name] = len(jobs)
        for index, tracked in enumerate(jobs):
            self._place(tracked, name, index)
        inputs = max(len(tracked.spec.inputs) for tracked in jobs)
        options = [
            *self._options(jobs[0].spec.service, name, array_dir / "%a.out", inputs),
            f"--array=0-{len(jobs) - 1}",
        ]
        try:
            array_id = self.commands.submit(options, script)
        except BackendError as error:
            with self._lock:
                for tracked in jobs:
                    tracked.outcome = _failed(f"submit failed: {error}")
            self._listener()
            return
        for tracked in jobs:
            tracked.native_id = f"{array_id}_{tracked.task}"
            self._save_submission(tracked)

    # ---- watching ------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        while True:
            with self._wake:
                self._wake.wait(self._sleep_s())
                if self._stopping:
                    return
                burst = self._take_due_burst()
            try:
                for group in _by_service(burst):
                    self._submit_array(group)
                self._poll_once()
            except Exception:  # the poller must outlive any one bad answer
                log.exception("watching Slurm jobs failed; trying again")

    def _sleep_s(self) -> float:
        if self._pending_array.jobs:
            return max(0.0, min(self.config.poll_interval_s, self._pending_array.due - time.monotonic()))
        return self.config.poll_interval_s

    def _take_due_burst(self) -> list[_Tracked]:
        if not self._pending_array.jobs or time.monotonic() < self._pending_array.due:
            return []
        burst, self._pending_array = self._pending_array.jobs, _Array()
        return burst

    def _poll_once(self) -> None:
        with self._lock:
            waiting = set(map(id, self._pending_array.jobs))
            watched = [t for t in self._jobs.values() if t.outcome is None and id(t) not in waiting]
        if not watched:
            return
        try:
            queue = {(_entry_key(entry)): entry for entry in self.commands.queue()}
        except SlurmUnavailable as error:
            self._note_controller_down(error)
            return
        self._controller_down_since = None
        changed = False
        for tracked in watched:
            entry = queue.get(tracked.key)
            if entry is not None:
                tracked.native_id, tracked.state, tracked.reason = entry.native_id, entry.state, entry.reason
            changed |= self._check(tracked, entry)
        if changed:
            self._listener()

    def _check(self, tracked: _Tracked, entry: QueueEntry | None) -> bool:
        """Conclude the job when it ended; True when it did."""
        if entry is not None and entry.active:
            tracked.missing_since = None
            return False
        outcome = read_outcome(tracked.job_dir / OUTCOME_FILE)
        if outcome is not None:
            self._conclude(tracked, outcome)
            return True
        if entry is not None and entry.state != "COMPLETED":
            self._conclude(tracked, None)
            return True
        # Completed without an outcome yet (a shared file system may show it late), or not listed at all.
        now = time.monotonic()
        tracked.missing_since = tracked.missing_since or now
        if now - tracked.missing_since < self.config.forget_after_s:
            return False
        if entry is None and tracked.native_id and not self._forgotten(tracked.native_id):
            return False
        tracked.state = "COMPLETED" if entry is not None else "LOST"
        self._conclude(tracked, None)
        return True

    def _forgotten(self, native_id: str) -> bool:
        try:
            return self.commands.forgotten(native_id)
        except SlurmUnavailable:
            return False

    def problem(self) -> str | None:
        down_since = self._controller_down_since
        if down_since is None:
            return None
        return f"Slurm's controller has not answered for {time.monotonic() - down_since:.0f} s; jobs wait in Slurm"

    def _note_controller_down(self, error: SlurmUnavailable) -> None:
        if self._controller_down_since is None:
            self._controller_down_since = time.monotonic()
            log.warning("Slurm's controller does not answer (%s); jobs are left as they are until it does", error)

    def _conclude(self, tracked: _Tracked, outcome: JobOutcome | None) -> None:
        """Record how the job ended, take its log back into Conveyor's, remove its directory."""
        from_slurm = outcome is None
        outcome = outcome or self._verdict(tracked)
        _collect_logs(tracked, outcome, from_slurm=from_slurm)
        shutil.rmtree(tracked.job_dir, ignore_errors=True)  # the job file holds secrets
        if tracked.task is not None and tracked.slurm_out is not None:
            tracked.slurm_out.unlink(missing_ok=True)
            self._array_task_done(tracked.slurm_out.parent)
        tracked.outcome = outcome

    def _array_task_done(self, array_dir: Path) -> None:
        """The array's directory (its manifest) goes once its last task ended."""
        left = self._array_tasks_left.get(array_dir.name, 0) - 1
        if left > 0:
            self._array_tasks_left[array_dir.name] = left
            return
        self._array_tasks_left.pop(array_dir.name, None)
        if left == 0:
            shutil.rmtree(array_dir, ignore_errors=True)

    def _verdict(self, tracked: _Tracked) -> JobOutcome:
        """The outcome of a job that wrote none: Slurm's state says what happened to it."""
        job = f"Slurm job {tracked.native_id or tracked.name}"
        state, reason = tracked.state, f" ({tracked.reason})" if tracked.reason and tracked.reason != "None" else ""
        if tracked.cancelled:
            return JobOutcome(state=JobState.CANCELLED, message="cancelled on request")
        if state == "TIMEOUT":
            minutes = walltime_minutes(tracked.spec.service.timeout, self.config.time_margin_s)
            return JobOutcome(
                state=JobState.TIMED_OUT,
                failure="timeout",
                message=f"{job} reached its time limit ({minutes} min: the service's timeout plus the staging margin)",
            )
        if state == "CANCELLED":
            return _failed(f"{job} was cancelled outside Conveyor{reason}; it runs again")
        if state == "LOST":
            return _failed(f"{job} is no longer known to Slurm and left no outcome (lost with its node or the "
                           "controller's state); it runs again")  # fmt: skip
        if state in ("FAILED", "COMPLETED"):
            return _failed(
                f"{job} ended {state}{reason} without the supervisor's outcome: the node could not run "
                f"{self.python} -m conveyor.backends.slurm.node (see the Slurm output below)"
            )
        return _failed(f"{job} ended {state}{reason}; it runs again")


def walltime_minutes(timeout_s: int, margin_s: int) -> int:
    return max(1, math.ceil((timeout_s + margin_s) / 60))


def _job_name(job: JobSpec) -> str:
    return f"conveyor.{job.job_id}.{job.attempt}"


def _entry_key(entry: QueueEntry) -> tuple[str, int | None]:
    _, _, task = entry.native_id.partition("_")
    return entry.name, int(task) if task.isdigit() else None


def _failed(message: str) -> JobOutcome:
    return JobOutcome(state=JobState.FAILED, failure="infrastructure", message=message)


def _by_service(burst: list[_Tracked]) -> list[list[_Tracked]]:
    """An array's tasks share one set of sbatch options, so a burst splits by service."""
    groups: dict[str, list[_Tracked]] = {}
    for tracked in burst:
        groups.setdefault(tracked.spec.service.name, []).append(tracked)
    return list(groups.values())


def _collect_logs(tracked: _Tracked, outcome: JobOutcome, *, from_slurm: bool) -> None:
    """The node's supervisor log goes into Conveyor's job log; Slurm's own output too when it says
    something, and Slurm's verdict when the supervisor could not give its own."""
    parts = []
    node_log = tracked.job_dir / LOG_FILE
    if node_log.exists():
        parts.append(node_log.read_bytes())
    if tracked.slurm_out is not None and tracked.slurm_out.exists():
        output = tracked.slurm_out.read_bytes().strip()
        if output:
            parts.append(f"--- Slurm output of job {tracked.native_id} ---\n".encode() + output + b"\n")
    if from_slurm:
        parts.append(f"slurm: {outcome.message}\n".encode())
    _append(tracked.spec.log_path, parts)
    for member in tracked.spec.batch:
        member_log = tracked.job_dir / member_log_name(member.job_id)
        _append(member.log_path, [member_log.read_bytes()] if member_log.exists() else [])


def _append(log_path: Path, parts: list[bytes]) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        for part in parts:
            out.write(part)
