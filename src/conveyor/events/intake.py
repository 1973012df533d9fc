"""The one door into the ledger for object events, whichever receiver brought them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from conveyor.events.routing import InputIndex
from conveyor.model.event import ObjectEvent, ObjectRef

if TYPE_CHECKING:
    from conveyor.ledger.store import Ledger


class EventIntake:
    def __init__(self, ledger: Ledger, index: InputIndex, on_new_jobs: Callable[[], None]) -> None:
        self.ledger = ledger
        self.index = index
        self.on_new_jobs = on_new_jobs

    def services_for(self, ref: ObjectRef) -> list[str]:
        """The services an object triggers (those with an input it lies under)."""
        return self.index.services_for(ref)

    def accept(self, event: ObjectEvent, only_service: str | None = None) -> list[str]:
        """Record the event for every service it triggers (or only `only_service`); returns new job ids.

        Returns once the ledger has the event: only then may the sender be acknowledged.
        """
        return [job for jobs in self.accept_many([event], only_service) for job in jobs]

    def accept_many(self, events: Sequence[ObjectEvent], only_service: str | None = None) -> list[list[str]]:
        """accept() for many events in one ledger transaction: the new job ids of each event."""
        routed = [(event, [only_service] if only_service else self.index.services_for(event.ref)) for event in events]
        jobs = self.ledger.record_events(routed)
        if any(jobs):
            self.on_new_jobs()
        return jobs


class GroupedIntake:
    """accept() for receivers on an asyncio event loop that answer one event per request (the filer's
    webhook): events that arrive while a ledger write is under way go into the next write together,
    one worker-thread hop and one transaction for the group (a group commit). A lone event is
    written at once. Each caller gets its own event's job ids once the ledger has it.

    Use from one event loop only (no locks: the loop serializes every method).
    """

    def __init__(self, accept_many: Callable[[Sequence[ObjectEvent]], list[list[str]]]) -> None:
        self.accept_many = accept_many
        """EventIntake.accept_many, run in a worker thread."""
        self._waiting: list[tuple[ObjectEvent, asyncio.Future[list[str]]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def accept(self, event: ObjectEvent) -> list[str]:
        future: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups())
        return await future

    async def _write_groups(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                created = await asyncio.to_thread(self.accept_many, [event for event, _ in group])
            except Exception as error:  # every caller of the group answers with the failure: none is lost
                for _, future in group:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), jobs in zip(group, created, strict=True):
                if not future.done():
                    future.set_result(jobs)
