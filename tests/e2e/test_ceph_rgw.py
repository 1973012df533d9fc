"""The platform with a Ceph RGW input: a PUT in Ceph → RGW's SNS push → job → output in the embedded store.

The platform is real (API receiver, ledger, dispatcher, host processes); Ceph is a real single-node
cluster, one per module. The service's provider says `events: sns`, so applying it makes a topic
and a bucket notification on RGW that post to the platform's `/conveyor/v1/events/s3/s3.ceph`.
The reconciler's own rounds are off: a job here came through a notification, or through the
round a test asks for.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor.events.sns import topic_name
from conveyor.model.event import ObjectEvent, utcnow
from conveyor.model.job import JobState
from conveyor.model.service import Service
from conveyor.platform.platform import Platform
from tests.conftest import PlatformFactory
from tests.support.ceph import CephRgw, run_ceph_rgw
from tests.support.platform import keys_under, read_text, wait_for_jobs

pytestmark = pytest.mark.e2e

COPY = 'cp "$INPUT_FILE_PATH" "$TMP_OUTPUT_DIR/$(basename "$INPUT_FILE_PATH")"'
NO_RECONCILER = {"reconcile_interval_s": 0}
LATENCY_PUTS = 50


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
