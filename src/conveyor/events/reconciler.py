"""The reconciler: finds objects whose notification never arrived, and accepts them like any event.

Webhooks get lost: SeaweedFS keeps its notification queue in memory, and nothing delivers to a
platform that is down. So once at start-up and then every `dispatch.reconcile_interval_s`, every
service's inputs are listed and compared with the ledger; each object version the ledger has no
event for goes through the intake, the one door into the ledger. The ledger's idempotency key
(service, bucket, key, etag) makes the reconciler and a late webhook agree: whichever comes
second is counted as a duplicate, so a race between them still creates one job.

Not every unseen object is work:

- Objects stored more than `CREATED_AT_SLACK` before the service was created are not its work:
  OSCAR would never have run them either (it only hears of objects put after the bucket
  notification was set up), and applying a service to a full bucket must not start a backfill.
- Objects younger than `settle_s` are left to their webhook, which is normally milliseconds away.
  A job's outputs are the reason: their notification names the job that wrote them (lineage and
  the loop limit), which a listing cannot tell until the job is finished. The next round takes
  them if the webhook never comes. Objects stored before the reconciler started are never kept
  waiting: the store restarted with the platform, so their notification is gone for good.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field, computed_field

from conveyor.errors import StorageError
from conveyor.events.intake import EventIntake
from conveyor.ledger.store import Ledger
from conveyor.model.event import ObjectEvent, ObjectInfo, ObjectRef, utcnow
from conveyor.model.service import Service, StorageIO
from conveyor.storage.base import StorageProvider
from conveyor.storage.registry import ProviderRegistry

log = logging.getLogger(__name__)

CREATED_AT_SLACK = timedelta(seconds=2)
"""Stores keep object times to the second, and their clock may run a little apart from ours."""
SETTLE_S = 3.0
"""Seconds a new object is left to its own notification before a round takes it."""
MAX_DUTY = 20
"""Listing rounds are at least this many times their own duration apart (listing costs at most 5 %)."""
FULL_LISTING_EVERY_S = 6 * 3600.0
"""With a change log to replay, the inputs are still listed in full this often, and at start-up."""
REPLAY_OVERLAP = timedelta(seconds=2)
"""Replay windows overlap a little: an object seen twice is recognised, one missed would be lost."""
ACCEPT_BATCH = 500
"""Objects found without an event are recorded this many to a ledger transaction."""

ChangeLog = Callable[[datetime, datetime], Iterable[ObjectEvent]]
"""Object events stored between two moments, from a store that keeps a change log (SeaweedFS)."""
STOP_TIMEOUT_S = 10.0


class ServiceReconcile(BaseModel):
    """One service's part of a round."""

    service: str
    listed: int = 0
    """Objects found under the service's inputs (folder markers not counted)."""
    accepted: int = 0
    """Objects the ledger had no event for, now accepted with a new job."""
    known: int = 0
    """Objects the ledger already has an event for (or that a webhook recorded during the round)."""
    older_than_service: int = 0
    settling: int = 0
    """Objects too young to tell apart from a notification still on its way; the next round sees them."""
    errors: list[str] = Field(default_factory=list)
    seconds: float = 0.0


class ReconcileReport(BaseModel):
    started_at: datetime
    mode: Literal["listing", "replay"] = "listing"
    """listing: every object under the inputs; replay: the store's change log since the last round."""
    services: list[ServiceReconcile] = Field(default_factory=list)
    seconds: float = 0.0

    @computed_field
    @property
    def listed(self) -> int:
        return sum(s.listed for s in self.services)

    @computed_field
    @property
    def accepted(self) -> int:
        return sum(s.accepted for s in self.services)

    @computed_field
    @property
    def older_than_service(self) -> int:
        return sum(s.older_than_service for s in self.services)

    @computed_field
    @property
    def settling(self) -> int:
        return sum(s.settling for s in self.services)

    @computed_field
    @property
    def errors(self) -> int:
        return sum(len(s.errors) for s in self.services)


