"""What a Slurm job runs on its node: `python -m conveyor.backends.slurm.node JOB_FILE`.

The job file (written by the backend into the shared directory, mode 600: it holds the service's
secrets) says what to run; this process runs the same supervisor as the local backend, in a
node-local scratch directory, and writes the outcome next to the job file for the backend to
collect. `probe OUT_FILE` instead reports what the node offers (`conveyor slurm check`).

It exits 0 whenever it wrote an outcome, even a failed one: a non-zero exit means the supervisor
itself could not run, which the backend turns into a retry.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from conveyor.model.job import JobOutcome, JobSpec
from conveyor.runners.base import ScriptRunner
from conveyor.runners.engine_cli import node_runner
from conveyor.settings import SlurmRuntime
from conveyor.storage.registry import ProviderRegistry
from conveyor.storage.s3 import S3Credentials, S3Provider
from conveyor.supervisor.run import Supervisor

USAGE = "JOB_FILE | array MANIFEST | probe OUT_FILE [S3_ENDPOINT]"
OUTCOME_FILE = "outcome.json"
LOG_FILE = "job.log"


class NodeJob(BaseModel):
    """The job file: a job, the platform's own store, and how the node runs scripts."""

    spec: JobSpec
    default_store: S3Credentials
    runtime: SlurmRuntime = "process"
    engine_options: list[str] = Field(default_factory=list)
    run_options: list[str] = Field(default_factory=list)
    scratch_dir: str | None = None


def write_outcome(path: Path, outcome: JobOutcome) -> None:
    """Atomically: the backend may look at any moment, and must never read half a file."""
    data = outcome.model_dump(mode="json", exclude={"response"})
    data["response_b64"] = base64.b64encode(outcome.response).decode() if outcome.response is not None else None
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


def read_outcome(path: Path) -> JobOutcome | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    encoded = data.pop("response_b64", None)
    outcome = JobOutcome.model_validate(data)
    outcome.response = base64.b64decode(encoded) if encoded is not None else None
    return outcome


def run_job(job_file: Path) -> int:
    job = NodeJob.model_validate_json(job_file.read_text())
    job_dir = job_file.parent
    scratch = Path(tempfile.mkdtemp(prefix=f"conveyor-{job.spec.job_id}-", dir=_scratch_root(job.scratch_dir)))
    spec = _on_this_node(job.spec, scratch, job_dir)
    runner = node_runner(job.runtime, job.engine_options, job.run_options)
    # Slurm ends a cancelled or timed-out job with SIGTERM (then SIGKILL): stop the script with us.
    signal.signal(signal.SIGTERM, lambda signum, frame: _stop(runner, spec.job_id, scratch))
    storage = ProviderRegistry(S3Provider(job.default_store))
    try:
        outcome = Supervisor(storage, runner).run(spec)
    finally:
        storage.close()
        shutil.rmtree(scratch, ignore_errors=True)
    write_outcome(job_dir / OUTCOME_FILE, outcome)
    return 0


def member_log_name(job_id: str) -> str:
    """The log, beside LOG_FILE, of a job that runs in another's batch."""
    return f"{job_id}.log"


def _on_this_node(spec: JobSpec, scratch: Path, job_dir: Path) -> JobSpec:
    """Work dirs in the node's scratch and logs in the job's shared directory, for each job of a batch."""
    batch = [
        member.model_copy(
            update={"work_dir": scratch / f"work-{index}", "log_path": job_dir / member_log_name(member.job_id)}
        )
        for index, member in enumerate(spec.batch, start=1)
    ]
    return spec.model_copy(update={"work_dir": scratch / "work", "log_path": job_dir / LOG_FILE, "batch": batch})


def _stop(runner: ScriptRunner, job_id: str, scratch: Path) -> None:
    runner.cancel(job_id)
    shutil.rmtree(scratch, ignore_errors=True)
    os._exit(128 + signal.SIGTERM)  # no outcome: the backend reads Slurm's verdict instead


def _scratch_root(configured: str | None) -> str:
    root = os.path.expandvars(configured) if configured else os.environ.get("TMPDIR", "/tmp")
    Path(root).mkdir(parents=True, exist_ok=True)
    return root


def probe(out_file: Path, store_endpoint: str | None) -> int:
    """What `conveyor slurm check` reports about a node: host, Python, Conveyor, engines, the store."""
    from importlib.metadata import version

    engines = {name: shutil.which(name) for name in ("apptainer", "singularity", "podman", "docker")}
    report = {
        "host": platform.node(),
        "python": sys.executable,
        "python_version": platform.python_version(),
        "conveyor_version": version("conveyor"),
        "engines": {name: path for name, path in engines.items() if path},
        "cpus": os.cpu_count(),
        "tmpdir": os.environ.get("TMPDIR", "/tmp"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "store": _reach(store_endpoint) if store_endpoint else None,
    }
    out_file.write_text(json.dumps(report))
    return 0


def _reach(endpoint: str) -> str:
    """ "reachable (HTTP 403)" or the error: any HTTP answer shows the node can talk to the store."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(endpoint, timeout=10) as answer:
            return f"reachable (HTTP {answer.status})"
    except urllib.error.HTTPError as error:
        return f"reachable (HTTP {error.code})"
    except (OSError, ValueError) as error:
        return f"unreachable: {error}"


def _manifest_line(manifest: Path, index: int) -> str:
    """Task i of a job array runs the job file on line i+1."""
    return manifest.read_text().splitlines()[index]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "array":
        return run_job(Path(_manifest_line(Path(args[1]), int(os.environ["SLURM_ARRAY_TASK_ID"]))))
    if len(args) in (2, 3) and args[0] == "probe":
        return probe(Path(args[1]), args[2] if len(args) == 3 else None)
    if len(args) != 1:
        print(f"usage: python -m conveyor.backends.slurm.node {USAGE}", file=sys.stderr)
        return 2
    return run_job(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
