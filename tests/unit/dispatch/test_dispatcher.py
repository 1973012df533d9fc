"""The dispatcher's decisions: what starts when (capacity, admission, order), what a failure becomes
(retry, dead letter, final), batches, cancels and recovery.

The ledger is a real SQLite file; the backend is one the test drives by hand (`HandBackend`): it
holds what it was given until the test ends it. Only the dispatcher's decisions are under test
here; backends are tested against real engines elsewhere.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Self

import pytest

from conveyor.backends.base import Backend, BackendContext
from conveyor.backends.registry import Backends
from conveyor.dispatch.disk import MB, DiskGate
from conveyor.dispatch.dispatcher import Dispatcher
from conveyor.dispatch.outages import Outages
from conveyor.dispatch.retry import RetryPolicy
from conveyor.layout import DataLayout
from conveyor.ledger.store import Ledger
from conveyor.model.event import ObjectEvent, ObjectRef
from conveyor.model.job import DISK, JobHandle, JobOutcome, JobRecord, JobSpec, JobState, JobStatus
from conveyor.model.service import Service
from conveyor.storage.local import LocalProvider, LocalSettings
from conveyor.storage.registry import ProviderRegistry

FAST_RETRY = RetryPolicy(base_s=0.05, max_s=0.1)


class HandBackend(Backend):
    """Runs nothing: a submitted job stays running until `finish`; `slots` jobs at a time."""

    name = "local"

    def __init__(self, slots: int = 1) -> None:
        super().__init__()
        self.slots = slots
        self.running: dict[str, JobSpec] = {}
        self.submitted: list[JobSpec] = []
        self.cancelled: list[str] = []
        self.adoptable: set[str] = set()
        self._ended: dict[str, JobOutcome] = {}
        self._lock = threading.Lock()

    @classmethod
    def create(cls, context: BackendContext) -> Self:
        raise NotImplementedError("built by the test")

    def describe(self) -> str:
        return "by hand"

    def can_accept(self, job: JobSpec) -> bool:
        with self._lock:
            return len(self.running) < self.slots

    def may_have_room(self) -> bool:
        with self._lock:
            return len(self.running) < self.slots

    def submit(self, job: JobSpec) -> JobHandle:
        with self._lock:
            self.running[job.job_id] = job
            self.submitted.append(job)
        return JobHandle(job_id=job.job_id, backend=self.name)

    def adopt(self, job: JobSpec) -> JobHandle | None:
        return self.submit(job) if job.job_id in self.adoptable else None

    def finish(self, job_id: str, outcome: JobOutcome) -> None:
        with self._lock:
            self.running.pop(job_id)
            self._ended[job_id] = outcome
        self._listener()

    def status(self, handles: list[JobHandle]) -> list[JobStatus]:
        with self._lock:
            ended = {handle.job_id: self._ended.pop(handle.job_id, None) for handle in handles}
        return [
            JobStatus(handle=h, state=o.state, outcome=o)
            if (o := ended[h.job_id])
            else JobStatus(handle=h, state=JobState.RUNNING)
            for h in handles
        ]

    def cancel(self, handles: list[JobHandle]) -> list[bool]:
        for handle in handles:
            self.cancelled.append(handle.job_id)
            self.finish(handle.job_id, JobOutcome(state=JobState.FAILED, message="killed", failure="script"))
        return [True for _ in handles]


class BatchingHandBackend(HandBackend):
    runs_batches = True


class PerServiceHandBackend(HandBackend):
    """Admits `slots` jobs per service (as Slurm's pending limit does)."""

    name = "slurm"
    full_per_service: ClassVar[bool] = True

    def can_accept(self, job: JobSpec) -> bool:
        with self._lock:
            return sum(1 for spec in self.running.values() if spec.service.name == job.service.name) < self.slots

    def may_have_room(self) -> bool:
        return True


def make_service(name: str, **fields: Any) -> Service:
    return Service.model_validate(
        {"name": name, "image": "busybox", "script": "true", "input": [{"path": f"{name}/in"}], **fields}
    )


def eventually(predicate: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.01)
    raise AssertionError(f"not within {timeout_s} s: {predicate}")


class World:
    """A ledger, a layout, backends and the dispatcher between them."""

    def __init__(self, tmp_path: Path, backends: dict[str, Backend], default: str = "local") -> None:
        self.ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        self.layout = DataLayout(tmp_path / "data")
        self.backends = backends
        self.dispatcher = Dispatcher(self.ledger, Backends(backends, default), self.layout, FAST_RETRY)

    def deploy(self, *services: Service) -> None:
        for service in services:
            self.ledger.put_service(service)
        self.dispatcher.services_changed()

    def upload(self, service: str, *keys: str) -> list[str]:
        """One event per key under the service's input; the ids of the jobs created."""
        events = [ObjectEvent(ref=ObjectRef(bucket=service, key=f"in/{key}"), etag=f"etag-{key}") for key in keys]
        created = self.ledger.record_events([(event, [service]) for event in events])
        self.dispatcher.wake()
        return [job for jobs in created for job in jobs]

    def job(self, job_id: str) -> JobRecord:
        record = self.ledger.fetch_job(job_id)
        assert record is not None
        return record

    def state(self, job_id: str) -> JobState:
        return self.job(job_id).state


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Callable[..., World]]:
    built: list[World] = []

    def make(backends: dict[str, Backend] | None = None, default: str = "local") -> World:
        made = World(tmp_path, backends or {"local": HandBackend()}, default)
        built.append(made)
        return made

    yield make
    for made in built:
        made.dispatcher.stop()
        made.ledger.close()


