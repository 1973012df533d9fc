"""What deploying a service on this platform involves beyond storing its definition."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from conveyor.errors import Problem, StorageError
from conveyor.events.sources import source_problems
from conveyor.model.service import Service, service_problems
from conveyor.storage.base import StorageProvider
from conveyor.storage.registry import OUTPUT_KINDS, S3_KINDS, ProviderRegistry


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def deploy_problems(service: Service) -> list[Problem]:
    """Everything that stops `service` from running here, fields relative to the service."""
    problems = service_problems(service) + source_problems(service)
    for index, io in enumerate(service.input):
        if io.kind not in S3_KINDS:
            problems.append(
                Problem(
                    field=f"input[{index}].storage_provider",
                    message=f"inputs on {io.kind} are not supported: inputs must be on S3-compatible stores "
                    "(minio, s3)",
                )
            )
    for index, io in enumerate(service.output):
        if io.kind not in OUTPUT_KINDS:
            problems.append(
                Problem(
                    field=f"output[{index}].storage_provider",
                    message=f"{io.kind} outputs are not supported (supported: {', '.join(OUTPUT_KINDS)})",
                )
            )
    return problems


def prepare_storage(service: Service, storage: ProviderRegistry, created: list[tuple[StorageProvider, str]]) -> None:
    """Buckets and folder markers for every input and output, as OSCAR creates them.

    Buckets made here are appended to `created`, so a failed deployment can remove them again.
    """
    for io in (*service.input, *service.output):
        provider = storage.provider(io.storage_provider, service)
        if provider.ensure_bucket(io.bucket):
            created.append((provider, io.bucket))
        provider.ensure_folder(io.bucket, io.folder)


def remove_buckets(created: list[tuple[StorageProvider, str]]) -> None:
    """Undo prepare_storage: the buckets it made hold nothing but folder markers."""
    for provider, bucket in reversed(created):
        with contextlib.suppress(StorageError):
            provider.delete_bucket(bucket)
