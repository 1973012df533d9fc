"""One job, start to end: stage-in → run the script → stage-out → outcome.

The supervisor decides *what* runs; a `ScriptRunner` (a host process, a container...) decides
*how*. Every failure ends as a JobOutcome with a message that says what to fix; nothing here
raises to the caller.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal, Protocol

from pydantic import BaseModel

from conveyor.errors import BackendError, ConveyorError, ObjectNotFound, StorageError, UnsafeKeyError
from conveyor.model.event import iso_z, utcnow
from conveyor.model.job import Failure, JobOutcome, JobSpec, JobState
from conveyor.model.service import Service
from conveyor.storage.registry import ProviderRegistry
from conveyor.supervisor import contract
from conveyor.supervisor.stage import (
    StageOutError,
    stage_in_object,
    stage_in_request,
    stage_out,
    sync_response,
)

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50, "NOTSET": 0}


@dataclass(frozen=True)
class ScriptInvocation:
    """What a runner needs to run a service's script once."""

    job_id: str
    service: Service
    script_path: Path
    env: dict[str, str]
    work_dir: Path
    """Holds input/, output/ and the script; containers mount it at the same path."""
    timeout_s: float
    log_path: Path
    """The script's stdout and stderr are appended here."""


@dataclass(frozen=True)
class ScriptResult:
    exit_code: int | None
    timed_out: bool = False


class RunRecord(BaseModel):
    """What a runner started, written beside the job, so a platform restarted after a crash can
    find the script still running (or its exit code) instead of running it a second time."""

    kind: Literal["process", "container", "exec"]
    started_at: float
    """time.time() when the script started: the timeout counts from there."""
    pid: int | None = None
    container_id: str | None = None
    exec_id: str | None = None
    """A job run in a warm container: the exec that runs its script."""
    exit_file: str | None = None
    """Where a host process's wrapper writes the script's exit code."""

    FILE: ClassVar[str] = "run.json"

    def save(self, work_dir: Path) -> None:
        temporary = work_dir / (self.FILE + ".tmp")
        temporary.write_text(self.model_dump_json())
        temporary.replace(work_dir / self.FILE)  # never a half-written record

    @classmethod
    def load(cls, work_dir: Path) -> RunRecord | None:
        try:
            return cls.model_validate_json((work_dir / cls.FILE).read_text())
        except (OSError, ValueError):
            return None


class ScriptRunner(Protocol):
    name: str

    def run(self, invocation: ScriptInvocation) -> ScriptResult:
        """Run the script to its end (or its timeout); raise BackendError when it cannot start.

        Once the script runs, a RunRecord is saved in the work dir.
        """
        ...

    def reattach(self, invocation: ScriptInvocation, record: RunRecord) -> ScriptResult:
        """Wait for a script an earlier platform process started (the timeout counts from its start)."""
        ...

    def cancel(self, job_id: str) -> bool: ...


class JobLog:
    """A job's log file: supervisor lines in OSCAR's format, interleaved with the script's output."""

    def __init__(self, path: Path, level: str) -> None:
        self.path = path
        self.threshold = _LEVELS.get(level, 20)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def write(self, level: str, message: str) -> None:
        if _LEVELS[level] < self.threshold:
            return
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        with self.path.open("a", encoding="utf-8") as log:
            log.write(f"{stamp} - supervisor - {level} - {message}\n")

    def size(self) -> int:
        return self.path.stat().st_size

    def read_from(self, offset: int) -> bytes:
        with self.path.open("rb") as log:
            log.seek(offset)
            return log.read()


