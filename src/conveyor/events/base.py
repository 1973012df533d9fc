"""Event sources: how a store tells Conveyor that an object arrived under a service's input.

    store ─ notification (filer webhook, SNS push, SQS message, MinIO webhook) ─▶ receiver ─┐
    store ─ listing or change log (the reconciler) ──────────────────────────────────────────┴─▶ EventIntake ─▶ ledger

Each input has one source, chosen from its provider's settings (`events:` under
`storage_providers.<kind>.<id>`), set up when its service is applied (`wire`) and taken down when it
is deleted (`unwire`). A source with nothing to set up (the embedded store, plain polling) leaves
both alone. Whatever the source, the reconciler lists inputs too, so a lost notification is found.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from conveyor.model.service import Service, StorageIO

if TYPE_CHECKING:  # the validation rules read the sources table without loading the ledger
    from conveyor.events.intake import EventIntake
    from conveyor.storage.registry import ProviderRegistry


@dataclass(frozen=True)
class SourceContext:
    """What event sources share: the way into the ledger, the stores, and where stores can post."""

    intake: EventIntake
    storage: ProviderRegistry
    receiver_url: Callable[[str], str]
    """The URL a store posts notifications to for a provider (`s3.ceph`), token included."""


class EventSource(ABC):
    kind: ClassVar[str]
    """The `events:` value that selects this source."""
    polled: ClassVar[bool] = False
    """True when listing is the only way to learn of new objects: the reconciler lists such inputs every round."""

    def __init__(self, context: SourceContext) -> None:
        self.context = context

    @abstractmethod
    def describe(self, service: Service, io: StorageIO) -> str:
        """One line for `conveyor services`: how this input's events arrive."""

    def wire(self, service: Service, io: StorageIO) -> None:  # noqa: B027 - most sources need no set-up
        """Ask the store to notify Conveyor of objects created under `io` (idempotent).

        Raises StorageError naming the provider and the path when the store refuses.
        """

    def unwire(self, service: Service, io: StorageIO) -> None:  # noqa: B027
        """Stop the notifications `wire` set up; what was not set up is not an error."""

    def start(self) -> None:  # noqa: B027 - only pollers run threads
        """Begin receiving (pollers start their threads here)."""

    def stop(self) -> None:  # noqa: B027
        """Stop receiving; returns promptly."""