class Reconciler:
    def __init__(
        self,
        ledger: Ledger,
        storage: ProviderRegistry,
        intake: EventIntake,
        interval_s: float,
        *,
        settle_s: float = SETTLE_S,
        change_log: ChangeLog | None = None,
        is_polled: Callable[[Service, StorageIO], bool] = lambda service, io: False,
        full_listing_every_s: float = FULL_LISTING_EVERY_S,
    ) -> None:
        self.ledger = ledger
        self.storage = storage
        self.intake = intake
        self.interval_s = interval_s
        """Seconds between rounds; 0 runs none on its own (`reconcile_once` still works)."""
        self.settle_s = settle_s
        self.change_log = change_log
        self.is_polled = is_polled
        """Whether an input's store has no notifications, so that every round must list it."""
        self.full_listing_every_s = full_listing_every_s
        self._replay_from: datetime | None = None
        """Where the next replay starts; None until a full listing has covered everything before."""
        self._last_listing = 0.0
        self.started_at = utcnow()
        self._stopping = threading.Event()
        self._round_lock = threading.Lock()
        """One round at a time: a round asked for through the API waits for the periodic one."""
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """A round now, in the background (listing a large store takes a while), then one every interval."""
        self.started_at = utcnow()
        self._stopping.clear()
        if self.interval_s <= 0:
            return
        self._thread = threading.Thread(target=self._loop, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Returns promptly: a round in progress gives up at the next object it looks at."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def reconcile_soon(self, delay_s: float | None = None) -> None:
        """A full round in the background after `delay_s` (default settle_s): a store is back, and the
        notifications of objects it stored just before it went down are lost."""
        wait_s = self.settle_s if delay_s is None else delay_s

        def round_after_outage() -> None:
            if self._stopping.wait(wait_s):
                return
            try:
                report = self.reconcile_once(full=True)
            except Exception:
                log.exception("the reconciliation round after an outage failed; the periodic rounds go on")
                return
            log.info("after the outage: %d objects listed, %d lost events accepted", report.listed, report.accepted)

        threading.Thread(target=round_after_outage, name="reconcile-after-outage", daemon=True).start()

    def _loop(self) -> None:
        wait_s = 0.0
        next_listing = 0.0
        while not self._stopping.wait(wait_s):
            wait_s = self.interval_s
            full = time.monotonic() >= next_listing
            try:
                report = self.reconcile_once(full=full)
            except Exception:  # a busy ledger or a bug in one round must not end reconciliation
                log.exception("reconciliation round failed; the next one retries")
                continue
            if report.mode == "listing":
                # A safety net must stay cheap: when a listing takes long, listings space out so
                # that they never take more than 1/MAX_DUTY of the time.
                pause = max(self.interval_s, report.seconds * MAX_DUTY)
                next_listing = time.monotonic() + (self.full_listing_every_s if self.change_log else pause)
                wait_s = self.interval_s if self.change_log else pause
            if report.accepted or report.errors:
                log.info(
                    "reconciled %d objects in %.1f s: %d lost events accepted, %d errors",
                    report.listed,
                    report.seconds,
                    report.accepted,
                    report.errors,
                )

    # ---- a round --------------------------------------------------------------------------

    def reconcile_once(self, *, full: bool = True) -> ReconcileReport:
        """Accept each object version under the services' inputs that the ledger has not seen.

        `full` lists every input; otherwise, when the store keeps a change log, only what changed
        since the last round is replayed (falling back to a listing when there is no starting point
        or the replay fails).
        """
        with self._round_lock:
            clock = time.perf_counter()
            report = ReconcileReport(started_at=utcnow())
            if full or self.change_log is None or self._replay_from is None or not self._replay(report):
                report = ReconcileReport(started_at=report.started_at)
                for service in self.ledger.list_services(with_secrets=True):
                    if self._stopping.is_set():
                        break
                    report.services.append(self._reconcile_service(service, report.started_at))
                # Everything stored before the listing began is covered, except what was left to settle.
                self._replay_from = report.started_at - timedelta(seconds=self.settle_s) - REPLAY_OVERLAP
            report.seconds = time.perf_counter() - clock
            return report

    def _replay(self, report: ReconcileReport) -> bool:
        """One round from the change log; False when the log cannot be read (a listing follows)."""
        assert self.change_log is not None and self._replay_from is not None
        report.mode = "replay"
        until = report.started_at - timedelta(seconds=self.settle_s)
        results: dict[str, ServiceReconcile] = {}
        created: dict[str, datetime | None] = {}
        try:
            for event in self.change_log(self._replay_from, until):
                if self._stopping.is_set():
                    return True
                for name in self.intake.index.services_for(event.ref):
                    if name not in created:
                        created[name] = self.ledger.service_created_at(name)
                    result = results.setdefault(name, ServiceReconcile(service=name))
                    self._reconcile_replayed(name, event, created[name], result)
        except StorageError as error:
            log.warning("replaying the store's change log failed (%s); listing instead", error)
            return False
        # Stores without notifications or a change log are listed every round: there is no other way.
        for service in self.ledger.list_services(with_secrets=True):
            if any(self.is_polled(service, io) for io in service.input):
                polled = self._reconcile_service(service, report.started_at, only_polled=True)
                results[service.name] = _merge(results.get(service.name), polled)
        report.services = list(results.values())
        self._replay_from = until - REPLAY_OVERLAP
        return True

    def _reconcile_replayed(
        self, name: str, event: ObjectEvent, created_at: datetime | None, result: ServiceReconcile
    ) -> None:
        result.listed += 1
        if created_at is None:
            return  # the service was deleted during the round
        if event.event_time < created_at - CREATED_AT_SLACK:
            result.older_than_service += 1
        elif self.ledger.has_event(name, event):
            result.known += 1
        elif self.intake.accept(event.model_copy(update={"source": "reconciler"}), only_service=name):
            result.accepted += 1
        else:
            result.known += 1

    def _reconcile_service(self, service: Service, now: datetime, *, only_polled: bool = False) -> ServiceReconcile:
        """List the service's inputs (with `only_polled`, those whose store cannot notify)."""
        clock = time.perf_counter()
        result = ServiceReconcile(service=service.name)
        created_at = self.ledger.service_created_at(service.name)
        if created_at is not None:  # None: deleted since the round began
            for io in _distinct_inputs(service.input):
                if only_polled and not self.is_polled(service, io):
                    continue
                try:
                    self._reconcile_input(service, io, created_at, now, result)
                except StorageError as error:  # the next round lists it again
                    log.warning("reconciling %s input %s failed: %s", service.name, io.path, error)
                    result.errors.append(f"{io.path}: {error}")
        result.seconds = time.perf_counter() - clock
        return result

    def _reconcile_input(
        self, service: Service, io: StorageIO, created_at: datetime, now: datetime, result: ServiceReconcile
    ) -> None:
        name = service.name
        provider = self.storage.provider(io.storage_provider, service)
        # No notification will come for a polled input: waiting for it to settle would only delay it.
        settles = not self.is_polled(service, io)
        prefix = f"{io.folder}/" if io.folder else ""
        # One query per input, never one per object: 100,000 lookups would cost more than the listing.
        known = self.ledger.known_versions(name, io.storage_provider, io.bucket, prefix)
        missing: list[ObjectEvent] = []
        for info in _objects(provider, io.bucket, prefix):
            if self._stopping.is_set():
                break
            result.listed += 1
            if (info.ref.key, info.etag) in known:
                result.known += 1
            elif self._is_older_than_service(info, created_at):
                result.older_than_service += 1
            elif settles and self._is_settling(info, now):
                result.settling += 1
            else:
                missing.append(_event_for(info, io.storage_provider))
                if len(missing) >= ACCEPT_BATCH:
                    self._accept_missing(name, missing, result)
        self._accept_missing(name, missing, result)

    def _accept_missing(self, name: str, missing: list[ObjectEvent], result: ServiceReconcile) -> None:
        """Objects without an event, in one ledger transaction; emptied."""
        if not missing:
            return
        created = self.intake.accept_many(missing, only_service=name)
        accepted = sum(1 for jobs in created if jobs)
        result.accepted += accepted
        result.known += len(missing) - accepted  # a webhook recorded them after the ledger was read
        missing.clear()

    @staticmethod
    def _is_older_than_service(info: ObjectInfo, created_at: datetime) -> bool:
        # A store that gives no time cannot show the object is old: it is taken as the service's.
        return info.last_modified is not None and info.last_modified < created_at - CREATED_AT_SLACK

    def _is_settling(self, info: ObjectInfo, now: datetime) -> bool:
        """Young enough that its webhook may still come, and stored since this platform started."""
        if info.last_modified is None or self.settle_s <= 0:
            return False
        # Stores truncate times to the second, so "stored before we started" needs a second to spare.
        stored_before_start = info.last_modified < self.started_at - timedelta(seconds=1)
        return not stored_before_start and info.last_modified > now - timedelta(seconds=self.settle_s)


def _merge(first: ServiceReconcile | None, second: ServiceReconcile) -> ServiceReconcile:
    """One service's results from the replay and from listing its polled inputs, added up."""
    if first is None:
        return second
    return ServiceReconcile(
        service=first.service,
        listed=first.listed + second.listed,
        accepted=first.accepted + second.accepted,
        known=first.known + second.known,
        older_than_service=first.older_than_service + second.older_than_service,
        settling=first.settling + second.settling,
        errors=first.errors + second.errors,
        seconds=first.seconds + second.seconds,
    )


def _objects(provider: StorageProvider, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
    """The objects under `prefix`, without folder markers (empty `folder/` keys)."""
    return (info for info in provider.list(bucket, prefix) if not info.ref.key.endswith("/"))


def _distinct_inputs(inputs: list[StorageIO]) -> list[StorageIO]:
    """Inputs that no other input of the same service contains, so each object is listed once."""
    distinct: list[StorageIO] = []
    for position, io in enumerate(inputs):
        covered = any(
            io.is_within(other) and (io.path != other.path or earlier < position)
            for earlier, other in enumerate(inputs)
            if earlier != position
        )
        if not covered:
            distinct.append(io)
    return distinct


def _event_for(info: ObjectInfo, provider: str) -> ObjectEvent:
    return ObjectEvent(
        ref=ObjectRef(provider=provider, bucket=info.ref.bucket, key=info.ref.key),
        etag=info.etag,
        size=info.size,
        event_time=info.last_modified or utcnow(),
        source="reconciler",
    )
