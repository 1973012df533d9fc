"""A platform killed while a script runs in a warm container: the next start keeps that container
(its job is adopted), learns the script's exit code, even when it ended meanwhile, then removes it.
podman ends an exec whose client died: there the job runs again instead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

import pytest

from conveyor.errors import BackendError
from conveyor.model.service import Service
from conveyor.runners.base import RunRecord, ScriptInvocation
from conveyor.runners.docker import DockerRunner
from tests.support.engines import BUSYBOX_TAG, Engine

pytestmark = pytest.mark.docker

DOOMED_PLATFORM = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from conveyor.runners.docker import DockerRunner
    from conveyor.model.service import Service
    from conveyor.runners.base import ScriptInvocation
    url, owner, work, image = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    runner = DockerRunner(url, network="none")
    runner.enable_warm(owner, max_jobs=10, idle_s=60)
    runner.run(ScriptInvocation(job_id="job-1", service=Service(name="svc", image=image, script="-"),
        script_path=work / "script.sh", env={}, work_dir=work, timeout_s=60, log_path=work.parent / "job.log"))
    """
)


def test_a_script_in_a_warm_container_outlives_the_platform_and_is_collected(
    container_engine: Engine, tmp_path: Path
) -> None:
    work = tmp_path / "svc" / "job-1-1"
    work.mkdir(parents=True)
    (work / "script.sh").write_text("sleep 1; exit 4")
    owner = str(tmp_path)
    doomed = subprocess.Popen(
        [sys.executable, "-c", DOOMED_PLATFORM, container_engine.url, owner, str(work), BUSYBOX_TAG]
    )
    deadline = time.monotonic() + 60
    while (record := RunRecord.load(work)) is None:
        assert time.monotonic() < deadline, "the script never started"
        time.sleep(0.02)
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    assert record.kind == "exec" and record.exec_id

    runner = DockerRunner(container_engine.url, network="none")
    runner.enable_warm(owner, max_jobs=10, idle_s=60)
    runner.sweep_warm(keep={record.container_id})  # as after recovery: the adopted script's container stays
    try:
        invocation = ScriptInvocation(
            job_id="job-1",
            service=Service(name="svc", image=BUSYBOX_TAG, script="-"),
            script_path=work / "script.sh",
            env={},
            work_dir=work,
            timeout_s=30,
            log_path=tmp_path / "job.log",
        )
        try:
            result = runner.reattach(invocation, record)
        except BackendError as error:
            # podman may end an exec when its client goes: then the job is not adopted but runs again.
            assert container_engine.name == "podman" and "runs again" in str(error)
        else:
            assert (result.exit_code, result.timed_out) == (4, False)
    finally:
        runner.close()

    with closing(container_engine.client()) as client:
        assert client.api.containers(all=True, filters={"label": f"conveyor.warm.owner={owner}"}) == []
