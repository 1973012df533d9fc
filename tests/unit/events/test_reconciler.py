"""The reconciler against an in-memory store and a real ledger on a temporary SQLite file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from conveyor.errors import StorageError, StorageUnavailable
from conveyor.events.intake import EventIntake
from conveyor.events.reconciler import Reconciler
from conveyor.events.routing import InputIndex
from conveyor.ledger.store import Ledger
from conveyor.ledger.tables import EventRow, ServiceRow
from conveyor.model.event import ObjectEvent, ObjectInfo, ObjectRef, utcnow
from conveyor.model.service import Service
from conveyor.storage.base import StorageProvider
from conveyor.storage.registry import ProviderRegistry
from tests.support.ledger_rows import ledger_session


class MemoryStore(StorageProvider):
    """Objects in a dict; `failing` makes listing fail the way an unreachable store does."""

    kind = "minio"

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], ObjectInfo] = {}
        self.failing: set[str] = set()
        self.listings = 0

    def add(self, path: str, etag: str, age_s: float = 0.0) -> None:
        ref = ObjectRef.parse(path)
        moment = utcnow() - timedelta(seconds=age_s)
        self.objects[(ref.bucket, ref.key)] = ObjectInfo(ref=ref, etag=etag, size=1, last_modified=moment)

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        self.listings += 1
        if bucket in self.failing:
            raise StorageUnavailable(f"{bucket}/{prefix}: the store cannot be reached")
        for (name, key), info in sorted(self.objects.items()):
            if name == bucket and key.startswith(prefix):
                yield info

    def download(self, ref: ObjectRef, dest: Path) -> Path:
        raise NotImplementedError

    def upload(self, path: Path, ref: ObjectRef, metadata: dict[str, str] | None = None) -> ObjectInfo:
        raise NotImplementedError

    def stat(self, ref: ObjectRef) -> ObjectInfo | None:
        return self.objects.get((ref.bucket, ref.key))

    def delete(self, ref: ObjectRef) -> None:
        self.objects.pop((ref.bucket, ref.key), None)

    def ensure_bucket(self, bucket: str) -> bool:
        return False

    def list_buckets(self) -> list[str]:
        return sorted({bucket for bucket, _ in self.objects})

    def delete_bucket(self, bucket: str) -> None:
        raise NotImplementedError

    def put_bytes(self, ref: ObjectRef, data: bytes) -> ObjectInfo:
        raise NotImplementedError


def service(name: str, *paths: str, **fields: Any) -> Service:
    inputs = [p if isinstance(p, dict) else {"path": p} for p in paths]
    return Service.model_validate({"name": name, "image": "img", "script": "true", "input": inputs, **fields})


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def reconciler(ledger: Ledger, store: MemoryStore) -> Reconciler:
    intake = EventIntake(ledger, InputIndex(), on_new_jobs=lambda: None)
    return Reconciler(ledger, ProviderRegistry(store), intake, interval_s=3600, settle_s=0)


def webhook_event(path: str, etag: str) -> ObjectEvent:
    return ObjectEvent(ref=ObjectRef.parse(path), etag=etag, source="seaweedfs")


def backdate(ledger: Ledger, name: str, seconds: float) -> None:
    """As if the service had been applied `seconds` ago."""
    with ledger_session(ledger) as session, session.begin():
        row = session.get(ServiceRow, name)
        assert row is not None
        row.created_at -= timedelta(seconds=seconds)


def events(ledger: Ledger) -> list[tuple[str, str, str, str]]:
    with ledger_session(ledger) as session:
        rows = session.execute(select(EventRow.service, EventRow.key, EventRow.etag, EventRow.source))
        return sorted(tuple(row) for row in rows)


def test_objects_without_an_event_are_accepted_and_known_ones_skipped(
    ledger: Ledger, store: MemoryStore, reconciler: Reconciler
) -> None:
    ledger.put_service(service("copy", "data/in"))
    store.add("data/in/seen.txt", "e1")
    store.add("data/in/lost.txt", "e2")
    store.add("data/in/deep/lost.txt", "e3")
    store.add("data/in/", "")  # the folder marker apply creates
    store.add("data/out/not-an-input.txt", "e4")
    store.add("data/inbox/not-under-the-folder.txt", "e5")
    ledger.record_event(webhook_event("data/in/seen.txt", "e1"), ["copy"])

    report = reconciler.reconcile_once()

    assert (report.listed, report.accepted) == (3, 2)
    assert report.services[0].known == 1
    assert events(ledger) == [
        ("copy", "in/deep/lost.txt", "e3", "reconciler"),
        ("copy", "in/lost.txt", "e2", "reconciler"),
        ("copy", "in/seen.txt", "e1", "seaweedfs"),
    ]
    assert reconciler.reconcile_once().accepted == 0, "a second round finds nothing new"


def test_a_new_version_of_a_known_key_is_new(ledger: Ledger, store: MemoryStore, reconciler: Reconciler) -> None:
    ledger.put_service(service("copy", "data/in"))
    ledger.record_event(webhook_event("data/in/a.txt", "v1"), ["copy"])
    store.add("data/in/a.txt", "v2")

    report = reconciler.reconcile_once()

    assert report.accepted == 1
    assert [(key, etag) for _, key, etag, _ in events(ledger)] == [("in/a.txt", "v1"), ("in/a.txt", "v2")]


def test_files_older_than_the_service_are_not_its_work(
    ledger: Ledger, store: MemoryStore, reconciler: Reconciler
) -> None:
    store.add("data/in/before.txt", "old", age_s=3600)
    store.add("data/in/just-before.txt", "slack", age_s=1)  # within the store's one-second clock
    ledger.put_service(service("copy", "data/in"))
    store.add("data/in/after.txt", "new")

    report = reconciler.reconcile_once()

    assert (report.listed, report.older_than_service, report.accepted) == (3, 1, 2)
    assert {key for _, key, _, _ in events(ledger)} == {"in/after.txt", "in/just-before.txt"}


def test_young_files_wait_for_their_webhook_unless_stored_before_the_start(ledger: Ledger, store: MemoryStore) -> None:
    intake = EventIntake(ledger, InputIndex(), on_new_jobs=lambda: None)
    reconciler = Reconciler(ledger, ProviderRegistry(store), intake, interval_s=0, settle_s=60)
    ledger.put_service(service("copy", "data/in"))
    backdate(ledger, "copy", seconds=3600)
    reconciler.started_at = utcnow() - timedelta(seconds=30)
    store.add("data/in/before-start.txt", "a", age_s=40)  # its webhook was lost with the old store
    store.add("data/in/fresh.txt", "b", age_s=0)  # its webhook may still be on its way

    report = reconciler.reconcile_once()

    assert (report.accepted, report.settling) == (1, 1)
    assert [key for _, key, _, _ in events(ledger)] == ["in/before-start.txt"]


def test_each_service_and_each_input_is_reconciled_once(
    ledger: Ledger, store: MemoryStore, reconciler: Reconciler
) -> None:
    ledger.put_service(service("one", "data/in", "data/in/sub", "data/in", "more/x"))
    ledger.put_service(service("other", "data/in/sub"))
    store.add("data/in/sub/a", "1")
    store.add("more/x/b", "2")
    store.add("data/in/c", "3")

    report = reconciler.reconcile_once()

    by_service = {entry.service: entry for entry in report.services}
    assert (by_service["one"].listed, by_service["one"].accepted) == (3, 3)
    assert (by_service["other"].listed, by_service["other"].accepted) == (1, 1)
    assert store.listings == 3, "one's data/in/sub and its repeated data/in lie inside data/in"
    with ledger_session(ledger) as session:
        assert set(session.scalars(select(EventRow.duplicates))) == {0}


class TwoStores(ProviderRegistry):
    """The platform's store, and `s3.mine` in memory too."""

    def __init__(self, default: MemoryStore, mine: MemoryStore) -> None:
        super().__init__(default)
        self.mine = mine

    def provider(self, name: str, service: Service | None = None) -> StorageProvider:
        return self.mine if name == "s3.mine" else super().provider(name, service)


