"""The jobs desk: invoke a service, list, cancel and retry its jobs, read and delete their logs, and
trace what they read and wrote.

Jobs are born in the ledger (an accepted event, or an invocation here) and run by the dispatcher;
the desk writes requests into the ledger and wakes the dispatcher, and it asks the dispatcher only
to stop a running job or to hand back the outcome of a synchronous one.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime

from conveyor.control.catalog import ServiceCatalog
from conveyor.dispatch.dispatcher import Dispatcher
from conveyor.errors import InvalidRequest, JobNotFound, NotFound, ServiceNotFound
from conveyor.events.intake import EventIntake
from conveyor.layout import DataLayout
from conveyor.ledger.provenance import ObjectTrace, trace
from conveyor.ledger.store import Ledger, new_job_id
from conveyor.model.event import ObjectEvent, ObjectRef
from conveyor.model.job import JobOutcome, JobRecord, JobState, job_id_prefix
from conveyor.model.service import Service
from conveyor.storage.registry import ProviderRegistry

EVERY_JOB = 1_000_000
"""A limit above any service's queue: `cancel --queued` takes them all."""


FAILED_TO_RETRY = (JobState.FAILED, JobState.TIMED_OUT)
"""What `retry --failed` runs again (dead jobs have --dead; cancelled ones are retried by name)."""


@dataclass(frozen=True)
class Retried:
    replayed: list[str]
    not_retried: dict[str, str]
    """State → how many of the service's jobs in it were left, and how to retry them."""


@dataclass(frozen=True)
class Invocation:
    job_id: str
    outcome: Future[JobOutcome] | None
    """Resolved when the job ends (synchronous invocations only)."""


