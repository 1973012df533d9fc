"""The one door into the ledger for object events, whichever receiver brought them."""

from __future__ import annotations

from collections.abc import Callable

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
        services = self.index.services_for(event.ref)
        if only_service is not None:
            services = [only_service]
        if not services:
            return []
        created = self.ledger.record_event(event, services)
        if created:
            self.on_new_jobs()
        return created
