"""The platform with a Ceph RGW input: a PUT in Ceph → RGW's SNS push → job → output in the embedded store.

The platform is real (API receiver, ledger, dispatcher, host processes); Ceph is a real single-node
cluster, one per module. The service's provider says `events: sns`, so applying it makes a topic
and a bucket notification on RGW that post to the platform's `/conveyor/v1/events/s3/s3.ceph`.
The reconciler's own rounds are off: a job here came through a notification, or through the
round a test asks for (except in the outage test, which runs the platform as configured by default).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.events.sns import topic_name
from conveyor.model.event import ObjectEvent, utcnow
from conveyor.model.job import TERMINAL_STATES, JobRecord, JobState
from conveyor.model.service import Service
from conveyor.platform.platform import Platform
from tests.conftest import PlatformFactory
from tests.support.ceph import CephRgw, run_ceph_rgw
from tests.support.platform import FAST_RETRIES, admin, keys_under, read_text, wait_for_jobs

pytestmark = pytest.mark.e2e

COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
NO_RECONCILER = {"reconcile_interval_s": 0}
LATENCY_PUTS = 50
OUTAGE_S = float(os.environ.get("CONVEYOR_OUTAGE_S", "600"))
"""How long the gateway stays stopped in the outage test; a shorter CONVEYOR_OUTAGE_S for quick runs."""


@pytest.fixture(scope="module")
def ceph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CephRgw]:
    with run_ceph_rgw(tmp_path_factory.mktemp("ceph")) as rgw:
        yield rgw


@pytest.fixture
def s3(ceph: CephRgw) -> Iterator[Any]:
    client = ceph.client()
    yield client
    client.close()


def ceph_service(ceph: CephRgw, name: str, bucket: str) -> Service:
    """Input `s3.ceph:<bucket>/in`, output `minio.default:results/<name>`."""
    return Service.model_validate(
        {
            "name": name,
            "image": "-",
            "script": COPY,
            "input": [{"storage_provider": "s3.ceph", "path": f"{bucket}/in"}],
            "output": [{"path": f"results/{name}"}],
            "storage_providers": {"s3": {"ceph": ceph.settings(events="sns")}},
        }
    )


def notification_ids(s3: Any, bucket: str) -> list[str]:
    answer = s3.get_bucket_notification_configuration(Bucket=bucket)
    return [c["Id"] for c in answer.get("TopicConfigurations", [])]


def test_a_file_put_in_ceph_runs_a_job_whose_output_lands_in_the_embedded_store(
    make_platform: PlatformFactory, ceph: CephRgw, s3: Any, tmp_path: Path
) -> None:
    platform = make_platform(dispatch=NO_RECONCILER)
    service = ceph_service(ceph, "from-ceph", "incoming")
    platform.catalog.apply([service])
    assert notification_ids(s3, "incoming") == [topic_name(service, service.input[0])]
    assert platform.sources.describe(service, service.input[0]).startswith(f"SNS push from {ceph.endpoint}")

    s3.put_object(Bucket="incoming", Key="in/photo 1.txt", Body=b"stored in ceph")

    job = wait_for_jobs(platform, "from-ceph", 1)[0]
    assert job.state == JobState.SUCCEEDED, job.message
    assert job.trigger is not None
    assert (job.trigger.ref.provider, job.trigger.ref.bucket, job.trigger.ref.key) == (
        "s3.ceph",
        "incoming",
        "in/photo 1.txt",
    )
    assert keys_under(platform, "results/from-ceph/") == ["from-ceph/photo 1.txt"]
    assert read_text(platform, "results/from-ceph/photo 1.txt", tmp_path) == "stored in ceph"

    platform.catalog.delete("from-ceph")
    assert notification_ids(s3, "incoming") == [], "deleting the service removes its bucket notification"
    topics = [t["TopicArn"] for t in ceph.client("sns").list_topics()["Topics"]]
    assert not [arn for arn in topics if "conveyor-from-ceph-" in arn]


def test_event_to_job_latency_over_single_puts(make_platform: PlatformFactory, ceph: CephRgw, s3: Any) -> None:
    """Each PUT's start to its job's creation in the ledger. RGW posts before it answers the PUT, so
    the PUTs go one at a time by themselves; earlier jobs run meanwhile."""
    platform = make_platform(dispatch=NO_RECONCILER)
    platform.catalog.apply([ceph_service(ceph, "latency", "latency")])
    put_at: dict[str, datetime] = {}

    for i in range(LATENCY_PUTS):
        key = f"in/f{i:03d}.txt"
        put_at[key] = utcnow()
        s3.put_object(Bucket="latency", Key=key, Body=b"x")

    jobs = wait_for_jobs(platform, "latency", LATENCY_PUTS, timeout_s=120)
    assert {job.state for job in jobs} == {JobState.SUCCEEDED}
    latencies = sorted((job.created_at - put_at[job.trigger.ref.key]).total_seconds() for job in jobs if job.trigger)
    assert len(latencies) == LATENCY_PUTS
    p50, p99 = statistics.median(latencies), latencies[round(0.99 * (len(latencies) - 1))]
    print(f"\nCeph RGW PUT → job created, {LATENCY_PUTS} PUTs: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    assert p99 < 5.0, "a notification that is not pushed at once (persistent topic, polling) would show here"
    platform.catalog.delete("latency")


def test_lost_notifications_from_ceph_are_found_by_the_reconciler_and_run_once(
    make_platform: PlatformFactory, ceph: CephRgw, s3: Any
) -> None:
    platform = make_platform(dispatch=NO_RECONCILER)
    platform.catalog.apply([ceph_service(ceph, "lost-ceph", "lost")])
    names = [f"in/file-{i:02d}.txt" for i in range(10)]

    dropped = _put_while_notifications_are_lost(platform, s3, "lost", names)

    assert sorted(event.ref.key for event in dropped) == names, "RGW did post them, and the intake dropped them"
    assert platform.ledger.count_jobs() == {}
    time.sleep(platform.reconciler.settle_s)  # past the time a notification could still be on its way
    report = platform.reconciler.reconcile_once(full=True)
    assert (report.listed, report.accepted, report.errors) == (10, 10, 0)
    jobs = wait_for_jobs(platform, "lost-ceph", 10)
    assert {(job.state, job.attempt) for job in jobs} == {(JobState.SUCCEEDED, 1)}
    assert sorted(job.trigger.ref.key for job in jobs if job.trigger) == names
    again = platform.reconciler.reconcile_once(full=True)
    assert (again.listed, again.accepted) == (10, 0)
    platform.catalog.delete("lost-ceph")


def _put_while_notifications_are_lost(platform: Platform, s3: Any, bucket: str, keys: list[str]) -> list[ObjectEvent]:
    """RGW's push is answered (so RGW forgets it) but the intake drops the event, as when the
    platform was down: RGW's non-persistent topics do not send a notification twice."""
    dropped: list[ObjectEvent] = []

    def drop(events: list[ObjectEvent], only_service: str | None = None) -> list[list[str]]:
        dropped.extend(events)
        return [[] for _ in events]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(platform.intake, "accept_many", drop)  # accept() goes through it too
        for key in keys:
            s3.put_object(Bucket=bucket, Key=key, Body=key.encode())  # returns once RGW's push was answered
    return dropped


