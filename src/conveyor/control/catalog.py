"""The service catalog: which services are deployed, and the one place that decides whether a
definition may be and what deploying it sets up.

    apply(services) ─▶ validation.problems ─▶ buckets, folders ─▶ input notifications ─▶ ledger ─▶ listeners
                       (every problem at once)  (what a later step fails to do is undone: all or nothing)

Services keep their buckets and data when they are deleted; only their notifications go. Whoever
depends on the set of services (the event routing, the dispatcher's cache) registers a listener
with `on_change` instead of being called from here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from conveyor.backends.registry import Backends
from conveyor.control import validation
from conveyor.control.credentials import StoreAccess
from conveyor.errors import (
    Conflict,
    ConveyorError,
    DefinitionError,
    DeployError,
    Problem,
    ServiceNotFound,
    StorageError,
    StorageUnreachable,
)
from conveyor.events.sources import EventSources
from conveyor.ledger.store import Ledger
from conveyor.model.job import JobState
from conveyor.model.kinds import DEFAULT_PROVIDER
from conveyor.model.service import Service
from conveyor.storage.base import StorageProvider
from conveyor.storage.registry import ProviderRegistry

log = logging.getLogger(__name__)

Listener = Callable[[list[Service]], None]
"""Called with every deployed service after each change."""


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class ServiceSummary(BaseModel):
    """A deployed service as `conveyor services` lists it."""

    service: dict[str, Any]
    jobs: dict[str, int]
    event_sources: dict[str, str]
    """`provider:path` of each input → how its events arrive."""


class ServiceCatalog:
    def __init__(
        self,
        ledger: Ledger,
        storage: ProviderRegistry,
        sources: EventSources,
        backends: Backends,
        store: StoreAccess,
    ) -> None:
        self._ledger = ledger
        self._storage = storage
        self._sources = sources
        self._backends = backends
        self._store = store
        self._listeners: list[Listener] = []

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # ---- reading ------------------------------------------------------------------------------

    def services(self) -> list[Service]:
        """Every service, secrets blanked."""
        return self._ledger.list_services()

    def fetch(self, name: str) -> Service | None:
        """The service, secrets blanked; None when there is none of that name."""
        return self._ledger.fetch_service(name)

    def require(self, name: str) -> Service:
        service = self.fetch(name)
        if service is None:
            raise ServiceNotFound(name)
        return service

    def fetch_with_secrets(self, name: str) -> Service | None:
        """For the platform's own use (credentials of the stores a job reads), never for answers."""
        return self._ledger.fetch_service(name, with_secrets=True)

    def describe(self, service: Service) -> dict[str, Any]:
        """The service as OSCAR returns it: secrets blanked, the platform's store described, keys hidden."""
        shown = service.public().model_dump(mode="json")
        shown["storage_providers"].setdefault("minio", {})["default"] = self._store.without_keys()
        return shown

    def summaries(self) -> list[ServiceSummary]:
        counts = self._ledger.count_jobs()
        return [
            ServiceSummary(
                service=self.describe(service),
                jobs={state.value: n for state, n in counts.get(service.name, {}).items()},
                event_sources={
                    f"{io.storage_provider}:{io.path}": self._sources.describe(service, io) for io in service.input
                },
            )
            for service in self.services()
        ]

    def running_jobs(self, name: str) -> int:
        return self._ledger.count_jobs(name).get(name, {}).get(JobState.RUNNING, 0)

    def services_using_bucket(self, bucket: str) -> list[str]:
        """Services with an input or output in `bucket` of the platform's own store."""
        return sorted(
            service.name
            for service in self.services()
            if any(io.bucket == bucket and io.storage_provider == DEFAULT_PROVIDER for io in service.paths)
        )

    # ---- changing -----------------------------------------------------------------------------

    def problems(self, services: list[Service]) -> list[Problem]:
        """Everything that stops `services` from being deployed together here, at once."""
        return validation.problems(services, deployed=self.services(), backend_enabled=self._backends.cannot_run)

    def apply(self, services: list[Service]) -> ApplyReport:
        """Deploy services all together: nothing is deployed unless every one can be.

        Raises DefinitionError with every problem found, DeployError when a store refused the
        buckets or notifications a service needs (whatever was set up for it is undone), or
        StorageUnreachable when a store did not answer at all.
        """
        found = self.problems(services)
        if found:
            raise DefinitionError(found)
        buckets: list[tuple[StorageProvider, str]] = []
        for service in services:
            try:
                _prepare_storage(service, self._storage, buckets)
            except StorageUnreachable:  # not a problem of the definitions: try again once the store is back
                _remove_buckets(buckets)
                raise
            except StorageError as error:
                _remove_buckets(buckets)
                raise DeployError(
                    [Problem(field=service.name, message=f"cannot prepare its buckets: {error}")]
                ) from error
        previous = {service.name: self.fetch_with_secrets(service.name) for service in services}
        self._wire_inputs(services, buckets, previous)
        report = ApplyReport()
        for service in services:
            _, is_new = self._ledger.put_service(service)
            (report.created if is_new else report.updated).append(service.name)
            report.warnings += self._warnings_for(service)
            if (old := previous.get(service.name)) is not None:
                report.warnings += self._sources.unwire_dropped_inputs(old, service)
        self._changed()
        return report

    def create(self, service: Service) -> ApplyReport:
        """OSCAR's POST: a new service only."""
        if self.fetch(service.name) is not None:
            raise Conflict("A service with the provided name already exists")
        return self.apply([service])

    def update(self, service: Service) -> ApplyReport:
        """OSCAR's PUT: a new definition of a deployed service, which keeps its token."""
        existing = self.require(service.name)
        return self.apply([service.model_copy(update={"token": existing.token})])

    def delete(self, name: str) -> None:
        """Remove the service and the notifications of its inputs; its buckets and data stay."""
        service = self.fetch_with_secrets(name)
        if not self._ledger.delete_service(name):
            raise ServiceNotFound(name)
        self._changed()
        if service is not None:
            for warning in self._sources.unwire(service):
                log.warning("%s", warning)

    def wire_deployed(self) -> None:
        """At start-up: the notifications of every deployed input again (idempotent; it also tells
        pollers such as SQS which queues are theirs). Input by input, errors logged: a store that is
        down must neither stop the start nor unwire the other inputs."""
        for service in self._ledger.list_services(with_secrets=True):
            for io in service.input:
                try:
                    self._sources.for_input(service, io).wire(service, io)
                except ConveyorError as error:
                    log.warning("the notifications of %s input %s were not set up: %s", service.name, io.path, error)

    def _warnings_for(self, service: Service) -> list[str]:
        backend = self._backends.for_service(service)
        if backend is None:
            return []
        warnings = service.fields_not_acted_on() + backend.warnings_for(service)
        if service.batch is not None and not backend.runs_batches:
            warnings.append(f"{service.name}: batch is ignored: the {backend.name} backend runs one input per job")
        return warnings

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
                self._sources.wire(service, keep=_input_paths(previous.get(service.name)))
            except StorageError as error:
                for done in wired:
                    self._sources.unwire_dropped_inputs(done, previous.get(done.name) or _without_inputs(done))
                _remove_buckets(buckets)
                problem = Problem(field=service.name, message=f"cannot set up the notifications of its inputs: {error}")
                raise DeployError([problem]) from error
            wired.append(service)

    def _changed(self) -> None:
        services = self.services()
        for listener in self._listeners:
            listener(services)


def _prepare_storage(service: Service, storage: ProviderRegistry, created: list[tuple[StorageProvider, str]]) -> None:
    """Buckets and folder markers for every input and output, as OSCAR creates them.

    Buckets made here are appended to `created`, so a failed deployment can remove them again.
    """
    for io in service.paths:
        provider = storage.provider(io.storage_provider, service)
        if provider.ensure_bucket(io.bucket):
            created.append((provider, io.bucket))
        provider.ensure_folder(io.bucket, io.folder)


def _remove_buckets(created: list[tuple[StorageProvider, str]]) -> None:
    """Undo _prepare_storage: the buckets it made hold nothing but folder markers."""
    for provider, bucket in reversed(created):
        with contextlib.suppress(StorageError):
            provider.delete_bucket(bucket)


def _input_paths(service: Service | None) -> set[tuple[str, str]]:
    return {(io.storage_provider, io.path) for io in service.input} if service else set()


def _without_inputs(service: Service) -> Service:
    return service.model_copy(update={"input": []})
