"""Warm containers: a few running containers per service, each running one job after another.

Creating and starting a container costs ~100-400 ms (podman with vfs: more); `exec` into a running
one costs a few ms on dockerd. A warm container is created with the service's image, limits and
network, sleeps as PID 1, and mounts the service's work directory (work/<service>/) at the same path,
so each job's own directory (input/, output/, the script) is there. A job is one `exec` of the
script with the job's environment, in its own directory.

A container is recycled (removed) after `warm_max_jobs` jobs, after `warm_idle_s` without work,
and after any job that failed, timed out, was cancelled or left a process behind: the next job of
the service gets a fresh one. Containers carry the data directory as a label, so a platform that
was killed finds and removes those it left (but those running a script it adopts).

Isolation between jobs of one service is weaker than one container per job: files a job writes
outside its directory stay for the next job in that container, and jobs of the service running at
the same time can read each other's directories. Jobs of different services never share a container.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker.errors import APIError, DockerException, NotFound

from conveyor.errors import BackendError
from conveyor.host_processes import is_alive
from conveyor.model.service import Service
from conveyor.runners.engine_outage import LOST_ENGINE

log = logging.getLogger(__name__)

OWNER_LABEL = "conveyor.warm.owner"
IDLE_COMMAND = ["sleep", "2147483647"]
"""PID 1 of a warm container: an idle process that exists in busybox and coreutils alike."""


@dataclass
class WarmContainer:
    id: str
    key: tuple[Any, ...]
    jobs: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    init_pid: int | None = None
    """The host's pid of the container's PID 1, when the engine runs on this host."""


class WarmPool:
    """Idle warm containers by service fingerprint; `acquire` hands one out, `release` takes it back."""

    def __init__(self, api: Any, owner: str, *, max_jobs: int, idle_s: float) -> None:
        self.api = api
        """docker's low-level APIClient."""
        self.owner = owner
        self.max_jobs = max_jobs
        self.idle_s = idle_s
        self._idle: dict[tuple[Any, ...], list[WarmContainer]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, name="warm-reaper", daemon=True)
        self._reaper.start()

    @staticmethod
    def key(service: Service, network: str | None) -> tuple[Any, ...]:
        labels = tuple(sorted(service.user_labels.items()))
        return (service.name, service.image, service.cpu, service.memory, service.enable_gpu, network, labels)

    def acquire(self, key: tuple[Any, ...]) -> WarmContainer | None:
        """An idle container for `key` whose PID 1 still runs, as far as this host can tell."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                container = idle.pop() if idle else None
            if container is None or container.init_pid is None or is_alive(container.init_pid):
                return container
            self.remove(container.id)  # it died idle (its engine restarted): no job is given a dead one

    def release(self, container: WarmContainer, *, reusable: bool) -> None:
        container.jobs += 1
        if not reusable or container.jobs >= self.max_jobs or self._stopping.is_set():
            self.remove(container.id)
            return
        container.idle_since = time.monotonic()
        with self._lock:
            self._idle.setdefault(container.key, []).append(container)

    def remove(self, container_id: str) -> None:
        """Best effort: a container the engine cannot remove now goes with the next sweep or reset."""
        with contextlib.suppress(NotFound, APIError, DockerException, *LOST_ENGINE):
            self.api.remove_container(container_id, force=True)

    def reset(self, keep: set[str]) -> None:
        """After the engine came back: every warm container of this owner goes (idle ones may have died
        with the engine), but `keep` (those a job still runs in); new ones start as jobs need them."""
        with self._lock:
            self._idle.clear()
        if removed := self.sweep(keep):
            log.info("removed %d warm container(s) after the engine's outage", removed)

    def busy_processes(self, container: WarmContainer) -> int:
        """Processes in the container besides its idle PID 1 (a job's leftovers).

        A process a script left running is orphaned when the script exits and adopted by the
        container's PID 1, so where this host sees that process (a local engine), its children
        say it at the cost of one file read; elsewhere the engine's `top` asks (~100 ms on podman).
        """
        if container.init_pid is not None:
            try:
                return _child_count(container.init_pid)
            except OSError:
                pass
        try:
            return max(0, len(self.api.top(container.id).get("Processes") or []) - 1)
        except (APIError, DockerException) as error:
            raise BackendError(f"the engine could not list the container's processes: {error}") from error

    def sweep(self, keep: set[str]) -> int:
        """Remove the warm containers an earlier platform left, except `keep` (those running a script
        the new platform adopted: they go once it is collected)."""
        removed = 0
        try:
            found = self.api.containers(all=True, filters={"label": f"{OWNER_LABEL}={self.owner}"})
        except (APIError, DockerException) as error:
            log.warning("could not look for warm containers left by an earlier run: %s", error)
            return 0
        for entry in found:
            if entry["Id"] not in keep:
                self.remove(entry["Id"])
                removed += 1
        return removed

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            idle = [c for containers in self._idle.values() for c in containers]
            self._idle.clear()
        for container in idle:
            self.remove(container.id)
        self._reaper.join(5)

    def _reap_loop(self) -> None:
        while not self._stopping.wait(max(0.5, self.idle_s / 4)):
            now = time.monotonic()
            with self._lock:
                expired = [c for cs in self._idle.values() for c in cs if now - c.idle_since >= self.idle_s]
                for container in expired:
                    self._idle[container.key].remove(container)
            for container in expired:
                self.remove(container.id)


def _child_count(pid: int) -> int:
    """Children of a host process, from /proc (every thread's list)."""
    children: set[str] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children.update((task / "children").read_text().split())
    return len(children)