def test_a_key_with_a_plus_sign_runs_on_the_object_as_stored(
    make_platform: PlatformFactory, ceph: CephRgw, s3: Any
) -> None:
    platform = make_platform(dispatch=NO_RECONCILER)
    platform.catalog.apply([ceph_service(ceph, "plus-keys", "plus")])

    s3.put_object(Bucket="plus", Key="in/1+1=2 100%.txt", Body=b"x")

    job = wait_for_jobs(platform, "plus-keys", 1)[0]
    platform.catalog.delete("plus-keys")
    assert job.trigger is not None and job.trigger.ref.key == "in/1+1=2 100%.txt"
    assert job.state == JobState.SUCCEEDED, job.message


def test_a_job_output_written_to_ceph_keeps_its_lineage(make_platform: PlatformFactory, ceph: CephRgw) -> None:
    platform = make_platform(dispatch=NO_RECONCILER)
    providers = {"s3": {"ceph": ceph.settings(events="sns")}}
    first = Service.model_validate(
        {
            "name": "ceph-first",
            "image": "-",
            "script": COPY,
            "input": [{"storage_provider": "s3.ceph", "path": "lineage/in"}],
            "output": [{"storage_provider": "s3.ceph", "path": "lineage/mid"}],
            "storage_providers": providers,
        }
    )
    second = ceph_service(ceph, "ceph-second", "lineage").model_copy(
        update={"input": [first.output[0].model_copy()]}, deep=True
    )
    platform.catalog.apply([first, second])
    client = ceph.client()
    client.put_object(Bucket="lineage", Key="in/x.txt", Body=b"x")
    client.close()

    parent = wait_for_jobs(platform, "ceph-first", 1)[0]
    child = wait_for_jobs(platform, "ceph-second", 1)[0]
    platform.catalog.delete("ceph-first")
    platform.catalog.delete("ceph-second")
    assert child.trigger is not None and child.trigger.ref.key == "mid/x.txt"
    assert (child.parent_job, child.depth) == (parent.job_id, 1)


