"""The ledger on a fresh SQLite file: services, idempotent events, the job queue and history."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.ledger.store import Ledger
from conveyor.ledger.tables import EventRow
from conveyor.model.event import ObjectEvent, ObjectInfo, ObjectRef
from conveyor.model.job import JobOutcome, JobState
from conveyor.model.service import Service
from tests.support.ledger_rows import ledger_session, statements_run


def make_service(name: str = "grayify", **fields: Any) -> Service:
    data: dict[str, Any] = {
        "name": name,
        "image": "ghcr.io/grycap/imagemagick",
        "script": "echo hi",
        "input": [{"path": f"{name}/in"}],
        "output": [{"path": f"{name}/out"}],
    }
    data.update(fields)
    return Service.model_validate(data)


def object_event(key: str = "in/cat.jpg", etag: str = "e1", bucket: str = "grayify", **fields: Any) -> ObjectEvent:
    return ObjectEvent(ref=ObjectRef(bucket=bucket, key=key), etag=etag, size=fields.pop("size", 10), **fields)


def succeeded(*outputs: ObjectInfo, **fields: Any) -> JobOutcome:
    return JobOutcome(state=JobState.SUCCEEDED, exit_code=0, outputs=list(outputs), **fields)


def job_ids(rows: list[tuple[int, Any]]) -> list[str]:
    return [record.job_id for _, record in rows]


# ---- services -------------------------------------------------------------------------------


def test_put_service_creates_with_a_generated_token(ledger: Ledger) -> None:
    stored, created = ledger.put_service(make_service())
    assert created is True
    assert re.fullmatch(r"[0-9a-f]{64}", stored.token)
    fetched = ledger.fetch_service("grayify")
    assert fetched is not None
    assert fetched.token == stored.token
    assert fetched.image == "ghcr.io/grycap/imagemagick"
    assert [i.path for i in fetched.input] == ["grayify/in"]


def test_put_service_tokens_differ_between_services(ledger: Ledger) -> None:
    first, _ = ledger.put_service(make_service("one"))
    second, _ = ledger.put_service(make_service("two"))
    assert first.token != second.token


def test_put_service_keeps_a_token_given_by_the_definition(ledger: Ledger) -> None:
    stored, _ = ledger.put_service(make_service(token="a" * 64))
    assert stored.token == "a" * 64


def test_put_service_update_keeps_the_token_and_replaces_the_definition(ledger: Ledger) -> None:
    original, _ = ledger.put_service(make_service(memory="256Mi"))
    updated, created = ledger.put_service(make_service(memory="1Gi"))
    assert created is False
    assert updated.token == original.token
    fetched = ledger.fetch_service("grayify")
    assert fetched is not None
    assert (fetched.memory, fetched.token) == ("1Gi", original.token)


def test_secrets_are_stored_apart_and_only_returned_on_request(ledger: Ledger) -> None:
    ledger.put_service(make_service(environment={"variables": {"MODE": "x"}, "secrets": {"API_KEY": "s3cr3t"}}))

    shown = ledger.fetch_service("grayify")
    full = ledger.fetch_service("grayify", with_secrets=True)

    assert shown is not None and full is not None
    assert shown.environment.secrets == {"API_KEY": ""}
    assert shown.environment.variables == {"MODE": "x"}
    assert full.environment.secrets == {"API_KEY": "s3cr3t"}
    assert [s.environment.secrets for s in ledger.list_services()] == [{"API_KEY": ""}]


def test_provider_credentials_are_hidden_when_shown(ledger: Ledger) -> None:
    ledger.put_service(
        make_service(
            output=[{"storage_provider": "s3.mine", "path": "results/out"}],
            storage_providers={"s3": {"mine": {"access_key": "AKIA", "secret_key": "SECRET", "region": "eu"}}},
        )
    )
    shown = ledger.fetch_service("grayify")
    assert shown is not None
    assert shown.storage_providers["s3"]["mine"] == {"access_key": "hidden", "secret_key": "hidden", "region": "eu"}


def test_provider_credentials_come_back_with_secrets(ledger: Ledger) -> None:
    """The dispatcher builds S3 clients from fetch_service(with_secrets=True): it needs the real keys."""
    ledger.put_service(
        make_service(
            output=[{"storage_provider": "s3.mine", "path": "results/out"}],
            storage_providers={"s3": {"mine": {"access_key": "AKIA", "secret_key": "SECRET", "region": "eu"}}},
        )
    )
    full = ledger.fetch_service("grayify", with_secrets=True)
    assert full is not None
    assert full.storage_providers["s3"]["mine"] == {"access_key": "AKIA", "secret_key": "SECRET", "region": "eu"}


def test_put_service_keeps_extra_fields(ledger: Ledger) -> None:
    ledger.put_service(make_service(vo="vo.example.eu", expose={"min_scale": 1}))
    fetched = ledger.fetch_service("grayify")
    assert fetched is not None
    assert fetched.model_extra == {"vo": "vo.example.eu", "expose": {"min_scale": 1}}


def test_fetch_unknown_service_is_none(ledger: Ledger) -> None:
    assert ledger.fetch_service("nope") is None
    assert ledger.fetch_service("nope", with_secrets=True) is None


def test_list_services_sorted_by_name(ledger: Ledger) -> None:
    for name in ("zeta", "alpha", "mid"):
        ledger.put_service(make_service(name))
    assert [s.name for s in ledger.list_services()] == ["alpha", "mid", "zeta"]
    assert all(s.token for s in ledger.list_services())


# ---- record_event ---------------------------------------------------------------------------


def test_record_event_creates_one_queued_job_per_service(ledger: Ledger) -> None:
    created = ledger.record_event(object_event(), ["grayify", "thumbs"])
    assert len(created) == 2
    assert created[0].startswith("grayify-") and created[1].startswith("thumbs-")
    for job_id in created:
        job = ledger.fetch_job(job_id)
        assert job is not None
        assert job.state is JobState.QUEUED
        assert job.attempt == 1


def test_record_event_same_object_version_twice_gives_one_job(ledger: Ledger) -> None:
    first = ledger.record_event(object_event(etag="v1"), ["grayify"])
    again = ledger.record_event(object_event(etag="v1"), ["grayify"])
    assert len(first) == 1
    assert again == []
    assert ledger.count_jobs() == {"grayify": {JobState.QUEUED: 1}}


def test_record_event_new_etag_is_a_new_job(ledger: Ledger) -> None:
    first = ledger.record_event(object_event(etag="v1"), ["grayify"])
    second = ledger.record_event(object_event(etag="v2"), ["grayify"])
    assert len(first) == len(second) == 1
    assert first != second
    assert ledger.count_jobs("grayify") == {"grayify": {JobState.QUEUED: 2}}


def test_record_event_duplicate_for_one_service_does_not_block_another(ledger: Ledger) -> None:
    ledger.record_event(object_event(), ["grayify"])
    created = ledger.record_event(object_event(), ["grayify", "thumbs"])
    assert len(created) == 1 and created[0].startswith("thumbs-")


@pytest.mark.parametrize(
    "other",
    [
        object_event(key="in/dog.jpg"),
        object_event(bucket="other"),
        ObjectEvent(ref=ObjectRef(provider="s3.mine", bucket="grayify", key="in/cat.jpg"), etag="e1"),
    ],
    ids=["other-key", "other-bucket", "other-provider"],
)
def test_record_event_identity_includes_provider_bucket_and_key(ledger: Ledger, other: ObjectEvent) -> None:
    ledger.record_event(object_event(), ["grayify"])
    assert len(ledger.record_event(other, ["grayify"])) == 1


def test_record_event_with_no_services_records_nothing(ledger: Ledger) -> None:
    assert ledger.record_event(object_event(), []) == []
    assert ledger.count_jobs() == {}
    assert ledger.has_queued() is False


def test_record_events_takes_a_batch_in_one_call_with_duplicates_inside_it(ledger: Ledger) -> None:
    cat, dog = object_event(key="in/cat.jpg"), object_event(key="in/dog.jpg")

    created = ledger.record_events([(cat, ["grayify"]), (dog, ["grayify", "thumbs"]), (cat, ["grayify"])])

    assert [len(jobs) for jobs in created] == [1, 2, 0]
    assert ledger.record_events([(cat, ["grayify"])]) == [[]]
    with ledger_session(ledger) as session:
        counted = session.scalar(select(EventRow.duplicates).where(EventRow.key == "in/cat.jpg"))
    assert counted == 2, "a re-sent notification is counted on the first event, in or across batches"
    assert ledger.count_jobs() == {"grayify": {JobState.QUEUED: 2}, "thumbs": {JobState.QUEUED: 1}}


# ---- the queue ------------------------------------------------------------------------------


def test_next_queued_oldest_first_with_the_event(ledger: Ledger) -> None:
    moment = datetime(2026, 6, 1, 10, 0, 0, 123000, tzinfo=UTC)
    first = ledger.record_event(object_event("in/1.jpg", event_time=moment, source="seaweedfs"), ["grayify"])[0]
    second = ledger.record_event(object_event("in/2.jpg"), ["grayify"])[0]
    third = ledger.create_request_job("grayify", "/tmp/body", sync=True)

    claimed = ledger.next_queued(10)

    assert [c.job_id for c in claimed] == [first, second, third]
    assert claimed[0].event is not None
    assert claimed[0].event.ref == ObjectRef(bucket="grayify", key="in/1.jpg")
    assert claimed[0].event.etag == "e1"
    assert claimed[0].event.size == 10
    assert claimed[0].event.event_time == moment
    assert claimed[0].event.source == "seaweedfs"
    assert (claimed[0].sync, claimed[0].request_path) == (False, None)
    assert (claimed[2].event, claimed[2].sync, claimed[2].request_path) == (None, True, "/tmp/body")


def test_next_queued_respects_the_limit_and_changes_nothing(ledger: Ledger) -> None:
    created = [ledger.record_event(object_event(f"in/{i}.jpg"), ["grayify"])[0] for i in range(5)]
    assert [c.job_id for c in ledger.next_queued(2)] == created[:2]
    assert [c.job_id for c in ledger.next_queued(2)] == created[:2]
    assert ledger.count_jobs() == {"grayify": {JobState.QUEUED: 5}}


def test_mark_running_succeeds_only_once(ledger: Ledger) -> None:
    [job_id] = ledger.record_event(object_event(), ["grayify"])
    assert ledger.mark_running(job_id) is True
    assert ledger.mark_running(job_id) is False
    job = ledger.fetch_job(job_id)
    assert job is not None
    assert job.state is JobState.RUNNING
    assert job.started_at is not None
    assert ledger.next_queued(10) == []
    assert ledger.has_queued() is False


def test_mark_running_unknown_job_is_false(ledger: Ledger) -> None:
    assert ledger.mark_running("nope-1") is False


def test_next_queued_of_one_service_only(ledger: Ledger) -> None:
    mine = [ledger.record_event(object_event(f"in/{i}.jpg"), ["grayify"])[0] for i in range(3)]
    ledger.record_event(object_event("in/x.jpg", bucket="other"), ["other"])
    assert [c.job_id for c in ledger.next_queued(10, service="grayify")] == mine
    assert [c.job_id for c in ledger.next_queued(2, service="grayify")] == mine[:2]


def test_mark_running_many_claims_in_one_go_only_what_is_still_queued(ledger: Ledger) -> None:
    created = [ledger.record_event(object_event(f"in/{i}.jpg"), ["grayify"])[0] for i in range(4)]
    ledger.mark_running(created[1])
    assert ledger.cancel_queued(created[2], "cancelled on request")

    assert ledger.mark_running_many([*created, "nope-1"]) == {created[0], created[3]}

    states = {job_id: ledger.fetch_job(job_id).state for job_id in created}  # type: ignore[union-attr]
    assert states == {
        created[0]: JobState.RUNNING,
        created[1]: JobState.RUNNING,
        created[2]: JobState.CANCELLED,
        created[3]: JobState.RUNNING,
    }
    assert ledger.mark_running_many(created) == set()


def test_finish_jobs_records_a_batch_each_with_its_own_outcome(ledger: Ledger) -> None:
    first, second = (ledger.record_event(object_event(f"in/{i}.jpg"), ["grayify"])[0] for i in range(2))
    out = ObjectInfo(ref=ObjectRef(bucket="grayify", key="out/0.jpg"), etag="o", size=3)

    ledger.finish_jobs(
        [
            (first, succeeded(out)),
            (second, JobOutcome(state=JobState.FAILED, exit_code=3, message="bad")),
            ("nope", succeeded()),
        ]
    )

    done, failed = ledger.fetch_job(first), ledger.fetch_job(second)
    assert done is not None and failed is not None
    assert (done.state, [o.ref.key for o in done.outputs]) == (JobState.SUCCEEDED, ["out/0.jpg"])
    assert (failed.state, failed.exit_code, failed.message, failed.outputs) == (JobState.FAILED, 3, "bad", [])


def test_has_queued(ledger: Ledger) -> None:
    assert ledger.has_queued() is False
    ledger.create_request_job("grayify", "/tmp/body", sync=False)
    assert ledger.has_queued() is True


def test_create_request_job_with_a_chosen_id(ledger: Ledger) -> None:
    job_id = ledger.create_request_job("grayify", "/data/requests/x", sync=False, job_id="grayify-fixed")
    assert job_id == "grayify-fixed"
    job = ledger.fetch_job("grayify-fixed")
    assert job is not None
    assert (job.service, job.state, job.trigger) == ("grayify", JobState.QUEUED, None)


def test_create_request_job_generates_a_service_prefixed_id(ledger: Ledger) -> None:
    job_id = ledger.create_request_job("grayify", "/tmp/body", sync=True)
    assert re.fullmatch(r"grayify-[0-9a-f-]{36}", job_id)


# ---- finishing and reading jobs -------------------------------------------------------------


def test_finish_job_records_outcome_and_outputs(ledger: Ledger) -> None:
    [job_id] = ledger.record_event(object_event(), ["grayify"])
    ledger.mark_running(job_id)
    started = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    out = ObjectInfo(ref=ObjectRef(bucket="grayify", key="out/cat.jpg"), etag="o1", size=99)
    other = ObjectInfo(ref=ObjectRef(provider="s3.mine", bucket="b", key="k"), etag="o2", size=1)

    ledger.finish_job(
        job_id, succeeded(out, other, started_at=started, finished_at=started + timedelta(seconds=5), message="ok")
    )

    job = ledger.fetch_job(job_id)
    assert job is not None
    assert (job.state, job.exit_code, job.message) == (JobState.SUCCEEDED, 0, "ok")
    assert job.duration_s == 5.0
    assert sorted((o.ref.provider, o.ref.bucket, o.ref.key, o.etag, o.size) for o in job.outputs) == [
        ("minio.default", "grayify", "out/cat.jpg", "o1", 99),
        ("s3.mine", "b", "k", "o2", 1),
    ]


def test_fetch_job_has_the_trigger(ledger: Ledger) -> None:
    moment = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    [job_id] = ledger.record_event(object_event(etag="v7", size=42, event_time=moment), ["grayify"])
    job = ledger.fetch_job(job_id)
    assert job is not None
    assert job.trigger is not None
    assert job.trigger.ref == ObjectRef(bucket="grayify", key="in/cat.jpg")
    assert (job.trigger.etag, job.trigger.size, job.trigger.last_modified) == ("v7", 42, moment)
    assert job.created_at.tzinfo is not None


def test_finish_job_twice_replaces_outputs(ledger: Ledger) -> None:
    [job_id] = ledger.record_event(object_event(), ["grayify"])
    ledger.finish_job(job_id, succeeded(ObjectInfo(ref=ObjectRef(bucket="b", key="first"))))
    ledger.finish_job(job_id, JobOutcome(state=JobState.FAILED, exit_code=1, message="stage-out failed"))
    job = ledger.fetch_job(job_id)
    assert job is not None
    assert (job.state, job.exit_code, job.outputs) == (JobState.FAILED, 1, [])
    assert job.finished_at is not None


def test_finish_unknown_job_is_ignored(ledger: Ledger) -> None:
    ledger.finish_job("nope-1", succeeded())
    assert ledger.fetch_job("nope-1") is None


def test_list_jobs_newest_first_and_oldest_first(ledger: Ledger) -> None:
    created = [ledger.create_request_job("grayify", f"/r/{i}", sync=False) for i in range(4)]
    assert job_ids(ledger.list_jobs()) == created[::-1]
    assert job_ids(ledger.list_jobs(newest_first=False)) == created
    seqs = [seq for seq, _ in ledger.list_jobs()]
    assert seqs == sorted(seqs, reverse=True)


def test_list_jobs_filters_by_service_and_state(ledger: Ledger) -> None:
    a1 = ledger.create_request_job("a", "/r", sync=False)
    a2 = ledger.create_request_job("a", "/r", sync=False)
    b1 = ledger.create_request_job("b", "/r", sync=False)
    ledger.finish_job(a1, succeeded())
    ledger.finish_job(b1, JobOutcome(state=JobState.FAILED, exit_code=2))

    assert job_ids(ledger.list_jobs("a")) == [a2, a1]
    assert job_ids(ledger.list_jobs(states=[JobState.SUCCEEDED, JobState.FAILED])) == [b1, a1]
    assert job_ids(ledger.list_jobs("a", states=[JobState.QUEUED])) == [a2]
    assert ledger.list_jobs("c") == []


def test_list_jobs_pages_with_before_seq(ledger: Ledger) -> None:
    created = [ledger.create_request_job("grayify", "/r", sync=False) for _ in range(5)]
    page1 = ledger.list_jobs(limit=2)
    page2 = ledger.list_jobs(limit=2, before_seq=page1[-1][0])
    page3 = ledger.list_jobs(limit=2, before_seq=page2[-1][0])
    page4 = ledger.list_jobs(limit=2, before_seq=page3[-1][0])
    assert job_ids(page1) + job_ids(page2) + job_ids(page3) == created[::-1]
    assert len(page3) == 1
    assert page4 == []


def test_count_jobs_by_service_and_state(ledger: Ledger) -> None:
    for _ in range(3):
        ledger.create_request_job("a", "/r", sync=False)
    done = ledger.create_request_job("a", "/r", sync=False)
    ledger.finish_job(done, succeeded())
    ledger.create_request_job("b", "/r", sync=False)

    assert ledger.count_jobs() == {"a": {JobState.QUEUED: 3, JobState.SUCCEEDED: 1}, "b": {JobState.QUEUED: 1}}
    assert ledger.count_jobs("b") == {"b": {JobState.QUEUED: 1}}
    assert ledger.count_jobs("nobody") == {}


def test_running_jobs_are_found_and_can_be_queued_again_as_a_new_attempt(ledger: Ledger) -> None:
    running = ledger.create_request_job("grayify", "/r", sync=False)
    queued = ledger.create_request_job("grayify", "/r", sync=False)
    done = ledger.create_request_job("grayify", "/r", sync=False)
    ledger.mark_running(running)
    ledger.mark_running(done)
    ledger.finish_job(done, succeeded())

    assert [c.job_id for c in ledger.running_jobs()] == [running]
    ledger.requeue(running, "queued again: the platform stopped")

    job = ledger.fetch_job(running)
    assert job is not None
    assert (job.state, job.attempt, job.started_at) == (JobState.QUEUED, 2, None)
    assert "queued again" in job.message
    claimed = {c.job_id: c for c in ledger.next_queued(10)}
    assert claimed[running].attempt == 2
    assert claimed[queued].attempt == 1
    done_job = ledger.fetch_job(done)
    assert done_job is not None and done_job.state is JobState.SUCCEEDED
    assert ledger.running_jobs() == []


# ---- deleting -------------------------------------------------------------------------------


def test_delete_service_cancels_its_queued_jobs_and_keeps_history(ledger: Ledger) -> None:
    ledger.put_service(make_service("grayify"))
    ledger.put_service(make_service("thumbs"))
    queued, running, done = (ledger.record_event(object_event(f"in/{i}"), ["grayify"])[0] for i in range(3))
    [other] = ledger.record_event(object_event("in/x"), ["thumbs"])
    ledger.mark_running(running)
    ledger.mark_running(done)
    ledger.finish_job(done, succeeded())

    assert ledger.delete_service("grayify") is True

    assert ledger.fetch_service("grayify") is None
    assert [s.name for s in ledger.list_services()] == ["thumbs"]
    states = {record.job_id: record.state for _, record in ledger.list_jobs("grayify")}
    assert states == {queued: JobState.CANCELLED, running: JobState.RUNNING, done: JobState.SUCCEEDED}
    cancelled = ledger.fetch_job(queued)
    assert cancelled is not None
    assert "service deleted" in cancelled.message
    assert cancelled.finished_at is not None
    assert cancelled.trigger is not None
    assert ledger.mark_running(queued) is False
    other_job = ledger.fetch_job(other)
    assert other_job is not None and other_job.state is JobState.QUEUED


def test_delete_unknown_service_is_false(ledger: Ledger) -> None:
    assert ledger.delete_service("nope") is False


def test_service_can_be_recreated_after_delete_with_a_new_token(ledger: Ledger) -> None:
    first, _ = ledger.put_service(make_service())
    ledger.delete_service("grayify")
    second, created = ledger.put_service(make_service())
    assert created is True
    assert second.token != first.token


def finished_jobs(ledger: Ledger) -> dict[JobState, str]:
    """One job of service 'a' in each terminal state plus one queued, by state."""
    jobs: dict[JobState, str] = {}
    for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED, JobState.QUEUED):
        job_id = ledger.create_request_job("a", "/r", sync=False)
        if state is not JobState.QUEUED:
            out = ObjectInfo(ref=ObjectRef(bucket="b", key=f"{state}.txt"))
            ledger.finish_job(job_id, JobOutcome(state=state, outputs=[out]))
        jobs[state] = job_id
    return jobs


def test_delete_jobs_only_succeeded(ledger: Ledger) -> None:
    jobs = finished_jobs(ledger)
    other = ledger.create_request_job("b", "/r", sync=False)
    ledger.finish_job(other, succeeded())

    assert ledger.delete_jobs("a", only_succeeded=True) == [jobs[JobState.SUCCEEDED]]

    assert ledger.fetch_job(jobs[JobState.SUCCEEDED]) is None
    remaining = {record.state for _, record in ledger.list_jobs("a")}
    assert remaining == {JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED, JobState.QUEUED}
    assert ledger.fetch_job(other) is not None


def test_delete_jobs_all_finished_keeps_unfinished(ledger: Ledger) -> None:
    jobs = finished_jobs(ledger)
    running = ledger.create_request_job("a", "/r", sync=False)
    ledger.mark_running(running)

    deleted = ledger.delete_jobs("a", only_succeeded=False)

    terminal = (JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED)
    assert sorted(deleted) == sorted(jobs[s] for s in terminal)
    assert sorted(job_ids(ledger.list_jobs("a"))) == sorted([jobs[JobState.QUEUED], running])


def test_delete_job_one_by_one(ledger: Ledger) -> None:
    job_id = ledger.create_request_job("a", "/r", sync=False)
    ledger.finish_job(job_id, succeeded(ObjectInfo(ref=ObjectRef(bucket="b", key="k"))))
    assert ledger.delete_job("other-service", job_id) is False
    assert ledger.delete_job("a", job_id) is True
    assert ledger.fetch_job(job_id) is None
    assert ledger.delete_job("a", job_id) is False


def test_deleted_jobs_events_still_deduplicate(ledger: Ledger) -> None:
    [job_id] = ledger.record_event(object_event(), ["grayify"])
    ledger.finish_job(job_id, succeeded())
    ledger.delete_jobs("grayify", only_succeeded=True)
    assert ledger.record_event(object_event(), ["grayify"]) == []


# ---- durability and concurrency -------------------------------------------------------------


def test_ledger_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    first = Ledger(url)
    stored, _ = first.put_service(make_service())
    [job_id] = first.record_event(object_event(), ["grayify"])
    first.close()

    second = Ledger(url)
    try:
        fetched = second.fetch_service("grayify")
        assert fetched is not None and fetched.token == stored.token
        assert [c.job_id for c in second.next_queued(5)] == [job_id]
        assert second.record_event(object_event(), ["grayify"]) == []
    finally:
        second.close()


def test_concurrent_recording_from_many_threads(ledger: Ledger) -> None:
    threads_count, per_thread = 8, 50
    errors: list[BaseException] = []
    created: list[str] = []
    created_lock = threading.Lock()
    start = threading.Barrier(threads_count)

    def worker(worker_id: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                mine = ledger.record_event(object_event(f"in/t{worker_id}-{i}.jpg"), ["grayify"])
                # everybody also re-sends events other threads may be recording right now
                dup = ledger.record_event(object_event(f"in/t{(worker_id + 1) % threads_count}-{i}.jpg"), ["grayify"])
                with created_lock:
                    created.extend(mine + dup)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    assert len(created) == len(set(created)) == threads_count * per_thread
    assert ledger.count_jobs() == {"grayify": {JobState.QUEUED: threads_count * per_thread}}


# ---- a page of jobs, with triggers and outputs, in one statement ----------------------------


def finished_with(ledger: Ledger, job_id: str, *keys: str) -> None:
    """The job succeeds, having written `keys` (bucket out) in that order."""
    ledger.finish_job(job_id, succeeded(*(ObjectInfo(ref=ObjectRef(bucket="out", key=k), etag=k) for k in keys)))


def output_keys(rows: list[tuple[int, Any]]) -> list[list[str]]:
    return [[o.ref.key for o in record.outputs] for _, record in rows]


def test_list_jobs_reads_a_page_with_its_triggers_and_outputs_in_one_statement(ledger: Ledger) -> None:
    created = [ledger.record_event(object_event(f"in/{i}.jpg", etag=f"v{i}"), ["grayify"])[0] for i in range(4)]
    http = ledger.create_request_job("grayify", "/r", sync=False)
    finished_with(ledger, created[0], "z", "a", "m")
    finished_with(ledger, created[2], "only")
    finished_with(ledger, http, "h1", "h2")

    with statements_run(ledger) as statements:
        page = ledger.list_jobs("grayify", limit=4)

    assert len(statements) == 1, statements
    assert job_ids(page) == [http, created[3], created[2], created[1]]
    assert output_keys(page) == [["h1", "h2"], [], ["only"], []], "each job's outputs in the order recorded"
    assert [r.trigger.ref.key if r.trigger else None for _, r in page] == [None, "in/3.jpg", "in/2.jpg", "in/1.jpg"]
    assert [r.trigger.etag for _, r in page if r.trigger] == ["v3", "v2", "v1"]
    assert [seq for seq, _ in page] == sorted((seq for seq, _ in page), reverse=True)


def test_list_jobs_limit_counts_jobs_not_outputs(ledger: Ledger) -> None:
    first, second, third = (ledger.create_request_job("a", "/r", sync=False) for _ in range(3))
    finished_with(ledger, second, *(f"k{i}" for i in range(5)))
    finished_with(ledger, third, "t1", "t2")

    page = ledger.list_jobs(limit=2)

    assert job_ids(page) == [third, second]
    assert output_keys(page) == [["t1", "t2"], [f"k{i}" for i in range(5)]]
    assert job_ids(ledger.list_jobs(limit=2, newest_first=False)) == [first, second]


def test_list_jobs_pages_of_jobs_with_outputs_lose_and_repeat_nothing(ledger: Ledger) -> None:
    created = [ledger.record_event(object_event(f"in/{i}.jpg"), ["grayify"])[0] for i in range(7)]
    for i, job_id in enumerate(created):
        finished_with(ledger, job_id, *(f"{i}-{n}" for n in range(i % 3)))

    pages, before = [], None
    while page := ledger.list_jobs("grayify", limit=3, before_seq=before):
        pages.append(page)
        before = page[-1][0]

    assert [len(page) for page in pages] == [3, 3, 1]
    everything = [row for page in pages for row in page]
    assert job_ids(everything) == created[::-1]
    assert output_keys(everything) == [[f"{i}-{n}" for n in range(i % 3)] for i in reversed(range(7))]
    assert all(record.trigger is not None for _, record in everything)


def test_list_jobs_filters_combine_with_outputs_on_the_page(ledger: Ledger) -> None:
    a1, a2, a3 = (ledger.create_request_job("a", "/r", sync=False) for _ in range(3))
    b1 = ledger.create_request_job("b", "/r", sync=False)
    finished_with(ledger, a1, "a1-out")
    finished_with(ledger, a3, "a3-out", "a3-more")
    finished_with(ledger, b1, "b1-out")

    page = ledger.list_jobs("a", states=[JobState.SUCCEEDED], limit=10)

    assert job_ids(page) == [a3, a1]
    assert output_keys(page) == [["a3-out", "a3-more"], ["a1-out"]]
    assert job_ids(ledger.list_jobs("a", states=[JobState.QUEUED])) == [a2]
    assert job_ids(ledger.list_jobs(states=[JobState.SUCCEEDED], before_seq=page[0][0])) == [a1]


def test_list_jobs_by_id_prefix_takes_wildcards_literally(ledger: Ledger) -> None:
    for job_id in ("a_b-1", "a%b-2", "axb-3", "a\\b-4"):
        ledger.create_request_job("a", "/r", sync=False, job_id=job_id)

    assert job_ids(ledger.list_jobs(id_prefix="a_")) == ["a_b-1"]
    assert job_ids(ledger.list_jobs(id_prefix="a%")) == ["a%b-2"]
    assert job_ids(ledger.list_jobs(id_prefix="a\\")) == ["a\\b-4"]
    assert job_ids(ledger.list_jobs(id_prefix="a", newest_first=False)) == ["a_b-1", "a%b-2", "axb-3", "a\\b-4"]
    assert ledger.list_jobs(id_prefix="b") == []


def test_fetch_job_reads_the_job_its_trigger_and_outputs_in_one_statement(ledger: Ledger) -> None:
    [job_id] = ledger.record_event(object_event(etag="v1"), ["grayify"])
    finished_with(ledger, job_id, "c", "b", "a")

    with statements_run(ledger) as statements:
        job = ledger.fetch_job(job_id)

    assert len(statements) == 1, statements
    assert job is not None
    assert (job.job_id, job.state, [o.ref.key for o in job.outputs]) == (job_id, JobState.SUCCEEDED, ["c", "b", "a"])
    assert job.trigger is not None and (job.trigger.ref.key, job.trigger.etag) == ("in/cat.jpg", "v1")
    assert job == dict(ledger.list_jobs())[ledger.list_jobs()[0][0]], "the same record as in a page"


# ---- retries, replays and what the reconciler asks ------------------------------------------


def test_retry_later_queues_the_next_attempt_with_the_failure_in_its_message(ledger: Ledger) -> None:
    job_id = ledger.create_request_job("grayify", "/r", sync=False)
    assert ledger.mark_running(job_id)
    failed = JobOutcome(state=JobState.FAILED, exit_code=137, message="killed", failure="infrastructure")
    before = datetime.now(UTC)

    ledger.retry_later(job_id, failed, 30)

    job = ledger.fetch_job(job_id)
    assert job is not None
    assert (job.state, job.attempt, job.exit_code, job.started_at) == (JobState.QUEUED, 2, 137, None)
    assert job.message == "attempt 1 failed (infrastructure): killed; retrying in 30 s"
    assert job.not_before is not None and before + timedelta(seconds=29) < job.not_before
    assert ledger.next_queued(5) == [], "not before its time"


def test_retry_later_of_an_unknown_job_changes_nothing(ledger: Ledger) -> None:
    ledger.retry_later("nope-1", JobOutcome(state=JobState.FAILED), 5)
    assert ledger.count_jobs() == {}


def test_a_retry_or_a_wait_recorded_twice_counts_once(ledger: Ledger) -> None:
    """The dispatcher writes a batch's ends again when a write failed halfway (a full disk)."""
    retried, waiting, requeued = (ledger.create_request_job("grayify", "/r", sync=False) for _ in range(3))
    ledger.mark_running_many([retried, waiting, requeued])
    failed = JobOutcome(state=JobState.FAILED, message="boom", failure="infrastructure")
    no_room = JobOutcome(state=JobState.FAILED, message="full", failure="unavailable", waiting_for="disk")

    for _ in range(2):
        ledger.retry_later(retried, failed, 30)
        ledger.wait_for_store(waiting, no_room, 1)
        ledger.requeue(requeued, "queued again")

    assert [ledger.fetch_job(job).attempt for job in (retried, waiting, requeued)] == [2, 1, 2]  # type: ignore[union-attr]
    assert ledger.fetch_job(retried).message.startswith("attempt 1 failed")  # type: ignore[union-attr]


