"""The ledger's provenance queries (Ledger.lineage): plain values, a whole level per call."""

from __future__ import annotations

import dataclasses

import pytest

from conveyor.ledger import lineage as lineage_module
from conveyor.ledger.lineage import LineageJob, LineageOutput, ObjectKey
from conveyor.ledger.store import Ledger
from conveyor.model.event import ObjectEvent, ObjectInfo, ObjectRef
from conveyor.model.job import JobOutcome, JobState
from tests.support.ledger_rows import statements_run


def version(path: str, etag: str) -> ObjectKey:
    return ObjectKey.of(ObjectRef.parse(path), etag)


def announce(ledger: Ledger, path: str, etag: str, services: list[str], *, by: str | None = None) -> list[str]:
    """`path` stored (by a user, or stamped by the job `by`) and announced to `services`."""
    event = ObjectEvent(ref=ObjectRef.parse(path), etag=etag, size=len(etag), producer_job=by, producer_depth=0)
    return ledger.record_event(event, services)


def wrote(ledger: Ledger, job_id: str, *written: tuple[str, str], state: JobState = JobState.SUCCEEDED) -> None:
    """The job ends in `state` having written `written` ((path, etag) pairs), in that order."""
    outputs = [ObjectInfo(ref=ObjectRef.parse(path), etag=etag, size=len(etag)) for path, etag in written]
    ledger.finish_job(job_id, JobOutcome(state=state, exit_code=0, outputs=outputs))


def test_versions_merge_events_and_outputs_oldest_first(ledger: Ledger) -> None:
    [reader] = announce(ledger, "v/in/x", "first", ["a"])
    wrote(ledger, reader, ("v/in/x", "second"), ("v/other/y", "elsewhere"))
    announce(ledger, "v/in/x", "second", ["b"], by=reader)
    announce(ledger, "v/in/x", "first", ["c"])

    with ledger.lineage() as lineage:
        versions = lineage.versions(ObjectRef.parse("v/in/x"))
        elsewhere = lineage.versions(ObjectRef(provider="s3.other", bucket="v", key="in/x"))

    assert [(v.etag, v.size) for v in versions] == [("first", 5), ("second", 6)]
    assert versions[0].seen_at is not None and versions[1].seen_at is not None
    assert versions[0].seen_at < versions[1].seen_at
    assert elsewhere == []


def test_writers_are_the_latest_job_to_write_the_version_else_the_stamp(ledger: Ledger) -> None:
    [early] = announce(ledger, "w/in/1", "e", ["a"])
    [late] = announce(ledger, "w/in/2", "e", ["a"])
    wrote(ledger, early, ("w/out/x", "same"))
    wrote(ledger, late, ("w/out/x", "same"), state=JobState.FAILED)
    [running] = announce(ledger, "w/in/3", "e", ["a"])
    assert ledger.mark_running(running)
    announce(ledger, "w/mid/y", "m", ["b"], by=running)  # stored and announced before its writer ended

    with ledger.lineage() as lineage:
        writers = lineage.writers({version("w/out/x", "same"), version("w/mid/y", "m"), version("w/in/1", "e")})

    assert {obj.key: job.job_id for obj, job in writers.items()} == {"out/x": late, "mid/y": running}
    assert writers[version("w/out/x", "same")].state == JobState.FAILED
    assert writers[version("w/mid/y", "m")].state == JobState.RUNNING


def test_consumers_are_the_jobs_each_exact_version_started_oldest_first(ledger: Ledger) -> None:
    readers = announce(ledger, "c/in/x", "v1", ["a", "b", "c"])
    [newer] = announce(ledger, "c/in/x", "v2", ["a"])
    announce(ledger, "c/in/y", "v1", ["a"])

    with ledger.lineage() as lineage:
        consumers = lineage.consumers({version("c/in/x", "v1"), version("c/in/z", "v1")})

    assert list(consumers) == [version("c/in/x", "v1")]
    assert [(job.job_id, job.service) for job in consumers[version("c/in/x", "v1")]] == list(
        zip(readers, "abc", strict=True)
    )
    assert newer not in {job.job_id for jobs in consumers.values() for job in jobs}


def test_triggers_name_the_version_that_started_each_job_but_not_http_ones(ledger: Ledger) -> None:
    [reader] = announce(ledger, "t/in/x", "e1", ["a"])
    http = ledger.create_request_job("a", "/r", sync=False)
    wrote(ledger, reader, ("t/out/r", "r"))
    wrote(ledger, http, ("t/out/h", "h"))

    with ledger.lineage() as lineage:
        writers = lineage.writers({version("t/out/r", "r"), version("t/out/h", "h")})
        triggers = lineage.triggers(writers.values())

    assert {job.job_id: job.event_id is not None for job in writers.values()} == {reader: True, http: False}
    assert triggers == {reader: version("t/in/x", "e1")}
    assert triggers[reader].ref == ObjectRef.parse("t/in/x")


def test_outputs_per_job_in_the_order_recorded(ledger: Ledger) -> None:
    first, second, idle = announce(ledger, "o/in/x", "e", ["a", "b", "c"])
    wrote(ledger, first, ("o/out/z", "1"), ("o/out/a", "22"), ("o/out/m", "333"))
    wrote(ledger, second, ("o/out/b", "4"))

    with ledger.lineage() as lineage:
        outputs = lineage.outputs({first, second, idle})

    assert outputs[first] == [
        LineageOutput(version("o/out/z", "1"), 1),
        LineageOutput(version("o/out/a", "22"), 2),
        LineageOutput(version("o/out/m", "333"), 3),
    ]
    assert outputs[second] == [LineageOutput(version("o/out/b", "4"), 1)]
    assert idle not in outputs


def test_answers_are_plain_frozen_values(ledger: Ledger) -> None:
    [reader] = announce(ledger, "p/in/x", "e", ["a"])

    with ledger.lineage() as lineage:
        [job] = lineage.consumers({version("p/in/x", "e")})[version("p/in/x", "e")]

    assert isinstance(job, LineageJob)
    assert (job.job_id, job.service, job.state, job.attempt, job.depth, job.message) == (
        reader,
        "a",
        JobState.QUEUED,
        1,
        0,
        "",
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.message = "changed"  # type: ignore[misc]


def test_a_level_wider_than_a_batch_is_read_in_chunks_with_the_same_answer(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = {version(f"b/in/{i}", "e"): announce(ledger, f"b/in/{i}", "e", ["a"]) for i in range(5)}
    with ledger.lineage() as lineage:
        whole = lineage.consumers(set(objects))

    monkeypatch.setattr(lineage_module, "BATCH", 2)
    with statements_run(ledger) as statements, ledger.lineage() as lineage:
        chunked = lineage.consumers(set(objects))

    assert {obj: [job.job_id for job in jobs] for obj, jobs in chunked.items()} == objects
    assert chunked == whole
    assert len(statements) == 6, "three chunks of keys for events, three of event ids for jobs"


def test_a_lineage_block_reads_one_snapshot_of_a_sqlite_ledger(ledger: Ledger) -> None:
    [job] = announce(ledger, "s/in/x", "e", ["a"])

    with ledger.lineage() as lineage:
        before = lineage.outputs({job})
        wrote(ledger, job, ("s/out/x", "o"))  # the job ends while a trace is half-way
        during = lineage.outputs({job})
    with ledger.lineage() as lineage:
        after = lineage.outputs({job})

    assert before == during == {}
    assert [output.version for output in after[job]] == [version("s/out/x", "o")]
