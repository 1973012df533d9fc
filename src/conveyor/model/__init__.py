"""Types that cross planes: services, object events, jobs."""

from conveyor.model.event import ObjectEvent, ObjectInfo, ObjectRef
from conveyor.model.job import (
    TERMINAL_STATES,
    JobHandle,
    JobOutcome,
    JobRecord,
    JobSpec,
    JobState,
    JobStatus,
)
from conveyor.model.service import Environment, Service, StorageIO

__all__ = [
    "TERMINAL_STATES",
    "Environment",
    "JobHandle",
    "JobOutcome",
    "JobRecord",
    "JobSpec",
    "JobState",
    "JobStatus",
    "ObjectEvent",
    "ObjectInfo",
    "ObjectRef",
    "Service",
    "StorageIO",
]
