"""Runaway chains: a loop is refused when it is applied, and the lineage limit stops what gets through."""

from __future__ import annotations

import time

import httpx
import pytest

from conveyor.errors import DefinitionError
from conveyor.model.job import JobState
from conveyor.platform.platform import Platform
from tests.conftest import PlatformFactory
from tests.support.platform import keys_under, put_text, service, wait_for_jobs

pytestmark = pytest.mark.e2e

COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
LOOP_MESSAGE = (
    "services closer → opener → closer form a loop: closer writes loop/in, which opener reads; "
    "opener writes loop/mid, which closer reads"
)


def admin(platform: Platform) -> tuple[str, str]:
    return platform.credentials.admin_user, platform.credentials.admin_password


def test_a_chain_past_the_lineage_limit_stops_with_a_dead_job(make_platform: PlatformFactory) -> None:
    platform = make_platform(dispatch={"lineage_limit": 2})
    platform.catalog.apply(
        [
            service("a", COPY, ["lineage/1"], ["lineage/2"]),
            service("b", COPY, ["lineage/2"], ["lineage/3"]),
            service("c", COPY, ["lineage/3"], ["lineage/4"]),
            service("d", COPY, ["lineage/4"], ["lineage/5"]),
        ]
    )
    put_text(platform, "lineage/1/seed.txt", "seed")

    jobs = {name: wait_for_jobs(platform, name, 1) for name in ("a", "b", "c", "d")}

    for depth, name in enumerate(("a", "b", "c")):
        [job] = jobs[name]
        assert (job.state, job.depth) == (JobState.SUCCEEDED, depth), job.message
    [stopped] = jobs["d"]
    assert (stopped.state, stopped.depth, stopped.parent_job) == (JobState.DEAD, 3, jobs["c"][0].job_id)
    assert "lineage limit 2" in stopped.message and "loop" in stopped.message
    assert stopped.started_at is None, "a job past the limit never runs"
    assert keys_under(platform, "lineage/4/") == ["4/seed.txt"]
    time.sleep(0.5)  # anything d might have written would have been announced by now
    assert keys_under(platform, "lineage/5/") == []
    assert len(platform.ledger.list_jobs("d")) == 1


def test_the_service_that_closes_a_loop_is_refused_and_nothing_is_deployed(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    platform.catalog.apply([service("opener", COPY, ["loop/in"], ["loop/mid"])])

    with pytest.raises(DefinitionError) as refused:
        platform.catalog.apply([service("closer", COPY, ["loop/mid"], ["loop/in"])])

    assert [(p.field, p.message) for p in refused.value.problems] == [("closer", LOOP_MESSAGE)]
    assert [s.name for s in platform.ledger.list_services()] == ["opener"]


def test_the_api_refuses_a_loop_with_its_problems_and_deploys_nothing(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    platform.catalog.apply([service("opener", COPY, ["loop/in"], ["loop/mid"])])
    closer = {"name": "closer", "image": "busybox", "script": COPY, "input": [{"path": "loop/mid"}]}
    closer["output"] = [{"path": "loop/in"}]

    answer = httpx.post(
        f"{platform.api_url}/conveyor/v1/apply", json={"services": [closer]}, auth=admin(platform), timeout=30
    )

    assert answer.status_code == 400, answer.text
    assert answer.json() == {"problems": [{"field": "closer", "message": LOOP_MESSAGE}]}
    listed = httpx.get(f"{platform.api_url}/system/services", auth=admin(platform), timeout=30).json()
    assert [s["name"] for s in listed] == ["opener"]


def test_a_new_definition_replaces_the_deployed_one_when_loops_are_checked(make_platform: PlatformFactory) -> None:
    platform = make_platform()
    platform.catalog.apply([service("opener", COPY, ["loop/in"], ["loop/mid"])])

    # The same closer, applied with an opener that no longer writes where closer reads: no loop.
    report = platform.catalog.apply(
        [
            service("opener", COPY, ["loop/in"], ["loop/elsewhere"]),
            service("closer", COPY, ["loop/mid"], ["loop/in"]),
        ]
    )

    assert (report.created, report.updated) == (["closer"], ["opener"])
