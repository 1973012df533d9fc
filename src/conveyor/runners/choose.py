"""Which runner the local backend gets: the one `local.runtime` names, or what `auto` finds."""

from __future__ import annotations

from conveyor.errors import BackendUnavailable
from conveyor.runners.base import ScriptRunner
from conveyor.runners.docker import DockerRunner
from conveyor.runners.process import ProcessRunner
from conveyor.settings import LocalBackendSettings


def choose_runner(config: LocalBackendSettings, owner: str = "") -> tuple[ScriptRunner, str | None]:
    """The runner the configuration asks for, and a warning when `auto` fell back to processes.

    `owner` (the data directory) labels warm containers, so the next start finds those left behind.
    """
    if config.runtime == "process":
        return ProcessRunner(), None
    try:
        runner = DockerRunner.discover(config.docker_host, network=config.network)
        if config.warm:
            runner.enable_warm(owner, max_jobs=config.warm_max_jobs, idle_s=config.warm_idle_s)
        return runner, None
    except BackendUnavailable as error:
        if config.runtime == "container":
            raise
        return ProcessRunner(), f"{error}; running jobs as host processes instead"
