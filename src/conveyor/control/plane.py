"""What the platform's clients may use (the API today, the dashboard next), each part on its own.

`Platform` builds one `ControlPlane` once every component runs and hands it to the API; routes take
the one part they need (api/deps.py), never the platform and its machinery.
"""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.control.buckets import Buckets
from conveyor.control.catalog import ServiceCatalog
from conveyor.control.credentials import Credentials
from conveyor.control.jobs import JobsDesk
from conveyor.control.status import StatusBoard
from conveyor.events.intake import EventIntake
from conveyor.events.reconciler import Reconciler
from conveyor.supervisor.remote import RemoteStaging


@dataclass(frozen=True)
class ControlPlane:
    catalog: ServiceCatalog
    jobs: JobsDesk
    buckets: Buckets
    status: StatusBoard
    credentials: Credentials
    intake: EventIntake
    """The one door into the ledger for the stores' notifications."""
    reconciler: Reconciler
    staging: RemoteStaging | None = None
    """What pods of jobs that run elsewhere may read and write (the Kubernetes backend)."""