SUCCESS = JobOutcome(state=JobState.SUCCEEDED, message="done")
STORE_DOWN = JobOutcome(state=JobState.FAILED, message="the store cannot be reached", failure="infrastructure")
SCRIPT_FAILED = JobOutcome(state=JobState.FAILED, exit_code=3, message="exit 3", failure="script")


# ---- capacity and order --------------------------------------------------------------------


def test_jobs_start_oldest_first_as_capacity_frees(world: Callable[..., World]) -> None:
    w = world({"local": (backend := HandBackend(slots=1))})
    w.deploy(make_service("copy"))
    first, second, third = w.upload("copy", "a", "b", "c")
    w.dispatcher.start()

    eventually(lambda: backend.running)
    assert list(backend.running) == [first]
    assert w.state(second) == w.state(third) == JobState.QUEUED
    backend.finish(first, SUCCESS)
    eventually(lambda: second in backend.running)
    backend.finish(second, SUCCESS)
    eventually(lambda: third in backend.running)
    assert [spec.job_id for spec in backend.submitted] == [first, second, third]
    assert eventually(lambda: w.state(first) == JobState.SUCCEEDED)


def test_a_full_backend_does_not_hold_back_another(world: Callable[..., World]) -> None:
    local, slurm = HandBackend(slots=1), PerServiceHandBackend(slots=1)
    w = world({"local": local, "slurm": slurm})
    w.deploy(make_service("here"), make_service("there", backend="slurm"))
    here = w.upload("here", "a", "b")
    there = w.upload("there", "a")
    w.dispatcher.start()

    eventually(lambda: len(local.running) == 1 and len(slurm.running) == 1)
    assert list(local.running) == [here[0]] and list(slurm.running) == there


def test_a_service_at_its_admission_limit_does_not_hold_back_other_services(world: Callable[..., World]) -> None:
    slurm = PerServiceHandBackend(slots=1)
    w = world({"local": HandBackend(), "slurm": slurm}, default="slurm")
    w.deploy(make_service("busy"), make_service("idle"))
    busy = w.upload("busy", "a", "b", "c")
    idle = w.upload("idle", "a")
    w.dispatcher.start()

    eventually(lambda: len(slurm.running) == 2)
    assert set(slurm.running) == {busy[0], idle[0]}
    assert w.state(busy[1]) == JobState.QUEUED


# ---- failures: retry, dead letter, final ---------------------------------------------------


def test_an_infrastructure_failure_is_retried_then_kept_as_a_dead_letter(world: Callable[..., World]) -> None:
    w = world({"local": (backend := HandBackend())})
    w.deploy(make_service("flaky", retries=1))
    [job] = w.upload("flaky", "a")
    w.dispatcher.start()

    eventually(lambda: job in backend.running)
    backend.finish(job, STORE_DOWN)
    eventually(lambda: job in backend.running and len(backend.submitted) == 2)
    assert backend.submitted[1].attempt == 2
    assert "attempt 1 failed (infrastructure)" in w.job(job).message
    backend.finish(job, STORE_DOWN)

    assert eventually(lambda: w.state(job) == JobState.DEAD)
    assert w.job(job).message.startswith("gave up after 2 attempt(s); last (infrastructure)")


