"""Warm containers: successive jobs of a service run as execs in one running container, which is
recycled after a failure, a leftover process, its job limit or its idle time; against dockerd and
podman's socket alike."""

from __future__ import annotations

import re
import time
from contextlib import closing
from pathlib import Path

import pytest

from conveyor.model.job import JobState
from conveyor.platform.platform import Platform
from tests.conftest import PlatformFactory
from tests.support.engines import Engine
from tests.support.platform import gated, hold_the_slot_and_queue, keys_under, put_text, service, wait_for_jobs

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

WHO = 'echo "container=$(hostname)"; cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/"'


def _warm(make_platform: PlatformFactory, engine: Engine, **local: object) -> Platform:
    return make_platform(runtime="container", docker_host=engine.url, network="none", **local)


def _containers_of(engine: Engine, service_name: str) -> list[str]:
    with closing(engine.client()) as client:
        # The low-level listing: containers.list() inspects each one, and one may go in between.
        return [c["Id"] for c in client.api.containers(all=True, filters={"label": f"conveyor.service={service_name}"})]


def _one_by_one(platform: Platform, name: str, count: int) -> list[str]:
    """Put `count` files one after the other; the container each job saw, in order."""
    seen = []
    for index in range(count):
        put_text(platform, f"{name}/in/f{index}", str(index))
        records = wait_for_jobs(platform, name, index + 1)
        latest = max(records, key=lambda r: r.created_at)
        match = re.search(r"container=(\S+)", platform.jobs.read_log(name, latest.job_id) or "")
        assert match, platform.jobs.read_log(name, latest.job_id)
        seen.append(match.group(1))
    return seen


def test_successive_jobs_of_a_service_share_one_warm_container(
    make_platform: PlatformFactory, container_engine: Engine
) -> None:
    platform = _warm(make_platform, container_engine)
    platform.catalog.apply(
        [service("warm", WHO, ["warm/in"], ["warm/out"]), service("cold", WHO, ["cold/in"], ["cold/out"], warm=False)]
    )

    warm = _one_by_one(platform, "warm", 3)
    cold = _one_by_one(platform, "cold", 2)

    assert len(set(warm)) == 1, warm
    idle = [c for containers in platform.backends["local"].runner.pool._idle.values() for c in containers]
    assert idle and all(c.init_pid for c in idle), "leftovers are found from /proc, not the engine's top"
    assert len(set(cold)) == 2, "warm: false gives every job its own container"
    assert len(_containers_of(container_engine, "warm")) == 1
    platform.stop()
    assert _containers_of(container_engine, "warm") == [], "stopping the platform removes its warm containers"


def test_a_job_that_fails_or_leaves_a_process_behind_recycles_its_container(
    make_platform: PlatformFactory, container_engine: Engine
) -> None:
    platform = _warm(make_platform, container_engine)
    script = WHO + '\ncase "$(cat "$INPUT_FILE_PATH")" in 0) sleep 300 & ;; 1) exit 3 ;; esac'
    platform.catalog.apply([service("messy", script, ["messy/in"], ["messy/out"])])

    seen = _one_by_one(platform, "messy", 4)

    assert seen[0] != seen[1] != seen[2], f"a leftover process, then a failure, each retire the container: {seen}"
    assert seen[2] == seen[3], "a clean job keeps it"
    states = sorted(r.state for _, r in platform.ledger.list_jobs("messy"))
    assert states.count(JobState.SUCCEEDED) == 3 and states.count(JobState.FAILED) == 1
    assert len(_containers_of(container_engine, "messy")) == 1


def test_a_warm_container_is_removed_after_its_idle_time_and_its_job_limit(
    make_platform: PlatformFactory, container_engine: Engine
) -> None:
    platform = _warm(make_platform, container_engine, warm_idle_s=1.0, warm_max_jobs=2)
    platform.catalog.apply([service("idle", WHO, ["idle/in"], ["idle/out"])])

    seen = _one_by_one(platform, "idle", 3)
    assert seen[0] == seen[1] != seen[2], f"a new container after 2 jobs: {seen}"

    deadline = time.monotonic() + 15
    while _containers_of(container_engine, "idle") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _containers_of(container_engine, "idle") == []


def test_a_restarted_platform_removes_the_idle_warm_containers_a_killed_one_left(
    make_platform: PlatformFactory, container_engine: Engine, tmp_path: Path
) -> None:
    first = _warm(make_platform, container_engine, data_dir=tmp_path / "kept")
    first.catalog.apply([service("left", WHO, ["left/in"], ["left/out"])])
    _one_by_one(first, "left", 1)
    assert len(_containers_of(container_engine, "left")) == 1
    first.backends["local"].runner.pool = None  # as if killed: nothing removes them on the way out
    first.stop()
    assert len(_containers_of(container_engine, "left")) == 1

    _warm(make_platform, container_engine, data_dir=tmp_path / "kept")

    assert _containers_of(container_engine, "left") == []


def test_a_batch_runs_in_one_folder_inside_a_warm_container(
    make_platform: PlatformFactory, container_engine: Engine
) -> None:
    platform = _warm(make_platform, container_engine, max_jobs=1)
    shared = platform.layout.root / "work" / "bunch"  # the one host folder the container mounts
    gate, runs = shared / "gate", shared / "runs"
    copy_all = 'printf "%s\\n" "$INPUT_FILE_PATHS" | while read -r f; do cp "$f" "$TMP_OUTPUT_DIR/"; done'
    batch = {"max_files": 10, "mode": "directory"}
    platform.catalog.apply([service("bunch", gated(gate, runs, copy_all), ["bunch/in"], ["bunch/out"], batch=batch)])
    names = [f"f{i}.txt" for i in range(4)]
    hold_the_slot_and_queue(platform, "bunch", names)

    gate.touch()
    jobs = wait_for_jobs(platform, "bunch", 5)

    assert runs.read_text().split() == ["1", "4"]
    assert {job.state for job in jobs} == {JobState.SUCCEEDED}
    assert keys_under(platform, "bunch/out") == sorted(f"out/{n}" for n in ["first.txt", *names])
    assert len(_containers_of(container_engine, "bunch")) == 1
