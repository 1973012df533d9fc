"""Which event source each input uses, and the sources themselves, built once per platform.

The choice comes from the provider's settings in the FDL (`events:` is Conveyor's key there):

    storage_providers:
      s3:
        ceph:  {endpoint: "http://rgw:7480", access_key: AK, secret_key: SK, events: sns}
        aws:   {access_key: AK, secret_key: SK, region: eu-west-1}        # AWS S3: sqs by default
      minio:
        lab:   {endpoint: "https://minio.lab", access_key: AK, secret_key: SK, events: minio}

`minio.default` (the platform's own store) always uses the embedded SeaweedFS webhook. Without
`events:`, AWS S3 (no endpoint) uses an SQS queue and any other endpoint is polled.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Collection

from conveyor.errors import ConveyorError, StorageError
from conveyor.events.base import EventSource, SourceContext
from conveyor.model.kinds import DEFAULT_PROVIDER
from conveyor.model.service import Service, StorageIO

log = logging.getLogger(__name__)

SOURCES = {
    "seaweedfs": "conveyor.events.sources:EmbeddedStoreSource",
    "poll": "conveyor.events.sources:PollingSource",
    "sns": "conveyor.events.sns:SnsSource",
    "sqs": "conveyor.events.sqs:SqsSource",
    "minio": "conveyor.events.minio:MinioSource",
}
"""`events:` value → "module:Class". A new source is one module and one line here."""


def source_kind(service: Service, io: StorageIO) -> str:
    """The `events:` value that applies to one input (see the module docstring)."""
    if io.storage_provider == DEFAULT_PROVIDER:
        return "seaweedfs"
    settings = service.provider_settings(io.storage_provider) or {}
    explicit = settings.get("events")
    if explicit:
        return str(explicit)
    if io.kind == "s3" and not settings.get("endpoint"):
        return "sqs"
    return "poll"


class EventSources:
    """One instance per source kind, built when first needed."""

    def __init__(self, context: SourceContext) -> None:
        self.context = context
        self._built: dict[str, EventSource] = {}
        self._lock = threading.Lock()
        self._started = False

    def for_input(self, service: Service, io: StorageIO) -> EventSource:
        kind = source_kind(service, io)
        with self._lock:
            source = self._built.get(kind)
            if source is None:
                if kind not in SOURCES:
                    raise ConveyorError(f"{kind!r} is not an event source")
                module, _, name = SOURCES[kind].partition(":")
                source = getattr(importlib.import_module(module), name)(self.context)
                self._built[kind] = source
                if self._started:
                    source.start()
            return source

    def wire(self, service: Service, keep: Collection[tuple[str, str]] = ()) -> None:
        """Set up every input's notifications; on a refusal, undo what was set up and raise.

        Inputs in `keep` (provider, path) were wired by a definition already deployed: a refusal
        leaves them as they were.
        """
        done: list[StorageIO] = []
        try:
            for io in service.input:
                self.for_input(service, io).wire(service, io)
                done.append(io)
        except StorageError:
            for io in done:
                if (io.storage_provider, io.path) not in keep:
                    self._unwire_quietly(service, io)
            raise

    def unwire(self, service: Service) -> list[str]:
        """Take down every input's notifications; returns what could not be taken down."""
        return [warning for io in service.input if (warning := self._unwire_quietly(service, io))]

    def unwire_dropped_inputs(self, old: Service, new: Service) -> list[str]:
        """After an update: stop the notifications of inputs the new definition no longer has."""
        kept = {(io.storage_provider, io.path) for io in new.input}
        dropped = [io for io in old.input if (io.storage_provider, io.path) not in kept]
        return [warning for io in dropped if (warning := self._unwire_quietly(old, io))]

    def _unwire_quietly(self, service: Service, io: StorageIO) -> str:
        try:
            self.for_input(service, io).unwire(service, io)
        except (StorageError, ConveyorError) as error:
            log.warning("removing the notifications of %s input %s failed: %s", service.name, io.path, error)
            return f"{service.name}: the notifications of {io.storage_provider}:{io.path} were not removed: {error}"
        return ""

    def is_polled(self, service: Service, io: StorageIO) -> bool:
        module, _, name = SOURCES.get(source_kind(service, io), SOURCES["poll"]).partition(":")
        return bool(getattr(importlib.import_module(module), name).polled)

    def describe(self, service: Service, io: StorageIO) -> str:
        return self.for_input(service, io).describe(service, io)

    def start(self) -> None:
        with self._lock:
            self._started = True
            for source in self._built.values():
                source.start()

    def stop(self) -> None:
        with self._lock:
            self._started = False
            for source in self._built.values():
                source.stop()


class EmbeddedStoreSource(EventSource):
    """The embedded SeaweedFS posts a filer event for every change under /buckets: nothing to set up."""

    kind = "seaweedfs"

    def describe(self, service: Service, io: StorageIO) -> str:
        return "webhook from the embedded store"


class PollingSource(EventSource):
    """A store without notifications: the reconciler lists the input every round."""

    kind = "poll"
    polled = True

    def describe(self, service: Service, io: StorageIO) -> str:
        return "polled: listed every reconciliation round (dispatch.reconcile_interval_s)"