def test_next_retry_time_is_the_earliest_queued_retry(ledger: Ledger) -> None:
    assert ledger.next_retry_time() is None
    late, soon, cancelled = (ledger.create_request_job("grayify", "/r", sync=False) for _ in range(3))
    ledger.mark_running_many([late, soon, cancelled])
    failed = JobOutcome(state=JobState.FAILED, exit_code=1)
    ledger.retry_later(late, failed, 600)
    ledger.retry_later(soon, failed, 60)
    ledger.retry_later(cancelled, failed, 1)
    ledger.cancel_queued(cancelled, "no more")

    due = ledger.next_retry_time()

    assert due == ledger.fetch_job(soon).not_before  # type: ignore[union-attr]
    assert due is not None and due.tzinfo is not None


def test_replay_queues_named_finished_jobs_again_as_a_new_attempt(ledger: Ledger) -> None:
    done, failed, queued = (ledger.create_request_job("a", "/r", sync=False) for _ in range(3))
    finished_with(ledger, done, "x")
    ledger.finish_job(failed, JobOutcome(state=JobState.FAILED, exit_code=1))
    other = ledger.create_request_job("b", "/r", sync=False)
    ledger.finish_job(other, succeeded())

    replayed = ledger.replay("a", [done, failed, queued, other])

    assert sorted(replayed) == sorted([done, failed])
    job = ledger.fetch_job(done)
    assert job is not None
    assert (job.state, job.attempt, job.started_at, job.finished_at, job.not_before) == (
        JobState.QUEUED,
        2,
        None,
        None,
        None,
    )
    assert job.message == "replayed on request (attempt 2)"
    assert ledger.fetch_job(other).state == JobState.SUCCEEDED  # type: ignore[union-attr]
    assert ledger.replay("a", [done]) == [], "queued again: not finished"