class JobsDesk:
    def __init__(
        self,
        ledger: Ledger,
        dispatcher: Dispatcher,
        layout: DataLayout,
        intake: EventIntake,
        storage: ProviderRegistry,
        catalog: ServiceCatalog,
    ) -> None:
        self._ledger = ledger
        self._dispatcher = dispatcher
        self._layout = layout
        self._intake = intake
        self._storage = storage
        self._catalog = catalog

    # ---- starting jobs ------------------------------------------------------------------------

    def invoke(self, service: Service, body: bytes, *, sync: bool) -> Invocation:
        """A job whose input is `body`; with `sync`, its outcome comes back through the Invocation."""
        job_id = new_job_id(service.name)
        request_path = self._layout.request_path(job_id)
        request_path.write_bytes(body)
        outcome = self._dispatcher.expect(job_id) if sync else None
        self._ledger.create_request_job(service.name, str(request_path), sync=sync, job_id=job_id)
        self._dispatcher.wake()
        return Invocation(job_id, outcome)

    def stop_waiting(self, job_id: str) -> None:
        """The caller of a synchronous invocation gave up; the job itself goes on."""
        self._dispatcher.forget(job_id)

    def submit_events(self, service: Service, events: Sequence[ObjectEvent]) -> list[str]:
        """Storage events sent to the service directly (OSCAR's `/job` with a MinIO body): each object
        is processed as if it had just been stored, once per object version. Returns the new job ids."""
        with_credentials = self._catalog.fetch_with_secrets(service.name) or service
        job_ids: list[str] = []
        for event in events:
            located = _on_the_inputs_store(event, with_credentials)
            job_ids += self._intake.accept(self._with_version(located, with_credentials), only_service=service.name)
        return job_ids

    def _with_version(self, event: ObjectEvent, service: Service) -> ObjectEvent:
        """The version decides idempotency: a body without an etag asks the store which one this is."""
        if event.etag:
            return event
        info = self._storage.provider(event.ref.provider, service).stat(event.ref)
        return event if info is None else event.model_copy(update={"etag": info.etag, "size": info.size})

    # ---- reading jobs -------------------------------------------------------------------------

    def require_service(self, service: str) -> None:
        """A deployed service, or one deleted whose jobs are still kept."""
        if self._catalog.fetch(service) is None and not self._ledger.count_jobs(service):
            raise ServiceNotFound(service)

    def find(
        self,
        service: str | None = None,
        *,
        states: Sequence[JobState] = (),
        limit: int = 100,
        before: int | None = None,
        id_prefix: str | None = None,
    ) -> list[tuple[int, JobRecord]]:
        """Jobs newest first, each with its sequence number: pass the last one as `before` for the next page."""
        return self._ledger.list_jobs(service, states=states, limit=limit, before_seq=before, id_prefix=id_prefix)

    def fetch(self, job_id: str) -> JobRecord:
        record = self._ledger.fetch_job(job_id)
        if record is None:
            raise JobNotFound(f"no job {job_id!r}")
        return record

    def fetch_in(self, service: str, job_id: str) -> JobRecord:
        record = self._ledger.fetch_job(job_id)
        if record is None or record.service != service:
            raise JobNotFound(f"no job {job_id!r} in service {service!r}")
        return record

    def counts(self, service: str | None = None, *, since: datetime | None = None) -> dict[str, dict[JobState, int]]:
        """{service: {state: n}} for every service with jobs (or only `service`); with `since`, only the
        jobs created since then and those still queued or running."""
        return self._ledger.count_jobs(service, since=since)

    def read_log(self, service: str, job_id: str) -> str | None:
        """Supervisor lines and the script's output, as far as the job got; None when it has no log."""
        path = self._layout.log_path(service, job_id)
        if not path.exists():
            return None
        return path.read_text(errors="replace")

    def resolve(self, service: str, given: str) -> str:
        """The full id of the service's job whose id is or starts with `given`."""
        matches = self._ledger.list_jobs(service, limit=2, id_prefix=job_id_prefix(service, given))
        if not matches:
            raise JobNotFound(f"no job of service {service!r} starts with {given!r}")
        if len(matches) > 1 and matches[0][1].job_id not in (given, job_id_prefix(service, given)):
            raise InvalidRequest(f"{given!r} matches several jobs of {service!r}: give more of the id")
        return matches[0][1].job_id

    def trace(self, ref: ObjectRef) -> ObjectTrace:
        """Every version of the object the ledger knows: who wrote it, up to an upload, and what it started."""
        found = trace(self._ledger, ref.bucket, ref.key, provider=ref.provider)
        if not found.versions:
            raise NotFound(f"the ledger knows nothing of {ref}: no job read or wrote it")
        return found

    # ---- acting on jobs -----------------------------------------------------------------------

    def retry(self, service: str, jobs: Sequence[str] = (), *, dead: bool = False, failed: bool = False) -> Retried:
        """Replay finished jobs as a new attempt: the named ones (ids or unique prefixes), every dead one
        (`dead`), every failed or timed-out one (`failed`). Says what was left and why."""
        if not jobs and not dead and not failed:
            raise InvalidRequest(
                "name the jobs to retry, or ask for every dead job (dead=true) or failed job (failed=true)"
            )
        self.require_service(service)
        job_ids = [self.resolve(service, given) for given in jobs]
        states = [*([JobState.DEAD] if dead else []), *(FAILED_TO_RETRY if failed else [])]
        replayed = self._ledger.replay(service, job_ids, states=states if not job_ids else ())
        self._dispatcher.wake()
        left = {} if job_ids else self._left_unretried(service, states)
        return Retried(replayed=replayed, not_retried=left)

    def _left_unretried(self, service: str, retried: list[JobState]) -> dict[str, str]:
        """Finished jobs that did not succeed and were not asked for: how many, and how to retry them."""
        counts = self._ledger.count_jobs(service).get(service, {})
        left = {}
        if JobState.DEAD not in retried and (dead := counts.get(JobState.DEAD, 0)):
            left["dead"] = f"{dead} dead job(s): add --dead"
        if JobState.FAILED not in retried:
            failed = sum(counts.get(state, 0) for state in FAILED_TO_RETRY)
            if failed:
                left["failed"] = f"{failed} failed or timed-out job(s): add --failed"
        if cancelled := counts.get(JobState.CANCELLED, 0):
            left["cancelled"] = f"{cancelled} cancelled job(s): name them to run them again"
        return left

    def cancel(self, service: str, jobs: Sequence[str] = (), *, queued: bool = False) -> dict[str, str]:
        """Stop queued or running jobs: a queued one never starts, a running one is stopped (scancel on
        Slurm); either ends `cancelled` and is not retried. Returns what happened to each job."""
        if not jobs and not queued:
            raise InvalidRequest("name the jobs to cancel, or ask for every queued job with queued=true")
        self.require_service(service)
        job_ids = [self.resolve(service, given) for given in jobs]
        if queued:
            job_ids += [record.job_id for _, record in self.find(service, states=[JobState.QUEUED], limit=EVERY_JOB)]
        return {job_id: self._dispatcher.cancel(job_id) or "already finished" for job_id in dict.fromkeys(job_ids)}

    def delete(self, service: str, job_id: str) -> None:
        """Forget a job and its log."""
        if not self._ledger.delete_job(service, job_id):
            raise JobNotFound(f"no job {job_id!r} in service {service!r}")
        self._remove_files([job_id], service)

    def delete_finished(self, service: str, *, failed_too: bool) -> list[str]:
        """Forget the service's succeeded jobs (with `failed_too`, every finished one) and their logs."""
        removed = self._ledger.delete_jobs(service, only_succeeded=not failed_too)
        self._remove_files(removed, service)
        return removed

    def _remove_files(self, job_ids: list[str], service: str) -> None:
        for job_id in job_ids:
            self._layout.log_path(service, job_id).unlink(missing_ok=True)
            self._layout.request_path(job_id).unlink(missing_ok=True)


def _on_the_inputs_store(event: ObjectEvent, service: Service) -> ObjectEvent:
    """A MinIO or S3 body does not say which store it comes from: the service's input that holds
    the object does (OSCAR's MinIO is `minio.default`, the platform's own store, when none does)."""
    for io in service.input:
        if io.bucket == event.ref.bucket and io.contains_key(event.ref.key):
            ref = event.ref.model_copy(update={"provider": io.storage_provider})
            return event.model_copy(update={"ref": ref})
    return event