def test_inputs_on_other_providers_are_listed_through_their_own_store(ledger: Ledger, store: MemoryStore) -> None:
    remote = {"storage_provider": "s3.mine", "path": "remote-bucket/in"}
    providers = {"s3": {"mine": {"access_key": "a", "secret_key": "b"}}}
    ledger.put_service(service("mixed", "data/in", remote, storage_providers=providers))
    mine = MemoryStore()
    store.add("data/in/a", "1")
    mine.add("remote-bucket/in/b", "2")
    intake = EventIntake(ledger, InputIndex(), on_new_jobs=lambda: None)
    reconciler = Reconciler(ledger, TwoStores(store, mine), intake, interval_s=3600, settle_s=0)

    entry = reconciler.reconcile_once().services[0]

    assert (entry.listed, entry.accepted) == (2, 2)
    assert (store.listings, mine.listings) == (1, 1)
    keys = {(j.trigger.ref.provider, j.trigger.ref.key) for _, j in ledger.list_jobs("mixed")}
    assert keys == {("minio.default", "in/a"), ("s3.mine", "in/b")}


def test_a_store_that_cannot_be_listed_is_reported_and_the_others_still_run(
    ledger: Ledger, store: MemoryStore, reconciler: Reconciler
) -> None:
    ledger.put_service(service("broken", "down-bucket/in"))
    ledger.put_service(service("fine", "up-bucket/in"))
    store.failing.add("down-bucket")
    store.add("up-bucket/in/a", "1")

    report = reconciler.reconcile_once()

    by_service = {entry.service: entry for entry in report.services}
    assert by_service["broken"].errors == ["down-bucket/in: down-bucket/in/: the store cannot be reached"]
    assert by_service["fine"].accepted == 1
    assert report.errors == 1
    store.failing.clear()
    store.add("down-bucket/in/b", "2")
    assert reconciler.reconcile_once().accepted == 1, "the next round lists it again"