def test_replay_dead_takes_every_dead_job_of_the_service(ledger: Ledger) -> None:
    dead = [ledger.create_request_job("a", "/r", sync=False) for _ in range(2)]
    failed = ledger.create_request_job("a", "/r", sync=False)
    for job_id in dead:
        ledger.finish_job(job_id, JobOutcome(state=JobState.DEAD, message="gave up"))
    ledger.finish_job(failed, JobOutcome(state=JobState.FAILED, exit_code=1))

    assert sorted(ledger.replay("a", states=[JobState.DEAD])) == sorted(dead)
    assert ledger.count_jobs("a") == {"a": {JobState.QUEUED: 2, JobState.FAILED: 1}}


def test_known_versions_of_a_service_under_a_prefix(ledger: Ledger) -> None:
    for key, etag in [("in/a", "1"), ("in/sub/b", "2"), ("in0/c", "3"), ("inx", "4"), ("other/d", "5")]:
        ledger.record_event(object_event(key, etag=etag), ["grayify"])
    ledger.record_event(object_event("in/mine", etag="6"), ["thumbs"])
    ledger.record_event(object_event("in/elsewhere", etag="7", bucket="b2"), ["grayify"])

    assert ledger.known_versions("grayify", "minio.default", "grayify", "in/") == {("in/a", "1"), ("in/sub/b", "2")}
    assert len(ledger.known_versions("grayify", "minio.default", "grayify", "")) == 5
    assert ledger.known_versions("grayify", "s3.other", "grayify", "in/") == set()


