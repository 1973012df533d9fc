"""The embedded platform: builds every component from `Settings`, starts them in order, stops them in
the reverse order of their work. It decides nothing: the control plane (conveyor.control) does.

`conveyor up`, `conveyor demo` and the tests all build one `Platform`, start it, and stop it:

    credentials, ledger ─▶ API (answers 503) ─▶ SeaweedFS ─▶ storage, backends ─▶ dispatcher, intake,
    event sources ─▶ catalog (inputs wired again) ─▶ recovery of jobs left running ─▶ dispatcher,
    reconciler and sources started ─▶ the API gets its control plane

The API listens before SeaweedFS starts, so the first event the store sends finds someone to
answer it (503 until the end, which makes the store send it again).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Self

from conveyor.api.app import attach, create_app, detach
from conveyor.backends.base import BackendContext, Notice, log_notice
from conveyor.backends.registry import Backends
from conveyor.control.buckets import Buckets
from conveyor.control.catalog import ServiceCatalog
from conveyor.control.credentials import Credentials, StoreAccess
from conveyor.control.jobs import JobsDesk
from conveyor.control.plane import ControlPlane
from conveyor.control.status import StatusBoard, StoreFigures
from conveyor.dispatch.disk import DiskGate, LowDisk
from conveyor.dispatch.dispatcher import Dispatcher
from conveyor.dispatch.outages import Outage, Outages
from conveyor.dispatch.retry import RetryPolicy
from conveyor.errors import PlatformError, no_space_left
from conveyor.events.base import SourceContext
from conveyor.events.intake import EventIntake
from conveyor.events.reconciler import Reconciler
from conveyor.events.routing import InputIndex
from conveyor.events.seaweedfs_log import replay_changes
from conveyor.events.sources import EventSources
from conveyor.files import write_atomically
from conveyor.layout import DataLayout
from conveyor.ledger.store import Ledger
from conveyor.model.event import ObjectEvent, utcnow
from conveyor.model.kinds import DEFAULT_PROVIDER
from conveyor.platform.api_server import ApiServer
from conveyor.platform.watchdog import StoreWatchdog
from conveyor.settings import Settings
from conveyor.storage.embedded import EmbeddedSeaweed, WebhookTarget, find_weed
from conveyor.storage.registry import ProviderRegistry
from conveyor.storage.s3 import S3Credentials
from conveyor.storage.seaweedfs import FilerReadS3Provider
from conveyor.supervisor.remote import RemoteStaging

log = logging.getLogger(__name__)

SEAWEEDFS_WEBHOOK_PATH = "/conveyor/v1/events/seaweedfs"
S3_EVENTS_PATH = "/conveyor/v1/events/s3"

# Producers of work stop first, so nothing is handed to a component that is already gone; the
# watchdog before them all, so that it starts no store that is being stopped.
_SHUTDOWN_ORDER = (
    ("watchdog", "stop"),
    ("sources", "stop"),
    ("reconciler", "stop"),
    ("dispatcher", "stop"),
    ("outages", "stop"),
    ("disk", "stop"),
    ("backends", "close"),
    ("store", "stop"),
    ("api", "stop"),
    ("storage", "close"),
    ("ledger", "close"),
)
_BUILT_ON_START = ("control", "catalog", "jobs", "intake", "index", "staging")
"""Parts with nothing to stop, dropped so that a stopped platform offers nothing."""


class Platform:
    def __init__(self, settings: Settings, *, on_notice: Notice | None = None) -> None:
        self.settings = settings
        self._on_notice = on_notice or log_notice
        self.layout = DataLayout(settings.data_dir)
        self.warnings: list[str] = []
        self.adopted = 0
        self.requeued = 0
        self._lock_file: Any = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.layout.create()
        self._take_data_dir_lock()
        self.layout.platform_file.unlink(missing_ok=True)  # left by a platform that was killed
        try:
            self._start_components()
        except BaseException as error:
            self.stop()
            if isinstance(error, Exception) and (explained := self._full_disk_explains(error)):
                raise explained from error
            raise

    def _start_components(self) -> None:
        settings = self.settings
        self.credentials = Credentials.load_or_create(
            self.layout.credentials, admin_user=settings.admin_user, admin_password=settings.admin_password
        )
        self.ledger = Ledger(settings.resolved_ledger_url, lineage_limit=settings.dispatch.lineage_limit)
        self.api = ApiServer(create_app(settings.api), settings.api.host, settings.api.port)
        self.store = EmbeddedSeaweed(
            self.layout.seaweedfs,
            s3_port=settings.storage.s3_port,
            access_key=self.credentials.s3_access_key,
            secret_key=self.credentials.s3_secret_key,
            webhook=WebhookTarget(self.api.local_url + SEAWEEDFS_WEBHOOK_PATH, self.credentials.webhook_token),
            start_timeout_s=settings.storage.start_timeout_s,
        )
        self.index = InputIndex()
        self.index.rebuild(self.ledger.list_services())
        self.api.start()
        self.store.start()
        own_store = FilerReadS3Provider(
            self.s3_credentials, filer_url=self.store.filer_url, public_endpoint=self.s3_endpoint
        )
        self.storage = ProviderRegistry(own_store)
        self.staging = RemoteStaging(self.storage, self.credentials.webhook_token)
        context = BackendContext(
            settings,
            self.layout,
            self.storage,
            S3Credentials(**self.store_access.model_dump()),
            self._on_notice,
            staging=self.staging,
            api_url=self.api_url,
        )
        self.backends = Backends.build(settings.enabled_backends, settings.backend, context)
        self.warnings += self.backends.notices()
        retry = RetryPolicy(settings.dispatch.retry_base_s, settings.dispatch.retry_max_s)
        self.outages = Outages(self.storage)
        self.disk = DiskGate(self.layout.root, settings.dispatch.min_free_mb)
        self.dispatcher = Dispatcher(self.ledger, self.backends, self.layout, retry, self.outages, self.disk)
        self.intake = EventIntake(self.ledger, self.index, self.dispatcher.wake)
        self.sources = EventSources(SourceContext(self.intake, self.storage, self._receiver_url))
        self.catalog = ServiceCatalog(self.ledger, self.storage, self.sources, self.backends, self.store_access)
        self.catalog.on_change(self.index.rebuild)
        self.catalog.on_change(lambda _services: self.dispatcher.services_changed())
        self.catalog.wire_deployed()
        self.adopted, self.requeued = self.dispatcher.recover()
        for backend in self.backends:
            backend.recovered()
        self.dispatcher.start()
        self.reconciler = Reconciler(
            self.ledger,
            self.storage,
            self.intake,
            settings.dispatch.reconcile_interval_s,
            change_log=self._store_changes,
            is_polled=self.sources.is_polled,
        )
        self.reconciler.start()
        self.sources.start()
        self._watch_the_stores()
        self._watch_the_disk()
        self.started_at = utcnow()
        self.jobs = JobsDesk(self.ledger, self.dispatcher, self.layout, self.intake, self.storage, self.catalog)
        self.control = ControlPlane(
            catalog=self.catalog,
            jobs=self.jobs,
            buckets=Buckets(own_store, self.catalog),
            status=self._status_board(),
            credentials=self.credentials,
            intake=self.intake,
            reconciler=self.reconciler,
            staging=self.staging,
        )
        self._write_platform_file()
        attach(self.api.app, self.control)

    def stop(self) -> None:
        """Stop everything. Jobs still running are killed; the next start runs them again."""
        if "api" in self.__dict__:
            detach(self.api.app)
        for name in _BUILT_ON_START:
            self.__dict__.pop(name, None)
        for name, method in _SHUTDOWN_ORDER:
            component = self.__dict__.pop(name, None)
            if component is None:
                continue
            try:
                getattr(component, method)()
            except Exception:  # keep stopping the rest
                log.exception("stopping the %s failed", name)
        self.layout.platform_file.unlink(missing_ok=True)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _full_disk_explains(self, error: Exception) -> PlatformError | None:
        """A start that failed on a full disk says so, not what the disk made fail deep down (SQLite's
        `disk I/O error`, a store that never became ready)."""
        low = DiskGate(self.layout.root, self.settings.dispatch.min_free_mb).check()
        if low is None and not no_space_left(error):
            return None
        where = low.state if low is not None else f"the disk of the data directory {self.layout.root} is full"
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        return PlatformError(f"Conveyor cannot start: {where}; free some space, then start it again ({cause})")

    def _take_data_dir_lock(self) -> None:
        lock = self.layout.lock_file.open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise PlatformError(
                f"another Conveyor is running on {self.layout.root}; stop it first, or use another --data-dir"
            ) from None
        self._lock_file = lock

    def _write_platform_file(self) -> None:
        info = {
            "api_url": self.api_url,
            "s3_endpoint": self.s3_endpoint,
            "pid": os.getpid(),
            "started_at": utcnow().isoformat(),
        }
        write_atomically(self.layout.platform_file, json.dumps(info, indent=2))

    def _watch_the_stores(self) -> None:
        """The embedded store is restarted when it exits; while any store is down, its jobs wait."""
        self.outages.on_down(self._other_store_down)
        self.outages.on_up(self._store_back)
        self.outages.start()
        self.watchdog = StoreWatchdog(
            self.store, down=self._own_store_down, up=self._own_store_up, gave_up=self._own_store_given_up
        )
        self.watchdog.start()

    def _own_store_down(self, reason: str) -> None:
        self.outages.declare(DEFAULT_PROVIDER, reason)
        self._on_notice("warning", f"{reason}; jobs wait until it is back")

    def _own_store_up(self, reason: str) -> None:
        self._on_notice("note", f"{reason}; jobs resume")
        self.outages.clear(DEFAULT_PROVIDER)

    def _own_store_given_up(self, reason: str) -> None:
        self.outages.declare(DEFAULT_PROVIDER, reason)
        self._on_notice("error", reason)

    def _other_store_down(self, outage: Outage) -> None:
        if outage.provider != DEFAULT_PROVIDER:  # the watchdog speaks for the platform's own store
            self._on_notice("warning", f"{outage.provider} does not answer; the jobs that use it wait: {outage.reason}")

    def _store_back(self, outage: Outage) -> None:
        """Jobs held for the store start again; uploads whose notification the outage lost are looked for."""
        if outage.provider != DEFAULT_PROVIDER:
            self._on_notice("note", f"{outage.provider} answers again after {outage.seconds:.0f} s; its jobs resume")
        self.dispatcher.wake()
        self.reconciler.reconcile_soon()

    def _watch_the_disk(self) -> None:
        """While the data directory's disk is low, jobs wait; when it has room, they resume."""
        self.disk.on_low(self._disk_low)
        self.disk.on_back(self._disk_back)
        self.disk.start()

    def _disk_low(self, disk: LowDisk) -> None:
        self._on_notice("warning", f"{disk.state}: jobs wait until there is room")

    def _disk_back(self, disk: LowDisk) -> None:
        """Held jobs start again; uploads whose event the full ledger could not record are looked for."""
        after = f"after {disk.seconds:.0f} s ({disk.free} free)"
        self._on_notice("note", f"the data directory has room again {after}; jobs resume")
        self.dispatcher.wake()
        self.reconciler.reconcile_soon()

    def _status_board(self) -> StatusBoard:
        return StatusBoard(
            backends=self.backends,
            ledger=self.ledger,
            store=self.store_access,
            store_figures=self._store_figures,
            api_url=self.api_url,
            started_at=self.started_at,
            running_jobs=lambda: self.dispatcher.inflight,
            warnings=self.warnings,
            store_problem=lambda: self.watchdog.problem,
            outages=self.outages,
            disk=self.disk,
        )

    # ---- how the parts reach each other ---------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.settings.api.public_url or self.api.local_url

    @property
    def s3_endpoint(self) -> str:
        return self.settings.storage.s3_public_endpoint or self.store.s3_endpoint

    @property
    def s3_credentials(self) -> S3Credentials:
        """The embedded store as this process reaches it."""
        return S3Credentials(
            endpoint=self.store.s3_endpoint,
            access_key=self.credentials.s3_access_key,
            secret_key=self.credentials.s3_secret_key,
            region=self.settings.storage.region,
            verify=False,
        )

    @property
    def store_access(self) -> StoreAccess:
        """The embedded store as clients reach it."""
        return StoreAccess(
            endpoint=self.s3_endpoint,
            access_key=self.credentials.s3_access_key,
            secret_key=self.credentials.s3_secret_key,
            region=self.settings.storage.region,
        )

    def _receiver_url(self, provider: str) -> str:
        """Where a store posts notifications for one of its providers (the token is in the URL,
        since not every store can send a header)."""
        return f"{self.api_url}{S3_EVENTS_PATH}/{provider}?token={self.credentials.webhook_token}"

    def _store_changes(self, since: datetime, until: datetime) -> Iterator[ObjectEvent]:
        """The embedded store's change log, for the reconciler's rounds between full listings."""
        return replay_changes(find_weed(), self.store.filer_address, "/buckets/", since, until)

    def _store_figures(self) -> StoreFigures:
        return StoreFigures(buckets=len(self.storage.default.list_buckets()), objects=self.store.object_count())
