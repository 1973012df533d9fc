"""The ledger: the durable source of truth for services, events and jobs."""

from conveyor.ledger.store import Ledger

__all__ = ["Ledger"]
