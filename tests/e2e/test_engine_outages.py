"""When the container engine goes away under running jobs, they wait for it instead of dying.

A private dockerd is restarted (SIGTERM, as `systemctl restart docker` does) in the middle of a burst
of jobs that run in warm containers: the warm containers and the jobs in them die with it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from conveyor.model.job import JobState
from tests.conftest import PlatformFactory
from tests.support.engines import Engine, build_busybox_image, restart_engine, run_dockerd, run_podman_service
from tests.support.platform import keys_under, put_text, service, wait_for_jobs
from tests.support.readiness import ReadinessLog

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

FILES = 120
SLOW_COPY = 'echo "container=$(hostname)"; sleep 0.5; cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"'


@pytest.fixture(params=["dockerd", "podman"])
def restartable_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """An engine of this test's own: restarting the session's would disturb the other tests."""
    run = run_dockerd if request.param == "dockerd" else run_podman_service
    with run(tmp_path_factory.mktemp(f"restarted-{request.param}")) as engine:
        build_busybox_image(engine)
        yield engine


def warm_containers(engine: Engine, data_dir: Path) -> list[str]:
    with closing(engine.client()) as client:
        return [c["Id"] for c in client.api.containers(filters={"label": f"conveyor.warm.owner={data_dir}"})]


def containers_left(engine: Engine) -> list[str]:
    with closing(engine.client()) as client:
        return [c["Id"] for c in client.api.containers(all=True)]


def test_an_engine_restarted_mid_burst_makes_jobs_wait_and_warm_containers_come_back(
    make_platform: PlatformFactory, restartable_engine: Engine, tmp_path: Path
) -> None:
    engine = restartable_engine
    notices: list[tuple[str, str]] = []
    data_dir = tmp_path / "data"
    platform = make_platform(
        runtime="container",
        docker_host=engine.url,
        network="none",
        data_dir=data_dir,
        max_jobs=2,
        on_notice=lambda level, message: notices.append((level, message)),  # what `conveyor up` prints
    )
    platform.catalog.apply([service("warm", SLOW_COPY, ["warm/in"], ["warm/out"], retries=1)])
    names = [f"f{index:03d}.txt" for index in range(FILES)]
    for name in names:
        put_text(platform, f"warm/in/{name}", name)
    deadline = time.monotonic() + 60
    while len(platform.ledger.list_jobs("warm", states=[JobState.SUCCEEDED], limit=FILES)) < 8:
        assert time.monotonic() < deadline, "the first jobs did not finish"
        time.sleep(0.05)
    assert warm_containers(engine, data_dir), "jobs run in warm containers before the restart"

    with ReadinessLog(platform.api_url) as readiness:
        restarted = time.monotonic()
        away_s = restart_engine(engine)
        ready_after_s = readiness.ready_again_after(restarted, timeout_s=60)
        jobs = wait_for_jobs(platform, "warm", FILES, timeout_s=240)

    print(f"\n{engine.name} away {away_s:.1f} s; /ready back {ready_after_s:.1f} s after the restart began")
    assert len(jobs) == FILES, "one job per input: none twice"
    assert {job.state for job in jobs} == {JobState.SUCCEEDED}, [(j.state, j.message) for j in jobs]
    assert {job.attempt for job in jobs} == {1}, "waiting for the engine is not an attempt"
    assert keys_under(platform, "warm/out/") == [f"out/{name}" for name in names]
    cut = [job for job in jobs if "container engine" in platform.jobs.read_log("warm", job.job_id)]
    assert cut, "some jobs were cut by the restart and waited for the engine"
    assert warm_containers(engine, data_dir), "warm containers come back after the restart"
    last = max(jobs, key=lambda job: job.created_at)
    assert re.search(r"container=\S+", platform.jobs.read_log("warm", last.job_id))
    levels = [level for level, message in notices if "container engine" in message]
    assert levels[:2] == ["warning", "note"], notices
    health = httpx.get(
        f"{platform.api_url}/conveyor/v1/health",
        auth=(platform.credentials.admin_user, platform.credentials.admin_password),
    ).json()
    assert health["ready"] is True, health

    platform.stop()
    assert containers_left(engine) == [], "no container of a cut job or of the old warm pool is left"
