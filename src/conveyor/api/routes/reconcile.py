"""`POST /conveyor/v1/reconcile`: look for lost events now instead of at the next round."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.api.deps import AdminDep, ReconcilerDep
from conveyor.events.reconciler import ReconcileReport

router = APIRouter(dependencies=[AdminDep])


@router.post("/conveyor/v1/reconcile", tags=["conveyor"])
def reconcile(reconciler: ReconcilerDep, full: bool = True) -> ReconcileReport:
    """List every service's inputs and accept the objects the ledger has no event for.

    Waits for a round already in progress, then runs a whole one: on a large store this takes
    seconds (a plain `def`, so it runs in FastAPI's thread pool, not on the event loop).
    `full=false` replays only the store's change log since the last round, as the periodic rounds do.
    """
    return reconciler.reconcile_once(full=full)
