"""The dispatcher: takes queued jobs from the ledger, oldest first, and hands each to its
service's backend while that backend has room; when a backend reports an outcome it records it, or
queues a retry, or keeps the job as a dead letter.

Order is first in, first out per backend (per service where a backend admits per service, as
Slurm's pending limit does): a full backend never holds back the jobs of another.

It sleeps on a condition variable and wakes when an event is accepted, a job finishes, a service
changes, or the next retry is due; the periodic wake-up is only a safety net.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime

from conveyor.backends.base import Backend
from conveyor.backends.registry import Backends
from conveyor.dispatch.disk import DiskGate
from conveyor.dispatch.outages import Outages
from conveyor.dispatch.retry import Decision, RetryPolicy
from conveyor.errors import ConveyorError, UnsafeKeyError, no_space_left
from conveyor.layout import DataLayout
from conveyor.ledger.store import ClaimedJob, Ledger
from conveyor.model.event import utcnow
from conveyor.model.job import TERMINAL_STATES, JobHandle, JobOutcome, JobSpec, JobState
from conveyor.model.service import Service
from conveyor.supervisor.stage import safe_input_name

log = logging.getLogger(__name__)

SAFETY_WAKE_S = 5.0
PAGE = 64
FIRST_PAGE = 4


@dataclass
class _Inflight:
    handle: JobHandle
    spec: JobSpec


class Dispatcher:
    def __init__(
        self,
        ledger: Ledger,
        backends: Backends,
        layout: DataLayout,
        retry: RetryPolicy | None = None,
        outages: Outages | None = None,
        disk: DiskGate | None = None,
    ) -> None:
        self.ledger = ledger
        self.backends = backends
        self.layout = layout
        self.retry = retry or RetryPolicy()
        self.outages = outages
        """Stores that do not answer: the jobs of services that use one wait, queued."""
        self.disk = disk
        """The data directory's free space: while it is low no job starts, and failures wait for room."""
        self._wake = threading.Condition()
        self._woken = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._inflight: dict[str, _Inflight] = {}
        self._unrecorded: dict[str, tuple[JobSpec, JobOutcome]] = {}
        """Jobs that ended but whose end the ledger has not taken yet (a full disk): written each round,
        before any job starts, until it takes them; never dropped."""
        self._waiters: dict[str, Future[JobOutcome]] = {}
        self._waiters_lock = threading.Lock()
        self._services: dict[str, Service] = {}
        self._next_retry: float | None = None
        """time.monotonic() when the earliest queued retry is due."""
        self._no_retry_waiting = False
        """Known since the last look: no queued retry waits (retries queued later set _next_retry)."""
        self._cancelled: set[str] = set()
        """Running jobs a user cancelled: their end is recorded as cancelled, never retried."""
        self._lead_of: dict[str, str] = {}
        """Jobs running in a batch (but not leading it) → the job whose handle runs the batch."""
        for backend in backends:
            backend.set_listener(self.wake)

    # ---- lifecycle ------------------------------------------------------------------------

    def recover(self) -> tuple[int, int]:
        """Jobs a stopped (or killed) platform left running: adopt what survived, queue the rest again.

        Returns (adopted, queued again). Called once, before start().
        """
        adopted = requeued = 0
        for job in self.ledger.running_jobs():
            service = self._service(job.service)
            if service is None:
                self._finish(job.job_id, JobOutcome(state=JobState.CANCELLED, message="its service no longer exists"))
                continue
            spec = self._spec(job, service)
            backend = self.backends.for_service(service)
            handle = backend.adopt(spec) if backend is not None else None
            if handle is None:
                why = "queued again: the platform stopped before the job ended, and nothing of its run survived"
                self.ledger.requeue(job.job_id, why)
                requeued += 1
            else:
                self._inflight[job.job_id] = _Inflight(handle, spec)
                adopted += 1
        return adopted, requeued

    def start(self) -> None:
        self._schedule_retry_check(self.ledger.next_retry_time())
        self._thread = threading.Thread(target=self._loop, name="dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wake(self) -> None:
        with self._wake:
            self._woken = True
            self._wake.notify_all()

    def services_changed(self) -> None:
        self._services.clear()
        self.wake()

    def expect(self, job_id: str) -> Future[JobOutcome]:
        """A future resolved with the job's outcome, for callers who wait (`/run`)."""
        future: Future[JobOutcome] = Future()
        with self._waiters_lock:
            self._waiters[job_id] = future
        return future

    def forget(self, job_id: str) -> None:
        with self._waiters_lock:
            self._waiters.pop(job_id, None)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def cancel(self, job_id: str) -> str | None:
        """Cancel a queued or running job; returns what happened, None when it was not queued or running."""
        message = "cancelled on request"
        if self.ledger.cancel_queued(job_id, message):
            return "cancelled before it started"
        lead = self._lead_of.get(job_id, job_id)
        entry = self._inflight.get(lead)
        if entry is None:
            return None
        self._cancelled.add(job_id)
        [stopped] = self.backends[entry.handle.backend].cancel([entry.handle])
        self.wake()
        answer = "stopping" if stopped else "asked to stop"
        if entry.spec.batch:
            return f"{answer} its batch (job {lead}); the batch's unfinished jobs are queued again"
        return answer

    # ---- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                if not self._woken and not self._stopping:
                    self._wake.wait(self._sleep_s())
                self._woken = False
                if self._stopping:
                    return
            try:
                self._collect_finished()
                if self._next_retry is not None and time.monotonic() >= self._next_retry:
                    self._schedule_retry_check(None)
                    self._no_retry_waiting = False  # the next one (if any) is read again
                self._dispatch_queued()
                if self._next_retry is None and not self._no_retry_waiting:
                    self._schedule_retry_check(self.ledger.next_retry_time())
                    self._no_retry_waiting = self._next_retry is None
            except Exception as error:  # the dispatcher must survive any one bad job or a busy database
                if no_space_left(error):
                    log.warning("dispatcher round failed, the disk is full; retrying: %s", str(error).splitlines()[0])
                else:
                    log.exception("dispatcher round failed; retrying")

    def _sleep_s(self) -> float:
        if self._next_retry is None:
            return SAFETY_WAKE_S
        return max(0.0, min(SAFETY_WAKE_S, self._next_retry - time.monotonic()))

    def _schedule_retry_check(self, due: datetime | None) -> None:
        """Remember when the earliest queued retry is due (None: no retry waits)."""
        if due is None:
            self._next_retry = None
            return
        seconds = (due - utcnow()).total_seconds()
        moment = time.monotonic() + max(0.0, seconds)
        self._next_retry = moment if self._next_retry is None else min(self._next_retry, moment)

    def _collect_finished(self) -> None:
        by_backend: dict[str, list[JobHandle]] = {}
        for entry in list(self._inflight.values()):
            by_backend.setdefault(entry.handle.backend, []).append(entry.handle)
        for name, handles in by_backend.items():
            for status in self.backends[name].status(handles):
                if status.state not in TERMINAL_STATES or status.outcome is None:
                    continue
                entry = self._inflight.pop(status.handle.job_id, None)
                if entry is not None:
                    self._ended(entry.spec, status.outcome)
        self._record_ended()

    def _ended(self, spec: JobSpec, outcome: JobOutcome) -> None:
        """A job ended: its outcome is judged once (a full disk explains a failure?), then kept until recorded."""
        self._unrecorded[spec.job_id] = (spec, self.disk.judge(outcome) if self.disk is not None else outcome)

    def _record_ended(self) -> None:
        """Record the jobs that ended. A write that fails (a full disk) raises and keeps the rest for the
        next round: the ledger writes of _complete may be repeated (a retry or a wait counts once)."""
        for job_id, (spec, outcome) in list(self._unrecorded.items()):
            self._complete(spec, outcome)
            del self._unrecorded[job_id]
            self._cancelled.difference_update(member.job_id for member in spec.inputs)

    def _complete(self, spec: JobSpec, outcome: JobOutcome) -> None:
        if spec.batch:
            self._complete_batch(spec, outcome)
            return
        # A batch adopted after a restart comes back as its lead job alone (the others ran again).
        final = self._settle(spec, outcome.members.get(spec.job_id, outcome))
        if final is not None:
            self._finish(spec.job_id, final)

    def _complete_batch(self, spec: JobSpec, outcome: JobOutcome) -> None:
        """Each job of a batch ends as it ran: retried, dead or finished (in one transaction). When a
        cancel stopped the batch, its other unfinished jobs are queued again."""
        stopped_by = next((member.job_id for member in spec.inputs if member.job_id in self._cancelled), None)
        finished: list[tuple[str, JobOutcome]] = []
        for member in (spec.model_copy(update={"batch": []}), *spec.batch):
            self._lead_of.pop(member.job_id, None)
            own = outcome.members.get(member.job_id, outcome)
            if stopped_by and member.job_id not in self._cancelled and own.state != JobState.SUCCEEDED:
                why = f"queued again: its batch stopped when job {stopped_by} was cancelled"
                self.ledger.requeue(member.job_id, why)
                continue
            final = self._settle(member, own)
            if final is not None:
                finished.append((member.job_id, final))
        self._finish_all(finished)

    def _settle(self, spec: JobSpec, outcome: JobOutcome) -> JobOutcome | None:
        """The outcome to record, or None when a retry was queued instead."""
        if spec.job_id in self._cancelled and outcome.state != JobState.SUCCEEDED:  # forgotten once recorded
            outcome = outcome.model_copy(update={"state": JobState.CANCELLED, "message": "cancelled on request"})
        decision = self.retry.decide(outcome, spec.service, spec.attempt)
        if decision == Decision.WAIT:
            if self.outages is not None and (store := outcome.waiting_for_store):
                self.outages.report(store, spec.service, outcome.message)
            self.ledger.wait_for_store(spec.job_id, outcome, self.retry.wait_s)
            self._next_retry = min(self._next_retry or float("inf"), time.monotonic() + self.retry.wait_s)
            return None
        if decision == Decision.RETRY:
            delay = self.retry.delay_s(spec.attempt)
            self.ledger.retry_later(spec.job_id, outcome, delay)
            self._next_retry = min(self._next_retry or float("inf"), time.monotonic() + delay)
            return None
        if decision == Decision.DEAD:
            outcome = outcome.model_copy(
                update={
                    "state": JobState.DEAD,
                    "message": f"gave up after {spec.attempt} attempt(s); last ({outcome.failure}): {outcome.message}",
                }
            )
        return outcome

    def _dispatch_queued(self) -> None:
        """Start queued jobs in order; once a backend (or a service, see Backend.full_per_service) is
        full, the jobs behind it wait, so none is overtaken by a later one that happens to fit."""
        if self.disk is not None and self.disk.holding():
            return  # the data directory's disk is low: every job waits (dispatch/disk.py)
        full_backends = {name for name, backend in self.backends.items() if not backend.may_have_room()}
        if len(full_backends) == len(self.backends):
            return  # every backend is full: reading the queue would start nothing
        waiting: set[str] = set()
        """Services whose jobs cannot start this round."""
        size = FIRST_PAGE  # most rounds start a job or two (one finished, one arrived): read few first
        while True:
            page = self.ledger.next_queued(size, waiting)
            for job in page:
                if job.service in waiting or job.job_id in self._lead_of:
                    continue
                if not self._start(job, full_backends):
                    waiting.add(job.service)
            if len(page) < size or len(full_backends) == len(self.backends):
                return
            size = PAGE

    def _start(self, job: ClaimedJob, full_backends: set[str]) -> bool:
        """Submit one job; False when its backend (or its service's share of it) is full, or when a store
        the service reads or writes does not answer."""
        service = self._service(job.service)
        if service is None:
            self.ledger.mark_running(job.job_id)
            self._finish(job.job_id, JobOutcome(state=JobState.CANCELLED, message="its service no longer exists"))
            return True
        name = self.backends.kind_for(service)
        backend = self.backends.get(name)
        if backend is None:
            self.ledger.mark_running(job.job_id)
            message = f"backend {name!r} is not enabled on this platform: enable it in the configuration"
            outcome = JobOutcome(state=JobState.FAILED, message=message, failure="input")
            self._complete(self._spec(job, service), outcome)
            return True
        if name in full_backends or (self.outages is not None and self.outages.holding(service)):
            return False
        spec = self._spec(job, service)
        if not backend.can_accept(spec):
            if not backend.full_per_service:
                full_backends.add(name)
            return False
        batch = self._batch_for(job, service, backend)
        if batch:
            claimed = self.ledger.mark_running_many([member.job_id for member in batch])
            batch = [member for member in batch if member.job_id in claimed]
            if not batch:
                return True
            spec = self._batch_spec(batch, service)
        elif not self.ledger.mark_running(job.job_id):
            return True
        self._submit(backend, spec)
        return True

    def _submit(self, backend: Backend, spec: JobSpec) -> None:
        for member in spec.batch:
            self._lead_of[member.job_id] = spec.job_id
        try:
            self._inflight[spec.job_id] = _Inflight(backend.submit(spec), spec)
        except ConveyorError as error:
            self._complete(
                spec,
                JobOutcome(state=JobState.FAILED, message=f"submit failed: {error}", failure="infrastructure"),
            )

    def _batch_for(self, job: ClaimedJob, service: Service, backend: Backend) -> list[ClaimedJob]:
        """`job` and the queued jobs of its service to run with it (Service.batch), oldest first;
        empty when it runs alone. Batches form from what is queued: nothing waits for more to arrive."""
        options = service.batch
        if options is None or options.max_files < 2 or not backend.runs_batches or not _batchable(job):
            return []
        batch, names = [job], {_input_name(job)}
        for other in self.ledger.next_queued(options.max_files, service=job.service):
            if len(batch) == options.max_files:
                break
            if other.job_id == job.job_id or other.job_id in self._lead_of or not _batchable(other):
                continue
            if options.mode == "directory":  # one input folder: no two inputs may share a file name
                name = _input_name(other)
                if name is None or name in names:
                    continue
                names.add(name)
            batch.append(other)
        return batch if len(batch) > 1 else []

    def _batch_spec(self, batch: list[ClaimedJob], service: Service) -> JobSpec:
        lead = self._spec(batch[0], service)
        if service.batch is not None and service.batch.mode == "directory":
            lead.work_dir = self.layout.batch_dir(service.name, lead.job_id, lead.attempt)
        lead.batch = [self._spec(member, service) for member in batch[1:]]
        return lead

    def _spec(self, job: ClaimedJob, service: Service) -> JobSpec:
        return JobSpec(
            job_id=job.job_id,
            service=service,
            event=job.event,
            request_path=job.request_path,
            sync=job.sync,
            attempt=job.attempt,
            depth=job.depth,
            work_dir=self.layout.work_dir(service.name, job.job_id, job.attempt),
            log_path=self.layout.log_path(service.name, job.job_id),
        )

    def _service(self, name: str) -> Service | None:
        service = self._services.get(name)
        if service is None:
            service = self.ledger.fetch_service(name, with_secrets=True)
            if service is not None:
                self._services[name] = service
        return service

    def _finish(self, job_id: str, outcome: JobOutcome) -> None:
        self._finish_all([(job_id, outcome)])

    def _finish_all(self, finished: list[tuple[str, JobOutcome]]) -> None:
        if not finished:
            return
        for _, outcome in finished:
            outcome.finished_at = outcome.finished_at or utcnow()
        self.ledger.finish_jobs(finished)
        for job_id, outcome in finished:
            with self._waiters_lock:
                waiter = self._waiters.pop(job_id, None)
            if waiter is not None:
                waiter.set_result(outcome)


def _batchable(job: ClaimedJob) -> bool:
    """A first attempt about a stored object: a retry runs alone, so one bad input cannot fail a batch twice."""
    return job.event is not None and job.attempt == 1 and not job.sync and job.request_path is None


def _input_name(job: ClaimedJob) -> str | None:
    """The file name the job's input gets in the input folder (None: the key is unsafe; it runs alone)."""
    try:
        return safe_input_name(job.event.ref.key) if job.event is not None else None
    except UnsafeKeyError:
        return None