def test_a_script_failure_is_final_unless_the_service_asks_for_retries(world: Callable[..., World]) -> None:
    w = world({"local": (backend := HandBackend(slots=2))})
    w.deploy(make_service("strict"), make_service("lenient", retry_script_failures=True, retries=1))
    [strict] = w.upload("strict", "a")
    [lenient] = w.upload("lenient", "a")
    w.dispatcher.start()

    eventually(lambda: len(backend.running) == 2)
    backend.finish(strict, SCRIPT_FAILED)
    backend.finish(lenient, SCRIPT_FAILED)
    assert eventually(lambda: w.state(strict) == JobState.FAILED)
    eventually(lambda: lenient in backend.running)
    assert w.job(lenient).attempt == 2


def test_a_job_whose_backend_is_not_enabled_fails_with_the_reason(world: Callable[..., World]) -> None:
    w = world()
    w.deploy(make_service("far", backend="slurm"))
    [job] = w.upload("far", "a")
    w.dispatcher.start()

    assert eventually(lambda: w.state(job) == JobState.FAILED)
    assert "backend 'slurm' is not enabled on this platform" in w.job(job).message


def test_a_job_of_a_deleted_service_is_cancelled(world: Callable[..., World]) -> None:
    w = world()
    [job] = w.upload("ghost", "a")  # events of a service the ledger does not have
    w.dispatcher.start()

    assert eventually(lambda: w.state(job) == JobState.CANCELLED)
    assert w.job(job).message == "its service no longer exists"


# ---- batches -----------------------------------------------------------------------------------


def test_queued_inputs_of_a_batching_service_go_as_one_batch(world: Callable[..., World]) -> None:
    w = world({"local": (backend := BatchingHandBackend(slots=1))})
    w.deploy(make_service("tiny", batch={"max_files": 3, "mode": "each"}))
    jobs = w.upload("tiny", "a", "b", "c", "d")
    w.dispatcher.start()

    eventually(lambda: backend.running)
    [lead] = backend.running.values()
    assert [spec.job_id for spec in lead.inputs] == jobs[:3]
    assert all(w.state(job) == JobState.RUNNING for job in jobs[:3])
    members = {job: SUCCESS for job in jobs[:3]}
    backend.finish(lead.job_id, JobOutcome(state=JobState.SUCCEEDED, members=members))
    eventually(lambda: jobs[3] in backend.running)
    assert backend.running[jobs[3]].batch == []  # the last one queued runs alone
    assert all(w.state(job) == JobState.SUCCEEDED for job in jobs[:3])


def test_a_batch_retries_only_its_failed_inputs_and_each_alone(world: Callable[..., World]) -> None:
    w = world({"local": (backend := BatchingHandBackend(slots=2))})
    w.deploy(make_service("tiny", retries=1, batch={"max_files": 3, "mode": "each"}))
    a, b, c = w.upload("tiny", "a", "b", "c")
    w.dispatcher.start()

    eventually(lambda: backend.running)
    backend.finish(a, JobOutcome(state=JobState.FAILED, members={a: SUCCESS, b: STORE_DOWN, c: SUCCESS}))
    eventually(lambda: b in backend.running)
    assert backend.running[b].batch == [] and backend.running[b].attempt == 2
    assert w.state(a) == w.state(c) == JobState.SUCCEEDED


def test_a_directory_batch_never_holds_two_inputs_of_the_same_file_name(world: Callable[..., World]) -> None:
    w = world({"local": (backend := BatchingHandBackend(slots=1))})
    w.deploy(make_service("dir", batch={"max_files": 5, "mode": "directory"}))
    events = [
        ObjectEvent(ref=ObjectRef(bucket="dir", key=key), etag=key)
        for key in ("in/x/same.txt", "in/y/same.txt", "in/other.txt")
    ]
    jobs = [job for made in w.ledger.record_events([(e, ["dir"]) for e in events]) for job in made]
    w.dispatcher.start()

    eventually(lambda: backend.running)
    [lead] = backend.running.values()
    assert [spec.job_id for spec in lead.inputs] == [jobs[0], jobs[2]]
    assert lead.work_dir.name.endswith("-batch")


