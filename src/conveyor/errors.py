"""Every error Conveyor raises on purpose belongs to one tree, so callers catch one family.

    ConveyorError
    ├── ConfigError              settings that cannot work (bad port, unreadable file)
    ├── DefinitionError          service definitions that cannot run here; one Problem per finding
    │   └── FDLError             ... read from an FDL file (each Problem carries its file:line)
    ├── DeployError              what valid services need (buckets, notifications) could not be set up
    ├── NotFound                 no service, job or bucket by that name (the message says which)
    │   ├── ServiceNotFound
    │   ├── JobNotFound
    │   └── BucketNotFound
    ├── Conflict                 the request clashes with what exists (a name taken)
    ├── InvalidRequest           a request that cannot be carried out as asked (an ambiguous job id)
    ├── NotSupported             a feature OSCAR has and Conveyor does not; the message says why
    ├── StorageError             anything a storage provider could not do
    │   ├── ObjectNotFound       the object (or bucket) does not exist
    │   ├── StorageAuthError     the store refused the credentials
    │   └── StorageUnavailable   the store cannot be reached or answered 5xx
    │       └── StorageUnreachable  no answer at all (connection refused or timed out): the store is
    │                               down, and jobs wait for it instead of failing
    ├── BackendError             anything an execution backend could not do
    │   ├── BackendUnavailable   the engine is not reachable; the message says what to fix
    │   │   └── EngineUnreachable  the container engine stopped answering under running jobs: they
    │   │                          wait for it instead of failing
    │   ├── ImageError           the image cannot be found or pulled
    │   └── SubmitError          the backend refused a job
    ├── UnsafeKeyError           an object key that would escape the job's directory
    └── PlatformError            the embedded platform could not start or stop

Providers and backends map their SDK's exceptions into this tree; nothing returns False
to signal failure. A full disk is not a kind of its own: `no_space_left` tells it from any error.
"""

from __future__ import annotations

import errno
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


class DefinitionError(ConveyorError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class FDLError(DefinitionError):
    pass


class DeployError(ConveyorError):
    """Carries one Problem naming the service whose buckets or notifications could not be set up."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class NotFound(ConveyorError):
    pass


class ServiceNotFound(NotFound):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"the service {name!r} does not exist")


class JobNotFound(NotFound):
    pass


class BucketNotFound(NotFound):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"the bucket {name!r} does not exist")


class Conflict(ConveyorError):
    pass


class InvalidRequest(ConveyorError):
    pass


class NotSupported(ConveyorError):
    pass


class StorageError(ConveyorError):
    pass


class ObjectNotFound(StorageError):
    pass


class StorageAuthError(StorageError):
    pass


class StorageUnavailable(StorageError):
    pass


class StorageUnreachable(StorageUnavailable):
    """`provider` names the store (`minio.default`, `s3.ceph`) when the code that raised knows it."""

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider


class BackendError(ConveyorError):
    pass


class BackendUnavailable(BackendError):
    pass


class EngineUnreachable(BackendUnavailable):
    pass


class ImageError(BackendError):
    pass


class SubmitError(BackendError):
    pass


class UnsafeKeyError(ConveyorError):
    pass


class PlatformError(ConveyorError):
    pass


SQLITE_FULL = 13
"""SQLite's `database or disk is full` (sqlite3's `sqlite_errorcode`)."""


def no_space_left(error: BaseException) -> bool:
    """Whether a full disk caused `error`: ENOSPC or EDQUOT anywhere in its chain of causes, or SQLite's
    `database or disk is full` (also inside SQLAlchemy's wrapper, which keeps it as `orig`)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(current, "sqlite_errorcode", None) == SQLITE_FULL:
            return True
        orig = getattr(current, "orig", None)
        pending += [current.__cause__, current.__context__, orig if isinstance(orig, BaseException) else None]
    return False
