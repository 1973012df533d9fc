"""The one door into the ledger for object events, whichever receiver brought them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from conveyor.events.routing import InputIndex
from conveyor.ledger.store import Ledger
from conveyor.model.event import ObjectEvent


class EventIntake:
    def __init__(self, ledger: Ledger, index: InputIndex, on_new_jobs: Callable[[], None]) -> None:
        self.ledger = ledger
        self.index = index
        self.on_new_jobs = on_new_jobs

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