class Supervisor:
    def __init__(self, storage: ProviderRegistry, runner: ScriptRunner, *, keep_work_dirs: bool = False) -> None:
        self.storage = storage
        self.runner = runner
        self.keep_work_dirs = keep_work_dirs

    def run(self, spec: JobSpec, *, resume: bool = False) -> JobOutcome:
        """Run the job; with `resume`, pick up a script an earlier platform process started."""
        started = utcnow()
        log = JobLog(spec.log_path, spec.service.log_level)
        if resume:
            log.write("INFO", f"job {spec.job_id} (attempt {spec.attempt}): the platform restarted; picking it up")
        else:
            log.write("INFO", f"job {spec.job_id} (attempt {spec.attempt}) of service {spec.service.name!r}")
        try:
            outcome = self._resume(spec, log) if resume else self._run(spec, log)
        except (StorageError, UnsafeKeyError, BackendError, ConveyorError, OSError) as error:
            outcome = JobOutcome(state=JobState.FAILED, message=str(error), failure=failure_of(error))
        finally:
            if not self.keep_work_dirs:
                shutil.rmtree(spec.work_dir, ignore_errors=True)
        outcome.started_at = started
        outcome.finished_at = utcnow()
        log.write("INFO" if outcome.state == JobState.SUCCEEDED else "ERROR", f"job {outcome.state}: {outcome.message}")
        return outcome

    def _run(self, spec: JobSpec, log: JobLog) -> JobOutcome:
        shutil.rmtree(spec.work_dir, ignore_errors=True)  # whatever an attempt cut short left there
        input_dir, output_dir = spec.work_dir / "input", spec.work_dir / "output"
        input_dir.mkdir(parents=True, exist_ok=True)
        output_dir.mkdir(parents=True, exist_ok=True)
        env = self._stage_in(spec, input_dir, log)
        env[contract.TMP_INPUT_DIR] = str(input_dir)
        env[contract.TMP_OUTPUT_DIR] = str(output_dir)
        script_path = spec.work_dir / "script.sh"
        script_path.write_text(spec.service.script)

        offset = log.size()
        clock = time.monotonic()
        result = self.runner.run(self._invocation(spec, _script_environment(spec, env), spec.service.timeout))
        return self._conclude(spec, log, result, time.monotonic() - clock, log.read_from(offset))

    def _resume(self, spec: JobSpec, log: JobLog) -> JobOutcome:
        record = RunRecord.load(spec.work_dir)
        if record is None:
            raise BackendError(f"job {spec.job_id} left no record of its script; it must run again")
        remaining = max(0.0, spec.service.timeout - (time.time() - record.started_at))
        offset = log.size()
        clock = time.monotonic()
        result = self.runner.reattach(self._invocation(spec, {}, remaining), record)
        return self._conclude(spec, log, result, time.monotonic() - clock, log.read_from(offset))

    @staticmethod
    def _invocation(spec: JobSpec, env: dict[str, str], timeout_s: float) -> ScriptInvocation:
        return ScriptInvocation(
            job_id=spec.job_id,
            service=spec.service,
            script_path=spec.work_dir / "script.sh",
            env=env,
            work_dir=spec.work_dir,
            timeout_s=timeout_s,
            log_path=spec.log_path,
        )

    def _conclude(
        self, spec: JobSpec, log: JobLog, result: ScriptResult, elapsed: float, script_output: bytes
    ) -> JobOutcome:
        """From the script's end to the outcome: a failure uploads nothing, a success stages out."""
        output_dir = spec.work_dir / "output"
        if result.timed_out:
            return JobOutcome(
                state=JobState.TIMED_OUT,
                failure="timeout",
                exit_code=result.exit_code,
                message=f"killed after {spec.service.timeout} s, the service's timeout; nothing was uploaded",
                response=script_output,
            )
        if result.exit_code != 0:
            return JobOutcome(
                state=JobState.FAILED,
                failure="script",
                exit_code=result.exit_code,
                message=f"the script exited with code {result.exit_code} after {elapsed:.1f} s; nothing was uploaded",
                response=script_output,
            )
        log.write("INFO", f"script finished in {elapsed:.3f} s; uploading outputs")
        try:
            producer = {contract.PRODUCER_JOB_METADATA: spec.job_id, contract.PRODUCER_DEPTH_METADATA: str(spec.depth)}
            stored = stage_out(output_dir, spec.service.output, self.storage.lookup_for(spec.service), producer)
        except StageOutError as error:
            return JobOutcome(
                state=JobState.FAILED, exit_code=0, message=str(error), outputs=error.stored, failure="infrastructure"
            )
        for info in stored:
            log.write("INFO", f"stored {info.ref.provider}:{info.ref}")
        return JobOutcome(
            state=JobState.SUCCEEDED,
            exit_code=0,
            message=f"{len(stored)} output(s) stored",
            outputs=stored,
            response=sync_response(output_dir, script_output) if spec.sync else None,
        )

    def _stage_in(self, spec: JobSpec, input_dir: Path, log: JobLog) -> dict[str, str]:
        """Fetch the input; returns the contract variables that describe it."""
        env: dict[str, str] = {}
        if spec.event is not None:
            event = spec.event
            env[contract.STORAGE_OBJECT_KEY] = event.ref.key
            env[contract.EVENT] = json.dumps(event.to_s3_record())
            env[contract.EVENT_TIME] = iso_z(event.event_time)
            if spec.service.file_stage_in:
                log.write("INFO", f"file_stage_in is set: {event.ref} is not downloaded")
                env[contract.INPUT_FILE_PATH] = str(input_dir)
                return env
            log.write("INFO", f"downloading {event.ref.provider}:{event.ref}")
            try:
                path = stage_in_object(event, self.storage.provider(event.ref.provider, spec.service), input_dir)
            except ObjectNotFound as error:
                raise ObjectNotFound(f"stage-in failed: {event.ref} no longer exists: {error}") from error
            except StorageError as error:
                raise StorageError(f"stage-in failed: could not download {event.ref}: {error}") from error
        elif spec.request_path is not None:
            body = spec.request_path.read_bytes()
            if len(body) <= contract.EVENT_ENV_LIMIT and b"\x00" not in body:
                env[contract.EVENT] = body.decode("utf-8", errors="replace")
            path = stage_in_request(body, input_dir)
        else:
            raise ConveyorError(f"job {spec.job_id} has neither an object nor a request body")
        env[contract.INPUT_FILE_PATH] = str(path)
        log.write("INFO", f"INPUT_FILE_PATH variable set to '{path}'")
        return env


def failure_of(error: Exception) -> Failure:
    """Bad input is final; anything else around the script (store, engine, image, disk) may pass."""
    if isinstance(error, ObjectNotFound | UnsafeKeyError):
        return "input"
    if isinstance(error, StorageError | BackendError | OSError):
        return "infrastructure"
    return "input"


def _script_environment(spec: JobSpec, contract_vars: dict[str, str]) -> dict[str, str]:
    """User variables and secrets first, so the contract's names always win."""
    env = dict(spec.service.environment.variables)
    env.update(spec.service.environment.secrets)
    env.update(contract_vars)
    env[contract.JOB_UUID] = spec.job_id
    env[contract.OSCAR_SERVICE_NAME] = spec.service.name
    return env