def test_a_backend_without_batches_gets_one_input_per_job(world: Callable[..., World]) -> None:
    w = world({"local": (backend := HandBackend(slots=3))})
    w.deploy(make_service("tiny", batch={"max_files": 3}))
    jobs = w.upload("tiny", "a", "b", "c")
    w.dispatcher.start()

    eventually(lambda: len(backend.running) == 3)
    assert all(spec.batch == [] for spec in backend.submitted)
    assert set(backend.running) == set(jobs)


# ---- cancelling and recovering ----------------------------------------------------------------


def test_cancelling_queued_and_running_jobs(world: Callable[..., World]) -> None:
    w = world({"local": (backend := HandBackend(slots=1))})
    w.deploy(make_service("copy", retries=3, retry_script_failures=True))
    running, queued = w.upload("copy", "a", "b")
    w.dispatcher.start()
    eventually(lambda: running in backend.running)

    assert w.dispatcher.cancel(queued) == "cancelled before it started"
    assert w.dispatcher.cancel(running) == "stopping"
    assert eventually(lambda: w.state(running) == JobState.CANCELLED)  # not retried
    assert w.job(running).message == "cancelled on request"
    assert w.state(queued) == JobState.CANCELLED
    assert backend.cancelled == [running]
    assert w.dispatcher.cancel(running) is None


def test_recovery_adopts_what_survived_and_queues_the_rest_again(world: Callable[..., World]) -> None:
    w = world({"local": (backend := HandBackend(slots=2))})
    w.deploy(make_service("copy"))
    survivor, lost = w.upload("copy", "a", "b")
    assert w.ledger.mark_running_many([survivor, lost]) == {survivor, lost}  # a platform died with them
    backend.adoptable = {survivor}

    assert w.dispatcher.recover() == (1, 1)
    assert list(backend.running) == [survivor]
    assert w.state(lost) == JobState.QUEUED and w.job(lost).attempt == 2
    w.dispatcher.start()
    eventually(lambda: lost in backend.running)
    backend.finish(survivor, SUCCESS)
    assert eventually(lambda: w.state(survivor) == JobState.SUCCEEDED)


def test_a_synchronous_caller_gets_the_outcome(world: Callable[..., World], tmp_path: Path) -> None:
    w = world({"local": (backend := HandBackend())})
    w.deploy(make_service("echo"))
    (tmp_path / "body").write_bytes(b"hello")
    job = w.ledger.create_request_job("echo", str(tmp_path / "body"), sync=True, job_id="echo-1")
    waiter = w.dispatcher.expect(job)
    w.dispatcher.start()
    w.dispatcher.wake()

    eventually(lambda: job in backend.running)
    assert backend.running[job].sync and backend.running[job].request_path == tmp_path / "body"
    backend.finish(job, SUCCESS.model_copy(update={"response": b"HELLO"}))
    assert waiter.result(timeout=5).response == b"HELLO"


# ---- stores that do not answer -----------------------------------------------------------------

UNREACHABLE = JobOutcome(
    state=JobState.FAILED, failure="unavailable", waiting_for="minio.default", message="connection refused"
)


def test_a_job_whose_store_does_not_answer_waits_without_using_its_retries(world: Callable[..., World]) -> None:
    w = world({"local": (backend := HandBackend())})
    w.deploy(make_service("patient", retries=0))
    [job] = w.upload("patient", "a")
    w.dispatcher.retry = RetryPolicy(base_s=0.05, max_s=0.1, wait_s=0.01)
    w.dispatcher.start()

    for tries in range(1, 6):
        eventually(lambda tries=tries: len(backend.submitted) == tries and job in backend.running)
        backend.finish(job, UNREACHABLE)
    eventually(lambda: len(backend.submitted) == 6 and job in backend.running)
    assert {spec.attempt for spec in backend.submitted} == {1}, "waiting is not an attempt"
    assert w.job(job).message.startswith("waiting for minio.default, which does not answer")
    backend.finish(job, SUCCESS)
    assert eventually(lambda: w.state(job) == JobState.SUCCEEDED)


