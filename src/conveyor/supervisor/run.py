"""One job, start to end: stage-in → run the script → stage-out → outcome.

The supervisor decides *what* runs; a `ScriptRunner` (conveyor.runners: a host process, a
container...) decides *how*. Every failure ends as a JobOutcome with a message that says what to
fix; nothing here raises to the caller.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from conveyor.errors import (
    BackendError,
    ConveyorError,
    EngineUnreachable,
    ObjectNotFound,
    StorageError,
    StorageUnreachable,
    UnsafeKeyError,
    no_space_left,
)
from conveyor.model.event import iso_z, utcnow
from conveyor.model.job import DISK, ENGINE, Failure, JobOutcome, JobSpec, JobState
from conveyor.runners.base import RunRecord, ScriptInvocation, ScriptResult, ScriptRunner
from conveyor.storage.registry import ProviderRegistry
from conveyor.supervisor import contract
from conveyor.supervisor.stage import (
    StageOutError,
    safe_input_name,
    stage_in_object,
    stage_in_request,
    stage_out,
    sync_response,
)

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50, "NOTSET": 0}


class JobLog:
    """A job's log file: supervisor lines in OSCAR's format, interleaved with the script's output.

    Its own lines are best effort: on a full disk they are dropped, and the job's outcome still
    reaches the ledger (the job then waits for room: dispatch/disk.py)."""

    def __init__(self, path: Path, level: str) -> None:
        self.path = path
        self.threshold = _LEVELS.get(level, 20)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError as error:  # a full disk: the job fails where it needs the disk, with the reason
            if not no_space_left(error):
                raise

    def write(self, level: str, message: str) -> None:
        if _LEVELS[level] < self.threshold:
            return
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
        try:
            with self.path.open("a", encoding="utf-8") as log:
                log.write(f"{stamp} - supervisor - {level} - {message}\n")
        except OSError as error:
            if not no_space_left(error):
                raise

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

    def run(self, spec: JobSpec, *, resume: bool = False, stop: threading.Event | None = None) -> JobOutcome:
        """Run the job; with `resume`, pick up a script an earlier platform process started.

        A batch (spec.batch) runs every input and reports each in JobOutcome.members; `stop` set
        (a cancel) lets no further script of it start.
        """
        if not spec.batch:
            return self._attempt(
                spec,
                lambda log: self._resume(spec, log) if resume else self._run(spec, log, stop=stop),
                resume=resume,
                stop=stop,
            )
        stop = stop or threading.Event()
        if spec.service.batch is not None and spec.service.batch.mode == "directory":
            return self._run_directory(spec, stop)
        return self._run_each(spec, stop)

    def _attempt(
        self,
        spec: JobSpec,
        body: Callable[[JobLog], JobOutcome],
        *,
        resume: bool = False,
        stop: threading.Event | None = None,
    ) -> JobOutcome:
        """Log, time and tidy one run; failures around the script become the outcome."""
        started = utcnow()
        log = JobLog(spec.log_path, spec.service.log_level)
        if resume:
            log.write("INFO", f"job {spec.job_id} (attempt {spec.attempt}): the platform restarted; picking it up")
        else:
            log.write("INFO", f"job {spec.job_id} (attempt {spec.attempt}) of service {spec.service.name!r}")
        try:
            outcome = body(log)
        except (StorageError, UnsafeKeyError, BackendError, ConveyorError, OSError) as error:
            outcome = failed_outcome(error)
        finally:
            if not self.keep_work_dirs:
                shutil.rmtree(spec.work_dir, ignore_errors=True)
        if stop is not None and stop.is_set() and outcome.state != JobState.SUCCEEDED:
            outcome = outcome.model_copy(update={"state": JobState.CANCELLED, "message": "cancelled on request"})
        outcome.started_at = started
        outcome.finished_at = utcnow()
        level = "INFO" if outcome.state in (JobState.SUCCEEDED, JobState.CANCELLED) else "ERROR"
        log.write(level, f"job {outcome.state}: {outcome.message}")
        return outcome

    def _run(
        self, spec: JobSpec, log: JobLog, runner_key: str | None = None, stop: threading.Event | None = None
    ) -> JobOutcome:
        input_dir, output_dir = _fresh_work_dir(spec.work_dir)
        env = self._stage_in(spec, input_dir, log)
        if stop is not None and stop.is_set():  # cancelled while its input came in
            return JobOutcome(state=JobState.CANCELLED, message="cancelled on request before its script started")
        env[contract.INPUT_FILE_PATHS] = env[contract.INPUT_FILE_PATH]
        env[contract.TMP_INPUT_DIR] = str(input_dir)
        env[contract.TMP_OUTPUT_DIR] = str(output_dir)
        return self._run_script(spec, log, env, spec.service.timeout, runner_key or spec.job_id)

    def _run_script(
        self, spec: JobSpec, log: JobLog, contract_vars: dict[str, str], timeout_s: float, runner_key: str
    ) -> JobOutcome:
        script_path = spec.work_dir / "script.sh"
        script_path.write_text(spec.service.script)
        offset = log.size()
        clock = time.monotonic()
        invocation = self._invocation(spec, _script_environment(spec, contract_vars), timeout_s, runner_key)
        result = self.runner.run(invocation)
        return self._conclude(spec, log, result, time.monotonic() - clock, log.read_from(offset), timeout_s)

    # ---- batches (Service.batch) ------------------------------------------------------------

    def _run_each(self, spec: JobSpec, stop: threading.Event) -> JobOutcome:
        """The script once per input, one after the other, each input a job as if run alone."""
        members: dict[str, JobOutcome] = {}

        def run_one(member: JobSpec, log: JobLog) -> JobOutcome:
            log.write("INFO", f"runs in a batch of {len(spec.inputs)} inputs, led by job {spec.job_id}")
            return self._run(member, log, spec.job_id)

        for member in spec.inputs:
            if stop.is_set():
                members[member.job_id] = _not_started(spec)
            else:
                members[member.job_id] = self._attempt(member, lambda log, m=member: run_one(m, log))
        return batch_outcome(members)

    def _run_directory(self, spec: JobSpec, stop: threading.Event) -> JobOutcome:
        """The script once for every input, all of them in one input directory."""
        members: dict[str, JobOutcome] = {}  # jobs whose input failed to stage; the rest share the run's outcome
        staged_ids: list[str] = []

        def run_together(log: JobLog) -> JobOutcome:
            for member in spec.batch:
                note = f"job {member.job_id} runs in one batch with job {spec.job_id}: its log has the script output"
                JobLog(member.log_path, spec.service.log_level).write("INFO", note)
            jobs = ", ".join(member.job_id for member in spec.inputs)
            log.write("INFO", f"a batch of {len(spec.inputs)} inputs in one run: {jobs}")
            input_dir, output_dir = _fresh_work_dir(spec.work_dir)
            staged = self._stage_in_batch(spec, input_dir, log, members)
            if not staged:
                message = "no input of the batch could be staged in"
                return JobOutcome(state=JobState.FAILED, message=message, failure="input")
            staged_ids.extend(member.job_id for member, _ in staged)
            if stop.is_set():
                return _not_started(spec)
            env = staged[0][1]
            env[contract.INPUT_FILE_PATHS] = "\n".join(vars_[contract.INPUT_FILE_PATH] for _, vars_ in staged)
            env[contract.EVENT] = batch_event([member for member, _ in staged]) or env.get(contract.EVENT, "")
            env[contract.TMP_INPUT_DIR] = str(input_dir)
            env[contract.TMP_OUTPUT_DIR] = str(output_dir)
            deepest = spec.model_copy(update={"depth": max(member.depth for member, _ in staged)})
            return self._run_script(deepest, log, env, spec.service.timeout * len(staged), spec.job_id)

        outcome = self._attempt(spec, run_together)
        owner = staged_ids[0] if staged_ids else spec.job_id  # the run's outputs are recorded on this job
        for member in spec.inputs:
            if member.job_id not in members:
                members[member.job_id] = (
                    outcome if member.job_id == owner else shared_outcome(outcome, owner, len(spec.inputs))
                )
        return batch_outcome(members)

    def _stage_in_batch(
        self, spec: JobSpec, input_dir: Path, log: JobLog, failed: dict[str, JobOutcome]
    ) -> list[tuple[JobSpec, dict[str, str]]]:
        """Each input into `input_dir`; one that cannot be staged fails alone (into `failed`)."""
        staged: list[tuple[JobSpec, dict[str, str]]] = []
        names: set[str] = set()
        for member in spec.inputs:
            try:
                name = safe_input_name(member.event.ref.key) if member.event is not None else member.job_id
                if name in names:
                    raise StorageError(f"another input of its batch has the file name {name!r}; it runs again alone")
                names.add(name)
                staged.append((member, self._stage_in(member, input_dir, log)))
            except (StorageError, UnsafeKeyError, ConveyorError, OSError) as error:
                log.write("ERROR", f"job {member.job_id}: {error}")
                failed[member.job_id] = failed_outcome(error)
        return staged

    def _resume(self, spec: JobSpec, log: JobLog) -> JobOutcome:
        record = RunRecord.load(spec.work_dir)
        if record is None:
            raise BackendError(f"job {spec.job_id} left no record of its script; it must run again")
        remaining = max(0.0, spec.service.timeout - (time.time() - record.started_at))
        offset = log.size()
        clock = time.monotonic()
        result = self.runner.reattach(self._invocation(spec, {}, remaining, spec.job_id), record)
        return self._conclude(spec, log, result, time.monotonic() - clock, log.read_from(offset), spec.service.timeout)

    @staticmethod
    def _invocation(spec: JobSpec, env: dict[str, str], timeout_s: float, runner_key: str) -> ScriptInvocation:
        return ScriptInvocation(
            job_id=runner_key,
            service=spec.service,
            script_path=spec.work_dir / "script.sh",
            env=env,
            work_dir=spec.work_dir,
            timeout_s=timeout_s,
            log_path=spec.log_path,
        )

    def _conclude(
        self, spec: JobSpec, log: JobLog, result: ScriptResult, elapsed: float, script_output: bytes, timeout_s: float
    ) -> JobOutcome:
        """From the script's end to the outcome: a failure uploads nothing, a success stages out."""
        output_dir = spec.work_dir / "output"
        if result.timed_out:
            return JobOutcome(
                state=JobState.TIMED_OUT,
                failure="timeout",
                exit_code=result.exit_code,
                message=f"killed after {timeout_s:g} s, the service's timeout"
                + ("" if timeout_s == spec.service.timeout else " for each input of the batch")
                + "; nothing was uploaded",
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
            outcome = failed_outcome(error)
            return outcome.model_copy(update={"exit_code": 0, "outputs": error.stored})
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
            except StorageUnreachable as error:
                message = f"stage-in failed: could not download {event.ref}: {error}"
                raise StorageUnreachable(message, provider=event.ref.provider) from error
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


def _fresh_work_dir(work_dir: Path) -> tuple[Path, Path]:
    """Empty input/ and output/ folders (whatever an attempt cut short left there is gone)."""
    shutil.rmtree(work_dir, ignore_errors=True)
    input_dir, output_dir = work_dir / "input", work_dir / "output"
    input_dir.mkdir(parents=True, exist_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    return input_dir, output_dir


def _not_started(batch: JobSpec) -> JobOutcome:
    return JobOutcome(
        state=JobState.CANCELLED, message=f"its batch (job {batch.job_id}) was stopped before its script ran"
    )


def shared_outcome(outcome: JobOutcome, owner: str, inputs: int) -> JobOutcome:
    """A job's part of a run it shared: the run's state; the outputs stay recorded on job `owner`."""
    return outcome.model_copy(
        update={
            "message": f"ran in one batch with job {owner} ({inputs} inputs): {outcome.message}"
            + (f"; the outputs are recorded on job {owner}" if outcome.outputs else ""),
            "outputs": [],
            "response": None,
        }
    )


def batch_outcome(members: dict[str, JobOutcome]) -> JobOutcome:
    failed = [outcome for outcome in members.values() if outcome.state != JobState.SUCCEEDED]
    return JobOutcome(
        state=failed[0].state if failed else JobState.SUCCEEDED,
        failure=failed[0].failure if failed else None,
        message=f"batch of {len(members)}: {len(members) - len(failed)} succeeded",
        members=members,
    )


def batch_event(inputs: list[JobSpec]) -> str | None:
    """`$EVENT` for a batch: one notification with a record per input, as S3 may send; None when too big."""
    events = [member.event for member in inputs if member.event is not None]
    if not events:
        return None
    notification = events[0].to_s3_record()
    notification["Records"] = [record for event in events for record in event.to_s3_record()["Records"]]
    text = json.dumps(notification)
    return text if len(text) <= contract.EVENT_ENV_LIMIT else None


def failed_outcome(error: Exception) -> JobOutcome:
    """A failure around the script as an outcome; one whose store or engine did not answer waits for it."""
    waiting_for = unreachable_store(error)
    if waiting_for is None and no_space_left(error):
        waiting_for = DISK  # the dispatcher's disk gate decides whether it waits (dispatch/disk.py)
    failure: Failure = "unavailable" if waiting_for else failure_of(error)
    return JobOutcome(state=JobState.FAILED, message=str(error), failure=failure, waiting_for=waiting_for)


def unreachable_store(error: Exception) -> str | None:
    """What the job could not reach at all, when that is why it failed: a store, or ENGINE."""
    if isinstance(error, EngineUnreachable):
        return ENGINE
    if isinstance(error, StorageUnreachable):
        return error.provider
    if isinstance(error, StageOutError):
        return error.unreachable
    return None


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
