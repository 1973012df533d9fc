"""Run a script in a container through the Docker Engine API.

The same code drives dockerd and podman's Docker-compatible socket. The job's work directory
(input/, output/, the script) is bind-mounted at the same path, so the contract's paths are the
same inside and outside. The service's cpu and memory become the container's limits.

With warm containers on (see warm.py), a job is an `exec` in a running container of its service
instead of a container of its own; `warm: false` in a service keeps one container per job.

An engine that stops answering under a job (dockerd restarted) does not fail it: the job waits for
the engine (see engine_outage.py) and runs again once it answers, in a fresh container.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import ReadTimeout

from conveyor.errors import BackendError, BackendUnavailable, EngineUnreachable, ImageError
from conveyor.host_processes import command_line_mentions, is_alive
from conveyor.model.service import Service
from conveyor.runners.base import RunRecord, ScriptInvocation, ScriptResult, ScriptRunner, WarmRunner
from conveyor.runners.deadlines import DEADLINES
from conveyor.runners.engine_outage import LOST_ENGINE, EngineOutage
from conveyor.runners.warm import IDLE_COMMAND, OWNER_LABEL, WarmContainer, WarmPool

_REATTACH_POLL_S = 0.2
HOST_PID_WAIT_S = 0.5
"""How long a new warm container's PID 1 may take to become its idle command on this host."""
ENGINE_ENDED_EXEC = 125
"""An adopted exec that ended with this code or above was stopped by the engine, not by its script."""

log = logging.getLogger(__name__)

STANDARD_SOCKETS = (
    "/var/run/docker.sock",
    "/run/podman/podman.sock",
)


def candidate_engine_urls(configured: str | None) -> list[str]:
    """Where to look for an engine: configuration, DOCKER_HOST, then the standard sockets."""
    if configured:
        return [configured]
    urls = []
    if os.environ.get("DOCKER_HOST"):
        urls.append(os.environ["DOCKER_HOST"])
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    sockets = [*STANDARD_SOCKETS, *([f"{runtime_dir}/podman/podman.sock"] if runtime_dir else [])]
    urls += [f"unix://{path}" for path in sockets if Path(path).exists()]
    return urls


ENGINE_ADVICE = (
    "Start dockerd or `podman system service`, set DOCKER_HOST or local.docker_host, or use runtime 'process'"
)