def test_the_jobs_of_a_service_whose_store_is_down_stay_queued_until_it_is_back(
    world: Callable[..., World], tmp_path: Path
) -> None:
    outages = Outages(ProviderRegistry(LocalProvider(LocalSettings(path=str(tmp_path)))))
    w = world({"local": (backend := HandBackend(slots=4))})
    w.dispatcher.outages = outages
    outages.on_up(lambda _outage: w.dispatcher.wake())
    w.deploy(
        make_service("held"),
        make_service(
            "elsewhere", input=[{"path": "other/in", "storage_provider": "s3.x"}], storage_providers={"s3": {"x": {}}}
        ),
    )
    outages.declare("minio.default", "the embedded store exited")
    held = w.upload("held", "a", "b")
    [free] = w.upload("elsewhere", "a")
    w.dispatcher.start()

    eventually(lambda: free in backend.running)
    time.sleep(0.2)
    assert all(w.state(job) == JobState.QUEUED for job in held)
    outages.clear("minio.default")
    eventually(lambda: set(held) <= set(backend.running))


# ---- a full disk under the data directory ----------------------------------------------------------


def test_a_low_disk_holds_every_job_and_one_that_ran_out_of_space_waits_at_the_same_attempt(
    world: Callable[..., World],
) -> None:
    free_mb = [200.0]
    gate = DiskGate(Path("/data"), 64, cache_s=0, probe_s=0.01, free_bytes=lambda _path: int(free_mb[0] * MB))
    w = world({"local": (backend := HandBackend(slots=1))})
    w.dispatcher.disk = gate
    w.dispatcher.retry = RetryPolicy(base_s=0.05, max_s=0.1, wait_s=0.01)
    gate.on_back(lambda _disk: w.dispatcher.wake())
    gate.start()
    w.deploy(make_service("copy", retries=0))
    first, second = w.upload("copy", "a", "b")
    w.dispatcher.start()
    try:
        eventually(lambda: first in backend.running)
        free_mb[0] = 0
        no_room = JobOutcome(state=JobState.FAILED, message="[Errno 28] No space left", failure="unavailable")
        backend.finish(first, no_room.model_copy(update={"waiting_for": DISK}))

        eventually(lambda: w.state(first) == JobState.QUEUED)
        time.sleep(0.2)  # retries would have made it a dead letter long ago
        assert len(backend.submitted) == 1, "nothing starts while the disk is low"
        assert (w.job(first).attempt, w.state(second)) == (1, JobState.QUEUED)
        assert w.job(first).message.startswith("waiting for free space under the data directory: [Errno 28]")

        free_mb[0] = 200
        eventually(lambda: first in backend.running)
        assert backend.submitted[-1].attempt == 1, "waiting for room is not an attempt"
        backend.finish(first, SUCCESS)
        eventually(lambda: second in backend.running)
        backend.finish(second, SUCCESS)
        assert eventually(lambda: w.state(second) == JobState.SUCCEEDED)
    finally:
        gate.stop()


def test_an_end_the_ledger_cannot_record_is_kept_and_recorded_in_a_later_round(
    world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend has handed the outcome over (it keeps nothing): losing it would leave the job running."""
    w = world({"local": (backend := HandBackend())})
    w.deploy(make_service("copy"))
    [job] = w.upload("copy", "a")
    record = w.ledger.finish_jobs
    refused: list[int] = []

    def full_disk_twice(finished: Any) -> None:
        if len(refused) < 2:
            refused.append(1)
            raise OSError(errno.ENOSPC, "No space left on device")
        record(finished)

    monkeypatch.setattr(w.ledger, "finish_jobs", full_disk_twice)
    w.dispatcher.start()
    eventually(lambda: job in backend.running)
    backend.finish(job, SUCCESS)

    eventually(lambda: refused)
    w.dispatcher.wake()  # a round writes it again (the disk gate wakes it when the disk has room)
    eventually(lambda: len(refused) == 2)
    assert w.state(job) == JobState.RUNNING
    w.dispatcher.wake()
    assert eventually(lambda: w.state(job) == JobState.SUCCEEDED)