def test_jobs_queued_when_the_ceph_gateway_stops_wait_out_a_long_outage_and_all_run_once(
    make_platform: PlatformFactory, ceph: CephRgw, s3: Any
) -> None:
    """radosgw is killed with jobs queued and running, stays down OUTAGE_S (10 minutes), comes back:
    every input runs once, to success, at its first attempt; none is dead. Input and output in Ceph."""
    platform = make_platform(dispatch=FAST_RETRIES)  # reconciler on, as by default
    providers = {"s3": {"ceph": ceph.settings(events="sns")}}
    service = Service.model_validate(
        {
            "name": "ceph-outage",
            "image": "-",
            "script": "sleep 2; " + COPY,  # slow enough that many are still queued when the gateway goes
            "input": [{"storage_provider": "s3.ceph", "path": "outage/in"}],
            "output": [{"storage_provider": "s3.ceph", "path": "outage/out"}],
            "storage_providers": providers,
            "retries": 1,
        }
    )
    platform.catalog.apply([service])
    names = [f"file-{i:02d}.txt" for i in range(60)]

    for name in names[:20]:
        s3.put_object(Bucket="outage", Key=f"in/{name}", Body=name.encode())
    _wait_until(lambda: len(_jobs(platform, JobState.SUCCEEDED)) >= 5, 60, "a few jobs to finish before the outage")
    for name in names[20:]:
        s3.put_object(Bucket="outage", Key=f"in/{name}", Body=name.encode())  # returns once RGW posted its event
    stopped = ceph.stop_gateway()
    try:
        pending = [job for job in _jobs(platform) if job.state not in TERMINAL_STATES]
        assert len(_jobs(platform)) == 60 and len(pending) >= 20, "the outage must meet a queue"
        in_flight = {job.job_id for job in pending if job.state == JobState.RUNNING}

        health = _wait_for_health(platform, lambda h: "s3.ceph" in h["waiting_for_stores"], 60)
        assert health["ready"] is True, health  # only this service's jobs wait
        waiting: set[str] = set()  # jobs seen waiting for the gateway, their message saying so
        while time.monotonic() < stopped + OUTAGE_S:
            jobs = _jobs(platform)
            assert not [j for j in jobs if j.state in (JobState.DEAD, JobState.FAILED)], [j.message for j in jobs]
            assert {j.job_id for j in jobs if j.state not in TERMINAL_STATES} <= {j.job_id for j in pending}
            waiting |= {j.job_id for j in jobs if j.message.startswith("waiting for s3.ceph")}
            health = httpx.get(f"{platform.api_url}/conveyor/v1/health", auth=admin(platform)).json()
            assert list(health["waiting_for_stores"]) == ["s3.ceph"], health
            time.sleep(min(5.0, max(0.0, stopped + OUTAGE_S - time.monotonic())))
        jobs = _jobs(platform)
        unfinished = [j for j in jobs if j.state not in TERMINAL_STATES]
        assert {j.state for j in unfinished} <= {JobState.QUEUED, JobState.RUNNING}
        # A job running when the gateway went either uploaded just before, or met the outage and says so.
        finished_before = {j.job_id for j in jobs if j.state == JobState.SUCCEEDED}
        assert waiting and in_flight <= waiting | finished_before, (in_flight, waiting)
    finally:
        answered = ceph.start_gateway()
    answered_at = utcnow()
    _wait_for_health(platform, lambda h: not h["waiting_for_stores"], 30)
    gate_s = time.monotonic() - answered

    jobs = wait_for_jobs(platform, "ceph-outage", 60, timeout_s=300)
    last = max(job.finished_at for job in jobs if job.finished_at is not None)
    recovery_s = (last - answered_at).total_seconds()
    print(  # for the note, with -s
        f"\nCeph RGW stopped {answered - stopped:.0f} s with {len(pending)} of 60 jobs unfinished"
        f" ({len(in_flight)} running, {len(waiting)} seen waiting, {len(unfinished)} still unfinished at its end):"
        f" the outage cleared {gate_s:.1f} s and the last job finished {recovery_s:.1f} s after it answered again;"
        f" dead {sum(j.state == JobState.DEAD for j in jobs)}, jobs {len(jobs)}"
    )
    assert sorted(job.trigger.ref.name for job in jobs if job.trigger) == names, "one job per input: none twice"
    assert {job.state for job in jobs} == {JobState.SUCCEEDED}, [j.message for j in jobs if j.state != "succeeded"]
    assert {job.attempt for job in jobs} == {1}, "waiting for a store is not an attempt"
    listed = s3.list_objects_v2(Bucket="outage", Prefix="out/")
    outputs = sorted(o["Key"] for o in listed.get("Contents", []) if not o["Key"].endswith("/"))  # not apply's folder
    assert outputs == [f"out/{name}" for name in names]
    health = httpx.get(f"{platform.api_url}/conveyor/v1/health", auth=admin(platform)).json()
    assert health == {"ready": True, "problems": {}, "waiting_for_stores": {}}
    platform.catalog.delete("ceph-outage")


def _jobs(platform: Platform, state: JobState | None = None) -> list[JobRecord]:
    records = [record for _, record in platform.ledger.list_jobs("ceph-outage", limit=1000)]
    return [record for record in records if state is None or record.state == state]


def _wait_until(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s for {what}"
        time.sleep(0.05)


def _wait_for_health(platform: Platform, condition: Any, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        health: dict[str, Any] = httpx.get(f"{platform.api_url}/conveyor/v1/health", auth=admin(platform)).json()
        if condition(health):
            return health
        assert time.monotonic() < deadline, health
        time.sleep(0.1)