def test_has_event_and_service_created_at(ledger: Ledger) -> None:
    seen = object_event(etag="e1")
    ledger.record_event(seen, ["grayify"])
    before = datetime.now(UTC)
    ledger.put_service(make_service())

    assert ledger.has_event("grayify", seen) is True
    assert ledger.has_event("thumbs", seen) is False
    assert ledger.has_event("grayify", object_event(etag="e2")) is False
    created_at = ledger.service_created_at("grayify")
    assert created_at is not None and before <= created_at <= datetime.now(UTC)
    assert ledger.service_created_at("nobody") is None


def test_a_retry_already_due_is_no_reason_to_wake_again(ledger: Ledger) -> None:
    """Due and not started means no room or its store is down: what frees either wakes the dispatcher."""
    due, later = (ledger.create_request_job("grayify", "/r", sync=False) for _ in range(2))
    failed = JobOutcome(state=JobState.FAILED, exit_code=1)
    ledger.retry_later(due, failed, 0)
    assert ledger.next_retry_time() is None
    ledger.retry_later(later, failed, 60)
    assert ledger.next_retry_time() == ledger.fetch_job(later).not_before  # type: ignore[union-attr]


def test_waiting_for_a_store_queues_the_same_attempt_again(ledger: Ledger) -> None:
    job = ledger.create_request_job("grayify", "/r", sync=False)
    assert ledger.mark_running(job)
    unreachable = JobOutcome(
        state=JobState.FAILED, failure="unavailable", waiting_for="s3.ceph", message="connection refused"
    )

    ledger.wait_for_store(job, unreachable, 1.0)

    record = ledger.fetch_job(job)
    assert record is not None
    assert (record.state, record.attempt, record.started_at) == (JobState.QUEUED, 1, None)
    assert record.message == "waiting for s3.ceph, which does not answer: connection refused"
    assert record.not_before is not None
