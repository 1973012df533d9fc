"""How a Slurm node runs a script in the service's image: through a container engine's command line.

Slurm nodes seldom run a container daemon; podman, docker and apptainer/singularity all run a
container from a command, so a job is one more process in the Slurm job (and its cgroup). The work
directory is mounted at the same path, so the contract's paths hold inside. The engine's command is
a host process like ProcessRunner's script (process.py): same session, exit-code wrapper and reattach.
"""

from __future__ import annotations

import subprocess
from dataclasses import replace

from conveyor.host_processes import kill_group
from conveyor.runners.base import ScriptInvocation, ScriptResult
from conveyor.runners.process import HostCommandRunner, ProcessRunner
from conveyor.settings import SlurmRuntime

_ENGINE_ENVIRONMENT = ("CONTAINERS_CONF", "DOCKER_HOST", "DOCKER_CONFIG", "XDG_RUNTIME_DIR", "APPTAINER_CACHEDIR")


class _EngineCli(HostCommandRunner):
    """A container engine's command line, with its global options and those of its run command."""

    passed_through = _ENGINE_ENVIRONMENT
    verb = "run"

    def __init__(self, engine: str, engine_options: list[str], run_options: list[str]) -> None:
        super().__init__()
        self.name = engine
        self.engine = [engine, *engine_options]
        self.run_options = run_options

    def describe(self) -> str:
        return f"{self.name} containers ({' '.join(self.engine)} {self.verb})"


class EngineRunner(_EngineCli):
    """podman or docker: `ENGINE run --rm -v WORK:WORK -w WORK -e NAME... IMAGE /bin/sh SCRIPT`."""

    def command(self, invocation: ScriptInvocation) -> list[str]:
        work = str(invocation.work_dir)
        # `-e NAME` without a value: the engine copies it from its own environment, so values
        # (secrets among them) never appear on a command line other users can read.
        variables = [flag for name in sorted(invocation.env) for flag in ("-e", name)]
        return [
            *self.engine,
            "run",
            "--rm",
            "--name",
            container_name(invocation.job_id),
            *self.run_options,
            "-v",
            f"{work}:{work}",
            "-w",
            work,
            *variables,
            "--entrypoint",
            "/bin/sh",
            invocation.service.image,
            str(invocation.script_path),
        ]

    def stop(self, job_id: str, pid: int) -> None:
        """The engine's client is not the container: killing it leaves the container running."""
        kill_group(pid)
        subprocess.run(
            [*self.engine, "rm", "-f", container_name(job_id)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )


class ApptainerRunner(_EngineCli):
    """apptainer or singularity: `exec --cleanenv --bind WORK --pwd WORK docker://IMAGE /bin/sh SCRIPT`.

    The variables go in as APPTAINERENV_NAME (SINGULARITYENV_NAME), which `--cleanenv` lets through.
    """

    verb = "exec"

    def __init__(self, engine: str, engine_options: list[str], run_options: list[str]) -> None:
        super().__init__(engine, engine_options, run_options)
        self.prefix = "SINGULARITYENV_" if engine == "singularity" else "APPTAINERENV_"

    def command(self, invocation: ScriptInvocation) -> list[str]:
        work = str(invocation.work_dir)
        image = invocation.service.image
        if "://" not in image and not image.endswith((".sif", ".simg")) and not image.startswith("/"):
            image = f"docker://{image}"
        return [
            *self.engine,
            "exec",
            "--cleanenv",
            *self.run_options,
            "--bind",
            work,
            "--pwd",
            work,
            image,
            "/bin/sh",
            str(invocation.script_path),
        ]

    def run(self, invocation: ScriptInvocation) -> ScriptResult:
        prefixed = {f"{self.prefix}{name}": value for name, value in invocation.env.items()}
        return super().run(replace(invocation, env=prefixed))


def container_name(job_id: str) -> str:
    return f"conveyor-{job_id}"


def node_runner(runtime: SlurmRuntime, engine_options: list[str], run_options: list[str]) -> HostCommandRunner:
    """The runner of a Slurm job's node: the script itself, or the service's image through `runtime`'s CLI."""
    if runtime == "process":
        return ProcessRunner()
    if runtime in ("apptainer", "singularity"):
        return ApptainerRunner(runtime, engine_options, run_options)
    return EngineRunner(runtime, engine_options, run_options)
