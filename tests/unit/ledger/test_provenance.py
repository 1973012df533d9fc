"""Provenance from the ledger alone: events, jobs and outputs made through the Ledger's own methods."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, event

from conveyor.ledger.provenance import MAX_LEVELS, UpstreamJob, trace
from conveyor.ledger.store import Ledger
from conveyor.model.event import ObjectEvent, ObjectInfo, ObjectRef
from conveyor.model.job import JobOutcome, JobState


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    store = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", lineage_limit=1000)
    try:
        yield store
    finally:
        store.close()


def put(ledger: Ledger, path: str, etag: str, services: list[str], *, by: str | None = None) -> list[str]:
    """An object stored at `path` (by a user, or by the job `by`), announced to `services`."""
    depth = None
    if by is not None:
        record = ledger.fetch_job(by)
        assert record is not None
        depth = record.depth
    ref = ObjectRef.parse(path)
    return ledger.record_event(
        ObjectEvent(ref=ref, etag=etag, size=len(etag), producer_job=by, producer_depth=depth), services
    )


def run(ledger: Ledger, job_id: str, *outputs: tuple[str, str], state: JobState = JobState.SUCCEEDED) -> None:
    """The job runs and ends in `state`, having written `outputs` ((path, etag) pairs)."""
    assert ledger.mark_running(job_id)
    written = [ObjectInfo(ref=ObjectRef.parse(path), etag=etag, size=len(etag)) for path, etag in outputs]
    ledger.finish_job(job_id, JobOutcome(state=state, exit_code=0, outputs=written))


def chain(ledger: Ledger) -> tuple[str, str]:
    """A user puts flow/in/x; service a writes flow/mid/x from it; service b writes flow/out/x."""
    [a] = put(ledger, "flow/in/x", "e-in", ["a"])
    run(ledger, a, ("flow/mid/x", "e-mid"))
    [b] = put(ledger, "flow/mid/x", "e-mid", ["b"], by=a)
    run(ledger, b, ("flow/out/x", "e-out"))
    return a, b


def test_a_middle_object_shows_its_writer_up_to_the_upload_and_its_reader_down(ledger: Ledger) -> None:
    a, b = chain(ledger)

    traced = trace(ledger, "flow", "mid/x")

    [version] = traced.versions
    assert version.etag == "e-mid" and version.size == 5
    writer = version.produced_by
    assert writer is not None
    assert (writer.job.job_id, writer.job.service, writer.job.state, writer.job.depth) == (a, "a", "succeeded", 0)
    assert writer.job.started_at is not None and writer.job.finished_at is not None
    assert writer.trigger is not None
    assert (str(writer.trigger.ref), writer.trigger.etag) == ("flow/in/x", "e-in")
    assert writer.trigger.produced_by is None, "a user put the root"
    [reader] = version.consumed_by
    assert (reader.job.job_id, reader.job.service, reader.job.depth) == (b, "b", 1)
    assert [(str(o.ref), o.etag) for o in reader.outputs] == [("flow/out/x", "e-out")]
    assert reader.outputs[0].consumed_by == []


def test_an_upload_has_no_writer_and_its_readers_lead_to_the_end_of_the_chain(ledger: Ledger) -> None:
    a, b = chain(ledger)

    [version] = trace(ledger, "flow", "in/x").versions

    assert version.produced_by is None
    [first] = version.consumed_by
    assert first.job.job_id == a
    [mid] = first.outputs
    assert str(mid.ref) == "flow/mid/x"
    assert [j.job.job_id for j in mid.consumed_by] == [b]
    assert [str(o.ref) for o in mid.consumed_by[0].outputs] == ["flow/out/x"]


def test_the_end_of_a_chain_goes_back_to_the_upload(ledger: Ledger) -> None:
    a, b = chain(ledger)

    [version] = trace(ledger, "flow", "out/x").versions

    assert chain_up(version.produced_by) == [(b, "flow/mid/x"), (a, "flow/in/x")]
    assert version.consumed_by == []


def test_each_version_of_an_object_has_its_own_history(ledger: Ledger) -> None:
    [first] = put(ledger, "many/in/x", "v1", ["a"])
    [second] = put(ledger, "many/in/x", "v2", ["a"])
    run(ledger, first, ("many/out/x", "o1"))
    run(ledger, second, ("many/out/x", "o2"), state=JobState.FAILED)

    versions = trace(ledger, "many", "in/x").versions
    outputs = trace(ledger, "many", "out/x").versions

    assert [(v.etag, [j.job.job_id for j in v.consumed_by]) for v in versions] == [("v1", [first]), ("v2", [second])]
    assert [(v.etag, v.produced_by.job.job_id, v.produced_by.job.state) for v in outputs if v.produced_by] == [
        ("o1", first, "succeeded"),
        ("o2", second, "failed"),
    ]


def test_an_object_read_by_several_services_lists_every_job(ledger: Ledger) -> None:
    jobs = put(ledger, "fan/in/x", "e", ["thumbs", "exif", "backup"])

    [version] = trace(ledger, "fan", "in/x").versions

    assert [(j.job.job_id, j.job.service, j.job.state) for j in version.consumed_by] == [
        (jobs[0], "thumbs", "queued"),
        (jobs[1], "exif", "queued"),
        (jobs[2], "backup", "queued"),
    ]


def test_a_writer_still_running_is_known_from_the_stamp_on_its_output(ledger: Ledger) -> None:
    [a] = put(ledger, "live/in/x", "e-in", ["a"])
    assert ledger.mark_running(a)
    put(ledger, "live/mid/x", "e-mid", ["b"], by=a)  # the store announced it before a finished

    [version] = trace(ledger, "live", "mid/x").versions

    assert version.produced_by is not None
    assert (version.produced_by.job.job_id, version.produced_by.job.state) == (a, "running")
    assert chain_up(version.produced_by) == [(a, "live/in/x")]


def test_a_job_started_by_an_http_request_is_where_its_chain_begins(ledger: Ledger) -> None:
    job = ledger.create_request_job("render", "/tmp/body", sync=False)
    run(ledger, job, ("pics/out/r.png", "e"))

    [version] = trace(ledger, "pics", "out/r.png").versions

    assert version.produced_by is not None
    assert (version.produced_by.job.job_id, version.produced_by.trigger, version.produced_by.cut) == (job, None, None)


def test_a_loop_that_writes_the_same_content_back_ends_with_jobs_already_shown(ledger: Ledger) -> None:
    # a copies loop/in → loop/mid and b copies it back: the copy has the upload's etag, so the
    # ledger sees no new version and starts no job, and the ledger says b wrote the upload.
    [a] = put(ledger, "loop/in/x", "same", ["a"])
    run(ledger, a, ("loop/mid/x", "same"))
    [b] = put(ledger, "loop/mid/x", "same", ["b"], by=a)
    run(ledger, b, ("loop/in/x", "same"))
    assert put(ledger, "loop/in/x", "same", ["a"], by=b) == []

    [version] = trace(ledger, "loop", "in/x").versions

    writer = version.produced_by
    assert writer is not None and writer.job.job_id == b
    assert writer.trigger is not None and writer.trigger.produced_by is not None
    above = writer.trigger.produced_by
    assert above.job.job_id == a and above.trigger is not None
    assert above.trigger.produced_by is not None
    assert (above.trigger.produced_by.job.job_id, above.trigger.produced_by.cut) == (b, "seen")
    [reader] = version.consumed_by
    [back] = reader.outputs[0].consumed_by[0].outputs
    assert str(back.ref) == "loop/in/x"
    assert [(j.job.job_id, j.cut, j.outputs) for j in back.consumed_by] == [(a, "seen", [])]


def test_a_chain_longer_than_the_walk_is_cut_at_the_limit(ledger: Ledger) -> None:
    length = MAX_LEVELS + 6
    [job] = put(ledger, "long/0/x", "e0", ["s"])
    for step in range(1, length + 1):
        run(ledger, job, (f"long/{step}/x", f"e{step}"))
        if step < length:
            [job] = put(ledger, f"long/{step}/x", f"e{step}", ["s"], by=job)

    up = trace(ledger, "long", f"{length}/x").versions[0].produced_by
    down = trace(ledger, "long", "0/x").versions[0].consumed_by

    ups = chain_up(up)
    assert len(ups) == MAX_LEVELS - 1
    assert last_up(up).cut == "limit"
    deepest, levels = down[0], 1
    while deepest.outputs and deepest.outputs[0].consumed_by:
        deepest, levels = deepest.outputs[0].consumed_by[0], levels + 1
    assert (levels, deepest.cut, deepest.outputs) == (MAX_LEVELS, "limit", [])


def test_a_wide_fan_out_costs_a_few_queries_per_level_not_one_per_job(ledger: Ledger) -> None:
    width = 120
    readers = put(ledger, "wide/in/x", "e", [f"s{i}" for i in range(width)])
    for i, job in enumerate(readers):
        run(ledger, job, (f"wide/mid/{i}a", f"m{i}a"), (f"wide/mid/{i}b", f"m{i}b"))
        for suffix in "ab":
            [final] = put(ledger, f"wide/mid/{i}{suffix}", f"m{i}{suffix}", ["z"], by=job)
            run(ledger, final, (f"wide/out/{i}{suffix}", f"o{i}{suffix}"))

    with count_queries() as queries:
        [version] = trace(ledger, "wide", "in/x").versions

    assert len(version.consumed_by) == width
    assert sum(len(o.consumed_by) for j in version.consumed_by for o in j.outputs) == 2 * width
    assert len(queries) <= 16, queries


def test_an_object_the_ledger_never_saw_has_no_versions(ledger: Ledger) -> None:
    chain(ledger)

    assert trace(ledger, "flow", "nowhere").versions == []
    assert trace(ledger, "flow", "mid/x", provider="s3.other").versions == []


# ---- helpers -----------------------------------------------------------------------------------


def chain_up(writer: UpstreamJob | None) -> list[tuple[str, str]]:
    """(job, the object it was started for) from the writer up to the upload."""
    steps = []
    while writer is not None and writer.trigger is not None:
        steps.append((writer.job.job_id, str(writer.trigger.ref)))
        writer = writer.trigger.produced_by
    return steps


def last_up(writer: UpstreamJob | None) -> UpstreamJob:
    assert writer is not None
    while writer.trigger is not None and writer.trigger.produced_by is not None:
        writer = writer.trigger.produced_by
    return writer


@contextmanager
def count_queries() -> Iterator[list[str]]:
    """The first line of every SQL statement any engine runs inside the block."""
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement.split("\n", 1)[0])

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(Engine, "before_cursor_execute", record)
