"""The local backend: jobs run on this machine, in containers or as host processes.

Each job takes a thread that runs the supervisor; admission keeps the sum of running jobs'
declared cpu and memory within what the machine (or the configuration) offers. How each script
runs is the runner's business: the one given to the constructor (conveyor.runners.choose picks it).
While the runner's engine does not answer, no job starts and `problem()` says why; the jobs it cut
wait for it (runners/engine_outage.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Self

from conveyor.backends.base import Backend, BackendContext, Notice, Resources, log_notice
from conveyor.errors import ConveyorError
from conveyor.model.job import JobHandle, JobOutcome, JobSpec, JobState, JobStatus
from conveyor.model.service import Service, parse_memory
from conveyor.runners.base import RunRecord, ScriptRunner, WarmRunner
from conveyor.runners.choose import choose_runner
from conveyor.runners.docker import DockerRunner
from conveyor.settings import LocalBackendSettings
from conveyor.storage.registry import ProviderRegistry
from conveyor.supervisor.run import Supervisor

CANCEL_RETRY_S = 0.05


def host_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class Capacity:
    """CPU and memory reserved by running jobs, against what the machine offers."""

    def __init__(self, cpus: float, memory: int, max_jobs: int) -> None:
        self.cpus, self.memory, self.max_jobs = cpus, memory, max_jobs
        self.used_cpus, self.used_memory, self.jobs = 0.0, 0, 0
        self._lock = threading.Lock()

    def fits(self, service: Service) -> bool:
        """A job bigger than the whole machine still runs, alone, rather than wait forever."""
        with self._lock:
            if self.jobs == 0:
                return True
            return (
                self.jobs < self.max_jobs
                and self.used_cpus + service.cpu_cores <= self.cpus + 1e-9
                and self.used_memory + service.memory_bytes <= self.memory
            )

    def snapshot(self) -> Resources:
        with self._lock:
            return Resources(self.cpus, self.memory, self.used_cpus, self.used_memory)

    def full(self) -> bool:
        with self._lock:
            return self.jobs >= self.max_jobs or (self.jobs > 0 and self.used_cpus >= self.cpus - 1e-9)

    def take(self, service: Service) -> None:
        with self._lock:
            self.used_cpus += service.cpu_cores
            self.used_memory += service.memory_bytes
            self.jobs += 1

    def give_back(self, service: Service) -> None:
        with self._lock:
            self.used_cpus -= service.cpu_cores
            self.used_memory -= service.memory_bytes
            self.jobs -= 1


class LocalBackend(Backend):
    name = "local"
    runs_batches = True

    def __init__(
        self,
        config: LocalBackendSettings,
        storage: ProviderRegistry,
        runner: ScriptRunner,
        *,
        notices: Sequence[str] = (),
        notice: Notice = log_notice,
    ) -> None:
        super().__init__()
        self.config = config
        self.runner = runner
        self._notices = list(notices)
        self._notice = notice
        runner.watch(down=self._engine_down, up=self._engine_up)
        self.supervisor = Supervisor(storage, runner)
        self.capacity = Capacity(
            cpus=config.cpus or float(os.cpu_count() or 1),
            memory=parse_memory(config.memory) if config.memory else host_memory_bytes(),
            max_jobs=config.max_jobs,
        )
        self._pool = ThreadPoolExecutor(max_workers=config.max_jobs, thread_name_prefix="job")
        self._futures: dict[str, Future[JobOutcome]] = {}
        self._stops: dict[str, threading.Event] = {}
        """Per running job: set on cancel, so a batch starts no further script."""
        self._lock = threading.Lock()
        self._adopted_containers: set[str] = set()

    @classmethod
    def create(cls, context: BackendContext) -> Self:
        """With the runner `local.runtime` asks for; warm containers are labelled with the data dir,
        so the next start finds those this one leaves."""
        runner, fallback = choose_runner(context.settings.local, owner=str(context.layout.root))
        return cls(
            context.settings.local,
            context.storage,
            runner,
            notices=[fallback] if fallback else [],
            notice=context.notice,
        )

    def notices(self) -> list[str]:
        return list(self._notices)

    def resources(self) -> Resources:
        return self.capacity.snapshot()

    def problem(self) -> str | None:
        return self.runner.problem()

    def _engine_down(self, reason: str) -> None:
        self._notice("warning", f"{reason}; local jobs wait until it is back")

    def _engine_up(self, reason: str) -> None:
        self._notice("note", f"{reason}; local jobs resume")
        self._listener()

    @property
    def runs_containers(self) -> bool:
        return isinstance(self.runner, DockerRunner)

    def describe(self) -> str:
        return (
            f"local: {self.runner.describe()}; up to {self.capacity.cpus:g} CPUs and "
            f"{self.capacity.memory / 2**30:.1f} GiB for jobs, {self.capacity.max_jobs} jobs at most"
        )

    def warnings_for(self, service: Service) -> list[str]:
        if self.runs_containers:
            return []
        return [f"{service.name}: image {service.image!r} is ignored: jobs run as host processes (runtime: process)"]

    def can_accept(self, job: JobSpec) -> bool:
        return self.runner.problem() is None and self.capacity.fits(job.service)

    def may_have_room(self) -> bool:
        return self.runner.problem() is None and not self.capacity.full()

    def submit(self, job: JobSpec) -> JobHandle:
        return self._start(job, resume=False)

    def adopt(self, job: JobSpec) -> JobHandle | None:
        record = RunRecord.load(job.work_dir)
        if record is None:
            return None  # the script never started: stage-in runs again with the next attempt
        if record.container_id:
            self._adopted_containers.add(record.container_id)
        return self._start(job, resume=True)

    def recovered(self) -> None:
        if isinstance(self.runner, WarmRunner):
            self.runner.sweep_warm(self._adopted_containers)

    def _start(self, job: JobSpec, *, resume: bool) -> JobHandle:
        self.capacity.take(job.service)
        stop = threading.Event()
        future = self._pool.submit(self._run, job, resume, stop)
        with self._lock:
            self._futures[job.job_id] = future
            self._stops[job.job_id] = stop
        future.add_done_callback(lambda _: self._listener())
        return JobHandle(job_id=job.job_id, backend=self.name)

    def _run(self, job: JobSpec, resume: bool, stop: threading.Event) -> JobOutcome:
        try:
            return self.supervisor.run(job, resume=resume, stop=stop)
        except ConveyorError as error:  # the supervisor reports failures as outcomes; this is a safety net
            return JobOutcome(state=JobState.FAILED, message=str(error), failure="infrastructure")
        finally:
            self.capacity.give_back(job.service)

    def status(self, handles: list[JobHandle]) -> list[JobStatus]:
        statuses = []
        for handle in handles:
            with self._lock:
                future = self._futures.get(handle.job_id)
            if future is None:
                statuses.append(JobStatus(handle=handle, state=JobState.UNKNOWN))
            elif not future.done():
                statuses.append(JobStatus(handle=handle, state=JobState.RUNNING))
            else:
                outcome = _outcome_of(future)
                with self._lock:
                    self._futures.pop(handle.job_id, None)
                    self._stops.pop(handle.job_id, None)
                statuses.append(JobStatus(handle=handle, state=outcome.state, outcome=outcome))
        return statuses

    def cancel(self, handles: list[JobHandle]) -> list[bool]:
        stopped = []
        for handle in handles:
            with self._lock:
                stop = self._stops.get(handle.job_id)
                future = self._futures.get(handle.job_id)
            if stop is not None:
                stop.set()
            killed = self.runner.cancel(handle.job_id)
            if not killed and future is not None:
                self._keep_cancelling(handle.job_id, future)
            stopped.append(killed)
        return stopped

    def _keep_cancelling(self, job_id: str, future: Future[JobOutcome]) -> None:
        """A cancel that came before the runner started the script (stage-in, container creation):
        the supervisor starts no script once `stop` is set, but one may be starting right now, so the
        runner is asked again until it kills it or the job ends."""

        def again() -> None:
            while not future.done() and not self.runner.cancel(job_id):
                time.sleep(CANCEL_RETRY_S)

        threading.Thread(target=again, name=f"cancel-{job_id[-8:]}", daemon=True).start()

    def close(self) -> None:
        for job_id in list(self._futures):
            self.runner.cancel(job_id)
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.runner.close()


def _outcome_of(future: Future[JobOutcome]) -> JobOutcome:
    try:
        return future.result()
    except Exception as error:
        return JobOutcome(state=JobState.FAILED, message=f"internal error: {error!r}", failure="infrastructure")
