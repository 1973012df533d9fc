"""ORM rows. Class names end in Row so they are never confused with the pydantic models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, String, Text, TypeDecorator, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database keeps."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime()}


class ServiceRow(Base):
    __tablename__ = "services"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    definition: Mapped[dict] = mapped_column(JSON)
    """The Service as applied, secrets blanked: they live in `secrets`, apart."""
    secrets: Mapped[dict] = mapped_column(JSON, default=dict)
    """{"environment": secret variables, "storage_providers": providers with their credentials}."""
    token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class EventRow(Base):
    """One object event accepted for one service. The unique key makes duplicates harmless."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("service", "provider", "bucket", "key", "etag", name="uq_event_identity"),
        Index("ix_events_object", "bucket", "key"),  # who read this object (provenance)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(64), index=True)
    provider: Mapped[str] = mapped_column(String(128))
    bucket: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(Text)
    etag: Mapped[str] = mapped_column(String(128))
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    event_time: Mapped[datetime]
    received_at: Mapped[datetime]
    source: Mapped[str] = mapped_column(String(32))
    duplicates: Mapped[int] = mapped_column(Integer, default=0)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_seq", "status", "seq"),
        Index("ix_jobs_service_seq", "service", "seq"),
        Index("ix_jobs_event", "event_id"),
        Index("ix_jobs_parent", "parent_job_id"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(96), unique=True)
    service: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"), nullable=True)
    request_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    sync: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    not_before: Mapped[datetime | None] = mapped_column(nullable=True)
    """A queued retry is not started before this time."""
    parent_job_id: Mapped[str | None] = mapped_column(String(96), nullable=True)
    """The job that wrote the object this job was started for (provenance)."""
    depth: Mapped[int] = mapped_column(Integer, default=0)
    """Jobs between this one and a file a user put; bounded to stop runaway chains."""


class JobOutputRow(Base):
    """An object a job wrote: the other half of provenance (the event is the first)."""

    __tablename__ = "job_outputs"
    __table_args__ = (Index("ix_job_outputs_object", "bucket", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(128))
    bucket: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(Text)
    etag: Mapped[str] = mapped_column(String(128), default="")
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)
