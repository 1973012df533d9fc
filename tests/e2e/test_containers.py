"""Jobs in containers through the Docker Engine API, against dockerd and podman's socket alike."""

from __future__ import annotations

import base64
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from conveyor.model.job import JobState
from conveyor.platform.platform import Platform
from tests.conftest import PlatformFactory
from tests.support.engines import Engine
from tests.support.platform import keys_under, put_text, read_text, service, wait_for_jobs

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

CONTAINER_FACTS = """
cd "$TMP_OUTPUT_DIR"
if [ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
    cat /sys/fs/cgroup/memory/memory.limit_in_bytes > memory
else
    cat /sys/fs/cgroup/memory.max > memory
fi
if [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
    cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us > cpu_quota
else
    cut -d' ' -f1 /sys/fs/cgroup/cpu.max > cpu_quota
fi
ls /bin/busybox > image_marker
echo "$GREETING" > greeting
tr a-z A-Z < "$INPUT_FILE_PATH" > "upper-$(basename "$INPUT_FILE_PATH")"
"""
FACT_FILES = 5


def containers_labelled(engine: Engine, label: str) -> list[str]:
    with closing(engine.client()) as client:
        # The low-level listing: containers.list() inspects each one, and one may go in between.
        return [c["Id"] for c in client.api.containers(all=True, filters={"label": label})]


def in_containers(make_platform: PlatformFactory, engine: Engine) -> Platform:
    platform = make_platform(runtime="container", docker_host=engine.url, network="none")
    assert platform.backends["local"].runs_containers
    return platform


def test_a_chain_runs_in_containers_with_the_services_limits(
    make_platform: PlatformFactory, container_engine: Engine, tmp_path: Path
) -> None:
    platform = in_containers(make_platform, container_engine)
    first = service(
        "facts",
        CONTAINER_FACTS,
        ["box/in"],
        ["box/mid"],
        memory="64Mi",
        cpu="0.5",
        environment={"variables": {"GREETING": "from the container"}},
    )
    second = service(
        "count",
        'wc -c < "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH").count"',
        ["box/mid"],
        ["box/out"],
    )
    platform.catalog.apply([first, second])
    put_text(platform, "box/in/word.txt", "container")

    assert wait_for_jobs(platform, "facts", 1)[0].state == JobState.SUCCEEDED
    assert {j.state for j in wait_for_jobs(platform, "count", FACT_FILES)} == {JobState.SUCCEEDED}

    assert read_text(platform, "box/mid/memory", tmp_path).strip() == str(64 * 2**20)
    assert read_text(platform, "box/mid/cpu_quota", tmp_path).strip() == "50000"
    assert read_text(platform, "box/mid/image_marker", tmp_path).strip() == "/bin/busybox"
    assert read_text(platform, "box/mid/greeting", tmp_path).strip() == "from the container"
    assert read_text(platform, "box/mid/upper-word.txt", tmp_path) == "CONTAINER"
    assert read_text(platform, "box/out/upper-word.txt.count", tmp_path).strip() == "9"
    assert len(keys_under(platform, "box/out/")) == FACT_FILES


def test_an_image_that_cannot_be_found_fails_the_job_naming_it(
    make_platform: PlatformFactory, container_engine: Engine
) -> None:
    platform = in_containers(make_platform, container_engine)
    ghost = service("ghost", "true", ["ghost/in"], ["ghost/out"], image="localhost/no-such-image:1", retries=1)
    platform.catalog.apply([ghost])
    put_text(platform, "ghost/in/x", "x")

    job = wait_for_jobs(platform, "ghost", 1, timeout_s=120)[0]

    # A pull can fail for a while (a registry down): it is retried, then the job is a dead letter.
    assert (job.state, job.attempt) == (JobState.DEAD, 2)
    assert "localhost/no-such-image:1" in job.message and "cannot be pulled" in job.message


def test_exit_codes_and_output_survive_the_container(make_platform: PlatformFactory, container_engine: Engine) -> None:
    platform = in_containers(make_platform, container_engine)
    platform.catalog.apply([service("exit7", 'echo "inside $(hostname)"; echo oops >&2; exit 7', ["exit7/in"], [])])
    put_text(platform, "exit7/in/x", "x")

    job = wait_for_jobs(platform, "exit7", 1)[0]

    assert (job.state, job.exit_code) == (JobState.FAILED, 7)
    log = platform.jobs.read_log("exit7", job.job_id)
    assert "inside" in log and "oops" in log
    assert containers_labelled(container_engine, f"conveyor.job={job.job_id}") == []


def test_a_container_past_its_timeout_is_killed_and_removed(
    make_platform: PlatformFactory, container_engine: Engine
) -> None:
    platform = in_containers(make_platform, container_engine)
    platform.catalog.apply([service("stuck", "sleep 600", ["stuck/in"], [], timeout=2)])
    put_text(platform, "stuck/in/x", "x")

    job = wait_for_jobs(platform, "stuck", 1, timeout_s=60)[0]

    assert job.state == JobState.TIMED_OUT
    assert containers_labelled(container_engine, "conveyor.service=stuck") == []


def test_run_answers_from_a_container(make_platform: PlatformFactory, container_engine: Engine) -> None:
    platform = in_containers(make_platform, container_engine)
    platform.catalog.apply(
        [service("rev", 'rev "$INPUT_FILE_PATH" > "$TMP_OUTPUT_DIR/out.txt"', ["rev/in"], ["rev/out"])]
    )

    answer = httpx.post(
        f"{platform.api_url}/run/rev",
        content=base64.b64encode(b"stressed\n"),
        auth=(platform.credentials.admin_user, platform.credentials.admin_password),
        timeout=120,
    )

    assert answer.status_code == 200, answer.text
    assert base64.b64decode(answer.text) == b"desserts\n"
