"""The embedded platform: ledger, object store, API, dispatcher and local backend in one process.

`conveyor up`, `conveyor demo` and the tests all build one `Platform` from `Settings`, start it,
and stop it. The start order matters: the API listens before SeaweedFS starts, so the first
event the store sends finds someone to receive it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import datetime
from typing import Any, Self

from conveyor.backends.base import Backend
from conveyor.backends.local.backend import LocalBackend
from conveyor.dispatch.dispatcher import Dispatcher
from conveyor.dispatch.retry import RetryPolicy
from conveyor.errors import ConveyorError, FDLError, PlatformError, Problem, StorageError
from conveyor.events.base import SourceContext
from conveyor.events.intake import EventIntake
from conveyor.events.reconciler import Reconciler
from conveyor.events.routing import InputIndex
from conveyor.events.seaweedfs_log import replay_changes
from conveyor.events.sources import EventSources
from conveyor.layout import DataLayout
from conveyor.ledger.store import Ledger, new_job_id
from conveyor.model.event import ObjectEvent, utcnow
from conveyor.model.job import JobOutcome
from conveyor.model.service import Service, duplicate_names
from conveyor.platform.api_server import ApiServer
from conveyor.platform.credentials import Credentials
from conveyor.platform.deploy import ApplyReport, deploy_problems, prepare_storage, remove_buckets
from conveyor.platform.loops import cycle_problems
from conveyor.runners.choose import choose_runner
from conveyor.settings import Settings
from conveyor.storage.base import StorageProvider
from conveyor.storage.embedded import EmbeddedSeaweed, WebhookTarget, find_weed
from conveyor.storage.registry import ProviderRegistry
from conveyor.storage.s3 import S3Credentials
from conveyor.storage.seaweedfs import FilerReadS3Provider

log = logging.getLogger(__name__)

SEAWEEDFS_WEBHOOK_PATH = "/conveyor/v1/events/seaweedfs"
S3_EVENTS_PATH = "/conveyor/v1/events/s3"

# Producers of work stop first, so nothing is handed to a component that is already gone.
_SHUTDOWN_ORDER = (
    ("sources", "stop"),
    ("reconciler", "stop"),
    ("dispatcher", "stop"),
    ("backend", "close"),
    ("slurm", "close"),
    ("store", "stop"),
    ("api", "stop"),
    ("storage", "close"),
    ("ledger", "close"),
)


def _input_paths(service: Service | None) -> set[tuple[str, str]]:
    return {(io.storage_provider, io.path) for io in service.input} if service else set()


def _without_inputs(service: Service) -> Service:
    return service.model_copy(update={"input": []})


class Platform:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.layout = DataLayout(settings.data_dir)
        self.warnings: list[str] = []
        self.adopted = 0
        self.requeued = 0
        self._lock_file: Any = None
        self._started = False
        self.ready = threading.Event()
        """Set once every component runs; the API answers 503 before."""

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        from conveyor.api.app import create_app  # the API depends on the platform, not the reverse

        self.layout.create()
        self._take_data_dir_lock()
        self.layout.platform_file.unlink(missing_ok=True)  # left by a platform that was killed
        try:
            self.credentials = Credentials.load_or_create(
                self.layout.credentials,
                admin_user=self.settings.admin_user,
                admin_password=self.settings.admin_password,
            )
            self.ledger = Ledger(self.settings.resolved_ledger_url, lineage_limit=self.settings.dispatch.lineage_limit)
            self.api = ApiServer(create_app(self), self.settings.api.host, self.settings.api.port)
            self.store = EmbeddedSeaweed(
                self.layout.seaweedfs,
                s3_port=self.settings.storage.s3_port,
                access_key=self.credentials.s3_access_key,
                secret_key=self.credentials.s3_secret_key,
                webhook=WebhookTarget(self.api.local_url + SEAWEEDFS_WEBHOOK_PATH, self.credentials.webhook_token),
                start_timeout_s=self.settings.storage.start_timeout_s,
            )
            self.index = InputIndex()
            self.index.rebuild(self.ledger.list_services())
            runner, warning = choose_runner(self.settings.local, owner=str(self.layout.root))
            if warning:
                self.warnings.append(warning)
            self._started = True
            self.api.start()
            self.store.start()
            own_store = FilerReadS3Provider(
                self.s3_credentials, filer_url=self.store.filer_url, public_endpoint=self.s3_endpoint
            )
            self.storage = ProviderRegistry(own_store)
            self.backend = LocalBackend(self.settings.local, self.storage, runner)
            self.backends: dict[str, Backend] = {"local": self.backend}
            if self.settings.slurm.enabled or self.settings.backend == "slurm":
                self.backends["slurm"] = self.slurm = self._slurm_backend()
            retry = RetryPolicy(self.settings.dispatch.retry_base_s, self.settings.dispatch.retry_max_s)
            self.dispatcher = Dispatcher(
                self.ledger, self.backends, self.layout, retry, default_backend=self.settings.backend
            )
            self.intake = EventIntake(self.ledger, self.index, self.dispatcher.wake)
            self.sources = EventSources(SourceContext(self.intake, self.storage, self._receiver_url))
            # Wiring again is idempotent and tells pollers (SQS) which queues are theirs. Input by input,
            # errors logged: a store that is down must neither stop the start nor unwire other inputs.
            for deployed in self.ledger.list_services():
                full = self.ledger.fetch_service(deployed.name, with_secrets=True)
                for io in full.input if full is not None else []:
                    try:
                        self.sources.for_input(full, io).wire(full, io)
                    except ConveyorError as error:
                        log.warning("the notifications of %s input %s were not set up: %s", full.name, io.path, error)
            self.adopted, self.requeued = self.dispatcher.recover()
            for backend in self.backends.values():
                backend.recovered()
            self.dispatcher.start()
            self.reconciler = Reconciler(
                self.ledger,
                self.storage,
                self.intake,
                self.settings.dispatch.reconcile_interval_s,
                change_log=self._store_changes,
                is_polled=self.sources.is_polled,
            )
            self.reconciler.start()
            self.sources.start()
            self.started_at = utcnow()
            self._write_platform_file()
            self.ready.set()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything. Jobs still running are killed; the next start runs them again."""
        self.ready.clear()
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
        self._started = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _slurm_backend(self) -> Backend:
        from conveyor.backends.slurm.backend import SlurmBackend  # only platforms that use Slurm need it

        shared = self.settings.slurm.shared_dir or self.layout.root / "slurm"
        return SlurmBackend(self.settings.slurm, shared, S3Credentials.model_validate(self.minio_provider()))

    def backend_for(self, service: Service) -> Backend | None:
        return self.backends.get(self.dispatcher.backend_name(service))

    def _take_data_dir_lock(self) -> None:
        lock = (self.layout.root / ".lock").open("w")
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
        self.layout.platform_file.write_text(json.dumps(info, indent=2))

    # ---- what the platform offers ---------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.settings.api.public_url or self.api.local_url

    @property
    def s3_endpoint(self) -> str:
        return self.settings.storage.s3_public_endpoint or self.store.s3_endpoint

    @property
    def s3_credentials(self) -> S3Credentials:
        return S3Credentials(
            endpoint=self.store.s3_endpoint,
            access_key=self.credentials.s3_access_key,
            secret_key=self.credentials.s3_secret_key,
            region=self.settings.storage.region,
            verify=False,
        )

    def _receiver_url(self, provider: str) -> str:
        """Where a store posts notifications for one of its providers (the token is in the URL,
        since not every store can send a header)."""
        return f"{self.api_url}{S3_EVENTS_PATH}/{provider}?token={self.credentials.webhook_token}"

    def _store_changes(self, since: datetime, until: datetime) -> Iterator[ObjectEvent]:
        """The embedded store's change log, for the reconciler's rounds between full listings."""
        return replay_changes(find_weed(), self.store.filer_address, "/buckets/", since, until)

    def minio_provider(self) -> dict[str, Any]:
        """The store as OSCAR's `/system/config` describes it: all five keys, clients need them."""
        return {
            "endpoint": self.s3_endpoint,
            "verify": False,
            "access_key": self.credentials.s3_access_key,
            "secret_key": self.credentials.s3_secret_key,
            "region": self.settings.storage.region,
        }

    def apply(self, services: list[Service]) -> ApplyReport:
        """Deploy services all together: nothing is deployed unless every one can be."""
        problems = [
            Problem(field=f"{service.name}.{p.field}", message=p.message)
            for service in services
            for p in deploy_problems(service)
        ]
        problems += [Problem(field=name, message="is defined more than once") for name in duplicate_names(services)]
        problems += [
            Problem(
                field=f"{service.name}.backend",
                message=f"backend {self.dispatcher.backend_name(service)!r} is not enabled on this platform: "
                "set `enabled = true` under [slurm] in conveyor.toml (or CONVEYOR_SLURM__ENABLED=true) and restart",
            )
            for service in services
            if self.backend_for(service) is None
        ]
        applying = {service.name for service in services}  # a new definition replaces the deployed one
        deployed = [service for service in self.ledger.list_services() if service.name not in applying]
        problems += cycle_problems([*services, *deployed], changed=applying)
        if problems:
            raise FDLError(problems)
        report = ApplyReport()
        buckets: list[tuple[StorageProvider, str]] = []
        for service in services:
            try:
                prepare_storage(service, self.storage, buckets)
            except StorageError as error:
                remove_buckets(buckets)
                raise FDLError([Problem(field=service.name, message=f"cannot prepare its buckets: {error}")]) from error
        previous = {name: self.ledger.fetch_service(name, with_secrets=True) for name in applying}
        self._wire_inputs(services, buckets, previous)
        for service in services:
            _, is_new = self.ledger.put_service(service)
            (report.created if is_new else report.updated).append(service.name)
            backend = self.backend_for(service)
            report.warnings += backend.warnings_for(service) if backend is not None else []
            if service.batch is not None and backend is not None and not backend.runs_batches:
                ignored = f"{service.name}: batch is ignored: the {backend.name} backend runs one input per job"
                report.warnings.append(ignored)
            if (old := previous.get(service.name)) is not None:
                report.warnings += self.sources.unwire_dropped_inputs(old, service)
        self._services_changed()
        return report

    def _wire_inputs(
        self,
        services: list[Service],
        buckets: list[tuple[StorageProvider, str]],
        previous: dict[str, Service | None],
    ) -> None:
        """Notifications for every input; on a refusal nothing new stays set up and nothing is
        deployed, while the inputs of the definitions already deployed keep theirs."""
        wired: list[Service] = []
        for service in services:
            try:
                self.sources.wire(service, keep=_input_paths(previous.get(service.name)))
            except StorageError as error:
                for done in wired:
                    self.sources.unwire_dropped_inputs(done, previous.get(done.name) or _without_inputs(done))
                remove_buckets(buckets)
                problem = Problem(field=service.name, message=f"cannot set up the notifications of its inputs: {error}")
                raise FDLError([problem]) from error
            wired.append(service)

    def delete_service(self, name: str) -> bool:
        """Remove the service and the notifications of its inputs; its buckets and data stay."""
        service = self.ledger.fetch_service(name, with_secrets=True)
        deleted = self.ledger.delete_service(name)
        if deleted:
            self._services_changed()
        if deleted and service is not None:
            for warning in self.sources.unwire(service):
                log.warning("%s", warning)
        return deleted

    def _services_changed(self) -> None:
        self.index.rebuild(self.ledger.list_services())
        self.dispatcher.services_changed()

    def accept_event(self, event: ObjectEvent, only_service: str | None = None) -> list[str]:
        return self.intake.accept(event, only_service)

    def invoke(self, service: str, body: bytes, *, sync: bool) -> tuple[str, Future[JobOutcome] | None]:
        """A job for an HTTP invocation; with `sync`, a future that resolves with its outcome."""
        job_id = new_job_id(service)
        request_path = self.layout.request_path(job_id)
        request_path.write_bytes(body)
        waiter = self.dispatcher.expect(job_id) if sync else None
        self.ledger.create_request_job(service, str(request_path), sync=sync, job_id=job_id)
        self.dispatcher.wake()
        return job_id, waiter

    def read_log(self, service: str, job_id: str) -> str | None:
        path = self.layout.log_path(service, job_id)
        if not path.exists():
            return None
        return path.read_text(errors="replace")

    def remove_logs(self, service: str, job_ids: list[str]) -> None:
        for job_id in job_ids:
            self.layout.log_path(service, job_id).unlink(missing_ok=True)
            self.layout.request_path(job_id).unlink(missing_ok=True)

    def status(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "s3_endpoint": self.s3_endpoint,
            "backend": self.backends[self.settings.backend].describe(),
            "backends": {name: backend.describe() for name, backend in self.backends.items()},
            "jobs_running": self.dispatcher.inflight,
            "warnings": self.warnings,
        }
