"""The engine-CLI runners' command lines: what a Slurm node runs for a script in the service's image.
tests/e2e/test_slurm.py runs them on a real node."""

from __future__ import annotations

from pathlib import Path

from conveyor.model.service import Service
from conveyor.runners.base import ScriptInvocation
from conveyor.runners.engine_cli import ApptainerRunner, EngineRunner


def test_container_engines_get_variable_names_never_values(tmp_path: Path) -> None:
    invocation = ScriptInvocation(
        job_id="j1",
        service=Service(name="svc", image="localhost/bb:1", script="true"),
        script_path=tmp_path / "script.sh",
        env={"TOKEN": "s3cr3t", "INPUT_FILE_PATH": "/x"},
        work_dir=tmp_path,
        timeout_s=10,
        log_path=tmp_path / "log",
    )
    podman = EngineRunner("podman", ["--storage-driver=vfs"], ["--ulimit", "host"]).command(invocation)
    assert podman[:3] == ["podman", "--storage-driver=vfs", "run"]
    assert podman[podman.index("TOKEN") - 1 : podman.index("TOKEN") + 1] == ["-e", "TOKEN"]
    assert "s3cr3t" not in " ".join(podman)
    assert podman[-2:] == ["localhost/bb:1", str(tmp_path / "script.sh")]

    apptainer = ApptainerRunner("apptainer", [], []).command(invocation)
    assert apptainer[:3] == ["apptainer", "exec", "--cleanenv"]
    assert "docker://localhost/bb:1" in apptainer and "s3cr3t" not in " ".join(apptainer)
