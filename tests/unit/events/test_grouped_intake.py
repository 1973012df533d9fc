"""The webhook's group commit: events that arrive while a ledger write is under way are written
together, each caller still answered with its own event's jobs, and a failed write fails every
caller of its group (so every sender sends again)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from conveyor.events.intake import EventIntake, GroupedIntake
from conveyor.events.routing import InputIndex
from conveyor.ledger.store import Ledger
from conveyor.model.event import ObjectEvent, ObjectRef
from conveyor.model.service import Service


@pytest.fixture
def intake(tmp_path: Path) -> Iterator[EventIntake]:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    service = Service.model_validate(
        {"name": "grayify", "image": "busybox", "script": "true", "input": [{"path": "grayify/in"}]}
    )
    ledger.put_service(service)
    index = InputIndex()
    index.rebuild([service])
    try:
        yield EventIntake(ledger, index, on_new_jobs=lambda: None)
    finally:
        ledger.close()


def event(key: str) -> ObjectEvent:
    return ObjectEvent(ref=ObjectRef(bucket="grayify", key=key), etag=key)


class FirstWriteHeld:
    """EventIntake.accept_many whose first call waits until `release` is set; records group sizes."""

    def __init__(self, intake: EventIntake) -> None:
        self.intake = intake
        self.release = threading.Event()
        self.groups: list[int] = []

    def __call__(self, events: Sequence[ObjectEvent]) -> list[list[str]]:
        self.groups.append(len(events))
        if len(self.groups) == 1:
            self.release.wait(10)
        return self.intake.accept_many(events)


def test_events_arriving_during_a_write_are_written_together_and_each_caller_gets_its_jobs(
    intake: EventIntake,
) -> None:
    held = FirstWriteHeld(intake)

    async def scenario() -> list[list[str]]:
        grouped = GroupedIntake(held)
        first = asyncio.create_task(grouped.accept(event("in/0.jpg")))
        await asyncio.sleep(0.05)  # the first write is under way (and held)
        rest = [asyncio.create_task(grouped.accept(event(f"in/{i}.jpg"))) for i in range(1, 30)]
        await asyncio.sleep(0.05)
        held.release.set()
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(scenario())

    assert held.groups == [1, 29]
    assert all(len(jobs) == 1 for jobs in answers)
    queued = {claimed.job_id: claimed.event.ref.key for claimed in intake.ledger.next_queued(100)}  # type: ignore[union-attr]
    assert [queued[jobs[0]] for jobs in answers] == [f"in/{i}.jpg" for i in range(30)]


def test_a_failed_write_fails_every_caller_of_its_group_and_the_next_write_goes_on(intake: EventIntake) -> None:
    calls: list[int] = []

    def broken_once(events: Sequence[ObjectEvent]) -> list[list[str]]:
        calls.append(len(events))
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return intake.accept_many(events)

    async def scenario() -> tuple[list[object], list[str]]:
        grouped = GroupedIntake(broken_once)
        group = [grouped.accept(event(f"in/{i}.jpg")) for i in range(3)]
        failed = await asyncio.gather(*group, return_exceptions=True)
        return failed, await grouped.accept(event("in/again.jpg"))

    failed, later = asyncio.run(scenario())

    assert [str(error) for error in failed] == ["database is locked"] * 3
    assert calls == [3, 1]
    assert len(later) == 1
