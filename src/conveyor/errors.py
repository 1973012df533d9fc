"""Every error Conveyor raises on purpose belongs to one tree, so callers catch one family.

    ConveyorError
    ├── ConfigError              settings that cannot work (bad port, unreadable file)
    ├── FDLError                 an FDL file with problems; carries one Problem per finding
    ├── ServiceNotFound          no service with that name
    ├── StorageError             anything a storage provider could not do
    │   ├── ObjectNotFound       the object (or bucket) does not exist
    │   ├── StorageAuthError     the store refused the credentials
    │   └── StorageUnavailable   the store cannot be reached or answered 5xx
    ├── BackendError             anything an execution backend could not do
    │   ├── BackendUnavailable   the engine is not reachable; the message says what to fix
    │   ├── ImageError           the image cannot be found or pulled
    │   └── SubmitError          the backend refused a job
    ├── UnsafeKeyError           an object key that would escape the job's directory
    └── PlatformError            the embedded platform could not start or stop

Providers and backends map their SDK's exceptions into this tree; nothing returns False
to signal failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ConveyorError(Exception):
    """Base of every error Conveyor raises on purpose."""


def validation_reasons(errors: list[dict[str, Any]]) -> list[str]:
    """pydantic's errors (`ValidationError.errors()`) as `field.path: reason` lines for people."""
    return [
        f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {str(e['msg']).removeprefix('Value error, ')}"
        for e in errors
    ]


class ConfigError(ConveyorError):
    pass


@dataclass(frozen=True)
class Problem:
    """One finding in a definition: where it is, which field, and what is wrong."""

    field: str
    message: str
    location: str = ""

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        return f"{where}{self.field}: {self.message}"


class FDLError(ConveyorError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class ServiceNotFound(ConveyorError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no service named {name!r}")


class StorageError(ConveyorError):
    pass


class ObjectNotFound(StorageError):
    pass


class StorageAuthError(StorageError):
    pass


class StorageUnavailable(StorageError):
    pass


class BackendError(ConveyorError):
    pass


class BackendUnavailable(BackendError):
    pass


class ImageError(BackendError):
    pass


class SubmitError(BackendError):
    pass


class UnsafeKeyError(ConveyorError):
    pass


class PlatformError(ConveyorError):
    pass