class DockerRunner(ScriptRunner, WarmRunner):
    name = "container"

    def __init__(self, base_url: str, *, network: str | None = None) -> None:
        self.base_url = base_url
        self.network = network
        self._client: Any = None
        self._lock = threading.Lock()
        self._images_present: set[str] = set()
        self._running: dict[str, str] = {}
        self._cancelled: set[str] = set()
        self.pool: WarmPool | None = None
        self._cold_images: set[str] = set()
        """Images a warm container could not start with (no `sleep`): their jobs run cold."""
        self._orphans: set[str] = set()
        """Containers of jobs the engine's outage cut: removed once it answers again."""
        self.outage = EngineOutage(base_url, ping=lambda: self.client.ping(), tidy=self._tidy_after_outage)

    def enable_warm(self, owner: str, *, max_jobs: int, idle_s: float) -> None:
        self.pool = WarmPool(self.client.api, owner, max_jobs=max_jobs, idle_s=idle_s)

    def sweep_warm(self, keep: set[str]) -> None:
        """After recovery: warm containers an earlier run left go, but those of adopted scripts."""
        if self.pool is not None and (removed := self.pool.sweep(keep)):
            log.info("removed %d warm container(s) an earlier run left", removed)

    @classmethod
    def discover(
        cls, configured: str | None, *, network: str | None = None, advice: str = ENGINE_ADVICE
    ) -> DockerRunner:
        """The first engine that answers, or BackendUnavailable naming every place tried, then `advice`."""
        tried = []
        for url in candidate_engine_urls(configured):
            runner = cls(url, network=network)
            try:
                runner.check()
                return runner
            except BackendUnavailable as error:
                tried.append(str(error))
                runner.close()
        places = "; ".join(tried) or "DOCKER_HOST is unset and no standard socket exists"
        raise BackendUnavailable(f"no container engine answered ({places}). {advice}")

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = docker.DockerClient(base_url=self.base_url, timeout=60)
            return self._client

    def check(self) -> str:
        try:
            version = self.client.version()
        except (DockerException, RequestsConnectionError, OSError) as error:
            raise BackendUnavailable(f"{self.base_url}: {error}") from error
        product = "podman" if "podman" in str(version.get("Components", "")).lower() else "docker"
        return f"{product} {version.get('Version', '?')} at {self.base_url}"

    def describe(self) -> str:
        warm = "; warm containers reused between jobs" if self.pool is not None else ""
        if (problem := self.outage.problem()) is not None:
            return f"containers ({problem}{warm})"
        return f"containers ({self.check()}{warm})"

    def problem(self) -> str | None:
        return self.outage.problem()

    def watch(self, *, down: Callable[[str], None], up: Callable[[str], None]) -> None:
        self.outage.watch(down=down, up=up)

    def close(self) -> None:
        self.outage.close()
        if self.pool is not None:
            self.pool.close()
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def ensure_image(self, image: str) -> None:
        """Pull the image when the engine does not have it; ImageError names image and engine error."""
        if image in self._images_present:
            return
        try:
            self.client.images.get(image)
        except ImageNotFound:
            try:
                self.client.images.pull(image)
            except (APIError, DockerException) as error:
                raise ImageError(
                    f"image {image!r} is not on the engine and cannot be pulled: {_explain(error)}"
                ) from error
        except (APIError, DockerException) as error:
            raise BackendError(f"the engine failed to inspect image {image!r}: {_explain(error)}") from error
        self._images_present.add(image)

    def run(self, invocation: ScriptInvocation) -> ScriptResult:
        """Raises EngineUnreachable, for the job to wait, when the engine is down or goes away under it."""
        if (problem := self.outage.problem()) is not None:
            raise EngineUnreachable(problem)
        try:
            return self._run(invocation)
        except LOST_ENGINE as error:
            raise self.outage.lost(error) from error

    def _run(self, invocation: ScriptInvocation) -> ScriptResult:
        service = invocation.service
        self.ensure_image(service.image)
        if self.pool is not None and service.warm is not False and service.image not in self._cold_images:
            while (container := self._warm_container(service, invocation)) is not None:
                try:
                    return self._exec(container, invocation)
                except _StaleWarmContainer:
                    continue  # it died since its last job (the engine restarted): the next one
        work = str(invocation.work_dir)
        options: dict[str, Any] = {
            "command": ["/bin/sh", str(invocation.script_path)],
            "environment": invocation.env,
            "working_dir": work,
            "volumes": {work: {"bind": work, "mode": "rw"}},
            "labels": {**service.user_labels, "conveyor.job": invocation.job_id, "conveyor.service": service.name},
            "detach": True,
            **self._limits(service),
        }
        try:
            container = self.client.containers.create(service.image, **options)
        except ImageNotFound as error:
            self._images_present.discard(service.image)
            raise ImageError(f"image {service.image!r} disappeared from the engine: {_explain(error)}") from error
        except (APIError, DockerException) as error:
            raise BackendError(f"the engine could not create the container: {_explain(error)}") from error
        self._running[invocation.job_id] = container.id
        try:
            return self._start_and_wait(container, invocation)
        finally:
            self._running.pop(invocation.job_id, None)
            self._discard(container)

    def _start_and_wait(self, container: Any, invocation: ScriptInvocation) -> ScriptResult:
        try:
            container.start()
        except (APIError, DockerException) as error:
            raise BackendError(f"the engine could not start the container: {_explain(error)}") from error
        RunRecord(kind="container", started_at=time.time(), container_id=container.id).save(invocation.work_dir)
        return self._wait_and_collect(container, invocation)

    def reattach(self, invocation: ScriptInvocation, record: RunRecord) -> ScriptResult:
        """The container outlived the platform: wait for it (or read how it ended), then remove it."""
        if record.kind == "exec":
            return self._reattach_exec(invocation, record)
        try:
            container = self.client.containers.get(record.container_id)
        except NotFound:
            raise BackendError("the job's container disappeared while the platform was down; it runs again") from None
        except (APIError, DockerException) as error:
            raise BackendError(f"the engine could not find the job's container: {_explain(error)}") from error
        self._running[invocation.job_id] = container.id
        try:
            return self._wait_and_collect(container, invocation)
        finally:
            self._running.pop(invocation.job_id, None)
            self._discard(container)

    def _wait_and_collect(self, container: Any, invocation: ScriptInvocation) -> ScriptResult:
        timed_out = False
        exit_code: int | None = None
        waiting_since = time.monotonic()
        try:
            exit_code = int(container.wait(timeout=invocation.timeout_s)["StatusCode"])
        except (ReadTimeout, RequestsConnectionError):
            # Over a unix socket a read timeout may come as a connection error: the clock tells them apart.
            if time.monotonic() - waiting_since < invocation.timeout_s:
                raise
            timed_out = True
            _kill_quietly(container)
        with invocation.log_path.open("ab") as log:
            for chunk in container.logs(stdout=True, stderr=True, stream=True):
                log.write(chunk)
        return ScriptResult(exit_code=None if timed_out else exit_code, timed_out=timed_out)

    def _discard(self, container: Any) -> None:
        """Remove a job's container; while the engine does not answer, once it does."""
        try:
            _remove_quietly(container)
        except LOST_ENGINE:
            self._orphans.add(container.id)

    def _tidy_after_outage(self) -> None:
        """The engine answers again: the warm containers it lost go (the next jobs start fresh ones),
        and so do the containers of the jobs its outage cut (they run again)."""
        if self.pool is not None:
            self.pool.reset(keep=set(self._running.values()))
        for container_id in list(self._orphans):
            with contextlib.suppress(NotFound, APIError, DockerException):
                self.client.api.remove_container(container_id, force=True)
            self._orphans.discard(container_id)

    def cancel(self, job_id: str) -> bool:
        container_id = self._running.get(job_id)
        if container_id is None:
            return False
        self._cancelled.add(job_id)
        try:
            self.client.containers.get(container_id).kill()
        except (NotFound, APIError):
            return False
        return True

    # ---- warm containers -----------------------------------------------------------------

    def _limits(self, service: Service) -> dict[str, Any]:
        """The service's cpu, memory, GPU and the network: the same for a job's container and a warm one."""
        limits: dict[str, Any] = {"nano_cpus": int(service.cpu_cores * 1e9), "mem_limit": service.memory_bytes}
        if self.network:
            limits["network_mode"] = self.network
        if service.enable_gpu:
            limits["device_requests"] = [DeviceRequest(count=1, capabilities=[["gpu"]])]
        return limits

    def _warm_container(self, service: Service, invocation: ScriptInvocation) -> WarmContainer | None:
        """An idle warm container of the service, or a new one; None when the image cannot idle."""
        assert self.pool is not None
        key = WarmPool.key(service, self.network)
        container = self.pool.acquire(key)
        if container is not None:
            return container
        mount = str(invocation.work_dir.parent)
        api = self.client.api
        try:
            host_config = api.create_host_config(binds={mount: {"bind": mount, "mode": "rw"}}, **self._limits(service))
            created = api.create_container(
                service.image,
                command=IDLE_COMMAND,
                labels={**service.user_labels, OWNER_LABEL: self.pool.owner, "conveyor.service": service.name},
                host_config=host_config,
            )
        except (APIError, DockerException) as error:
            raise BackendError(f"the engine could not create a warm container: {_explain(error)}") from error
        try:
            api.start(created["Id"])
        except (APIError, DockerException) as error:
            # Most often the image has no `sleep`: its jobs get a container each from now on.
            log.warning("image %s cannot keep a warm container (%s); one container per job", service.image, error)
            self._cold_images.add(service.image)
            self.pool.remove(created["Id"])
            return None
        return WarmContainer(id=created["Id"], key=key, init_pid=self._host_pid(created["Id"]))

    def _host_pid(self, container_id: str) -> int | None:
        """PID 1 of the container as this host sees it, or None when the engine is elsewhere."""
        try:
            pid = int(self.client.api.inspect_container(container_id)["State"]["Pid"])
        except (APIError, DockerException, KeyError, TypeError, ValueError):
            return None
        if pid <= 0:
            return None
        # `start` may return before the runtime's init has exec'd the idle command: wait for it a little.
        deadline = time.monotonic() + HOST_PID_WAIT_S
        while not command_line_mentions(pid, IDLE_COMMAND[0]):
            if not is_alive(pid) or time.monotonic() > deadline:
                return None  # not on this host (a remote engine): the engine's top will be asked
            time.sleep(0.005)
        return pid

    def _exec(self, container: WarmContainer, invocation: ScriptInvocation) -> ScriptResult:
        assert self.pool is not None
        api = self.client.api
        work = str(invocation.work_dir)
        try:
            exec_id = api.exec_create(
                container.id, ["/bin/sh", str(invocation.script_path)], environment=invocation.env, workdir=work
            )["Id"]
        except (APIError, DockerException) as error:
            self.pool.remove(container.id)
            if container.jobs > 0:
                raise _StaleWarmContainer from error
            raise BackendError(f"the engine could not run the script in a warm container: {_explain(error)}") from error
        self._running[invocation.job_id] = container.id
        expired = threading.Event()
        deadline = DEADLINES.after(invocation.timeout_s, lambda: self._expire(container.id, expired))
        exit_code: int | None = None
        try:
            with invocation.log_path.open("ab") as log_file:
                output = api.exec_start(exec_id, stream=True)  # the script starts here, before any output
                RunRecord(kind="exec", started_at=time.time(), container_id=container.id, exec_id=exec_id).save(
                    invocation.work_dir
                )
                for chunk in output:
                    log_file.write(chunk)
            exit_code = api.exec_inspect(exec_id).get("ExitCode")
        except LOST_ENGINE:
            raise  # the engine went away: the job waits for it; its container goes when it is back
        except (APIError, DockerException) as error:
            if not expired.is_set() and invocation.job_id not in self._cancelled:
                self.pool.remove(container.id)
                raise BackendError(f"the engine lost the script's exec: {_explain(error)}") from error
        finally:
            deadline.cancel()
            self._running.pop(invocation.job_id, None)
        stopped = expired.is_set() or invocation.job_id in self._cancelled
        self._cancelled.discard(invocation.job_id)
        reusable = not stopped and exit_code == 0 and self.pool.busy_processes(container) == 0
        self.pool.release(container, reusable=reusable)
        if expired.is_set():
            return ScriptResult(exit_code=None, timed_out=True)
        return ScriptResult(exit_code=exit_code)

    def _expire(self, container_id: str, expired: threading.Event) -> None:
        """A script past its timeout: its warm container goes with it (an exec cannot be killed alone)."""
        expired.set()
        with contextlib.suppress(NotFound, APIError, DockerException):
            self.client.api.kill(container_id)

    def _reattach_exec(self, invocation: ScriptInvocation, record: RunRecord) -> ScriptResult:
        """A script an earlier platform started in a warm container: wait for its exec, then drop the container."""
        api = self.client.api
        deadline = time.monotonic() + invocation.timeout_s
        try:
            while True:
                state = api.exec_inspect(record.exec_id)
                if not state.get("Running"):
                    return _adopted_exit(state.get("ExitCode"))
                if time.monotonic() > deadline:
                    return ScriptResult(exit_code=None, timed_out=True)
                time.sleep(_REATTACH_POLL_S)
        except (NotFound, APIError, DockerException):
            raise BackendError(
                "the job's warm container went away while the platform was down; it runs again"
            ) from None
        finally:
            with contextlib.suppress(NotFound, APIError, DockerException):
                api.remove_container(record.container_id, force=True)


class _StaleWarmContainer(Exception):
    """An idle warm container that no longer runs: another is taken."""


def _adopted_exit(code: int | None) -> ScriptResult:
    """podman ends an exec whose client went away (code 125 or a signal's); dockerd lets it run on."""
    if code is None or code >= ENGINE_ENDED_EXEC:
        raise BackendError(
            f"the script's exec ended with the platform (code {code}: podman stops an exec whose client is gone); "
            "it runs again"
        )
    return ScriptResult(exit_code=code)


def _explain(error: Exception) -> str:
    explanation = getattr(error, "explanation", None)
    return str(explanation or error)


def _kill_quietly(container: Any) -> None:
    with contextlib.suppress(NotFound, APIError):
        container.kill()


def _remove_quietly(container: Any) -> None:
    with contextlib.suppress(NotFound, APIError):
        container.remove(force=True)