class ExplodingStore(MemoryStore):
    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        self.listings += 1
        raise StorageError("boom")


def test_the_thread_survives_failing_rounds_and_stops_promptly(ledger: Ledger) -> None:
    store = ExplodingStore()
    ledger.put_service(service("copy", "data/in"))
    intake = EventIntake(ledger, InputIndex(), on_new_jobs=lambda: None)
    reconciler = Reconciler(ledger, ProviderRegistry(store), intake, interval_s=0.05, settle_s=0)

    reconciler.start()
    deadline = time.monotonic() + 10
    while store.listings < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    began = time.monotonic()
    reconciler.stop()

    assert store.listings >= 3, "rounds go on after a failing one"
    assert time.monotonic() - began < 1


def test_a_long_interval_runs_the_start_up_round_and_still_stops_at_once(ledger: Ledger, store: MemoryStore) -> None:
    ledger.put_service(service("copy", "data/in"))
    backdate(ledger, "copy", seconds=3600)
    store.add("data/in/a", "1", age_s=10)
    intake = EventIntake(ledger, InputIndex(), on_new_jobs=lambda: None)
    reconciler = Reconciler(ledger, ProviderRegistry(store), intake, interval_s=3600)

    reconciler.start()
    deadline = time.monotonic() + 10
    while not events(ledger) and time.monotonic() < deadline:
        time.sleep(0.01)
    began = time.monotonic()
    reconciler.stop()

    assert [key for _, key, _, _ in events(ledger)] == ["in/a"]
    assert time.monotonic() - began < 1


def test_an_interval_of_zero_runs_no_round_on_its_own(ledger: Ledger, store: MemoryStore) -> None:
    ledger.put_service(service("copy", "data/in"))
    store.add("data/in/a", "1")
    intake = EventIntake(ledger, InputIndex(), on_new_jobs=lambda: None)
    reconciler = Reconciler(ledger, ProviderRegistry(store), intake, interval_s=0)

    reconciler.start()
    time.sleep(0.1)
    reconciler.stop()

    assert store.listings == 0


def test_the_report_carries_totals_in_json(ledger: Ledger, store: MemoryStore, reconciler: Reconciler) -> None:
    ledger.put_service(service("copy", "data/in"))
    store.add("data/in/a", "1")

    dumped = reconciler.reconcile_once().model_dump(mode="json")

    assert (dumped["listed"], dumped["accepted"], dumped["errors"]) == (1, 1, 0)
    assert isinstance(datetime.fromisoformat(dumped["started_at"]), datetime)
    assert dumped["services"][0]["service"] == "copy"
