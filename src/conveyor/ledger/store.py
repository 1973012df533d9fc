"""Every read and write of the ledger. Nothing else in Conveyor issues SQL.

Events are written before anyone acknowledges them; a job is born in the same transaction as
its event, so an accepted event always has a job and a duplicate never gets a second one.
"""

from __future__ import annotations

import secrets as token_source
import threading
import uuid
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, Row, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from conveyor.ledger.db import create_ledger_engine
from conveyor.ledger.tables import Base, EventRow, JobOutputRow, JobRow, ServiceRow
from conveyor.model.event import ObjectEvent, ObjectInfo, ObjectRef, utcnow
from conveyor.model.job import TERMINAL_STATES, JobOutcome, JobRecord, JobState
from conveyor.model.service import Service

EVENTS = EventRow.__table__
JOBS = JobRow.__table__
OUTPUTS = JobOutputRow.__table__


def new_job_id(service: str) -> str:
    return f"{service}-{uuid.uuid4()}"


def new_service_token() -> str:
    """OSCAR's service token: hex of 32 random bytes (64 characters)."""
    return token_source.token_hex(32)


DEFAULT_LINEAGE_LIMIT = 16

# The per-file statements, built once: values go in as parameters, so each call skips building
# the statement (a quarter of an event's ledger time in the profile; the compiled SQL is cached).
_NEW_JOB = insert(JOBS)
_WRITER = (
    select(JOBS.c.id, JOBS.c.depth)
    .join(OUTPUTS, OUTPUTS.c.job_id == JOBS.c.id)
    .where(
        OUTPUTS.c.bucket == bindparam("p_bucket"),
        OUTPUTS.c.key == bindparam("p_key"),
        OUTPUTS.c.provider == bindparam("p_provider"),
        OUTPUTS.c.etag == bindparam("p_etag"),
    )
    .order_by(JOBS.c.seq.desc())
    .limit(1)
)
_CLAIM = (
    update(JOBS)
    .where(JOBS.c.id.in_(bindparam("p_ids", expanding=True)), JOBS.c.status == JobState.QUEUED)
    .values(status=JobState.RUNNING, started_at=bindparam("p_now"))
    .returning(JOBS.c.id)
)
_FINISH = update(JOBS).where(JOBS.c.id == bindparam("p_id"))
_DROP_OUTPUTS = delete(OUTPUTS).where(OUTPUTS.c.job_id == bindparam("p_id"))
_NEW_OUTPUTS = insert(OUTPUTS)


class Ledger:
    def __init__(self, url: str, *, lineage_limit: int = DEFAULT_LINEAGE_LIMIT) -> None:
        self.lineage_limit = lineage_limit
        self._write_engine: Engine = create_ledger_engine(url, immediate=True)
        self._read_engine: Engine = create_ledger_engine(url, immediate=False)
        Base.metadata.create_all(self._write_engine)
        self._writing = sessionmaker(self._write_engine, expire_on_commit=False)
        self._reading = sessionmaker(self._read_engine, expire_on_commit=False)
        self._write_lock = threading.RLock()
        insert_new = postgresql_insert if self._write_engine.dialect.name == "postgresql" else sqlite_insert
        self._new_event = insert_new(EVENTS).on_conflict_do_nothing().returning(EVENTS.c.id)

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One write transaction at a time in this process. Writers queue on a lock that wakes the
        next one at once; left to SQLite, a busy writer sleeps in steps of up to 100 ms, which
        made accepting an event wait ~60 ms behind the dispatcher's and the jobs' writes."""
        with self._write_lock, self._writing.begin() as session:
            yield session

    @contextmanager
    def _write_rows(self) -> Iterator[Connection]:
        """A write transaction without the ORM: the per-file path (events, job starts and ends)
        runs plain statements, a fraction of the unit of work's CPU."""
        with self._write_lock, self._write_engine.begin() as connection:
            yield connection

    def close(self) -> None:
        self._write_engine.dispose()
        self._read_engine.dispose()

    def read_session(self) -> Session:
        """A session for queries that live beside this class (provenance, reconciliation)."""
        return self._reading()

    # ---- services -------------------------------------------------------------------------

    def put_service(self, service: Service) -> tuple[Service, bool]:
        """Create or replace a service. Secrets are kept apart; the token survives updates.

        Returns the stored service (with its token) and whether it was created.
        """
        now = utcnow()
        stored_secrets = {
            "environment": dict(service.environment.secrets),
            "storage_providers": service.model_dump(mode="json")["storage_providers"],
        }
        definition = service.public().model_dump(mode="json")
        with self._write() as session:
            row = session.get(ServiceRow, service.name)
            created = row is None
            if row is None:
                row = ServiceRow(name=service.name, created_at=now, token=service.token or new_service_token())
                session.add(row)
            row.definition = definition
            row.secrets = stored_secrets
            row.updated_at = now
            token = row.token
        stored = service.model_copy(update={"token": token})
        return stored, created

    def fetch_service(self, name: str, *, with_secrets: bool = False) -> Service | None:
        with self._reading() as session:
            row = session.get(ServiceRow, name)
            return None if row is None else _service_from_row(row, with_secrets=with_secrets)

    def list_services(self, *, with_secrets: bool = False) -> list[Service]:
        """Every service; `with_secrets` for the platform's own use (listing stores), never for answers."""
        with self._reading() as session:
            rows = session.scalars(select(ServiceRow).order_by(ServiceRow.name))
            return [_service_from_row(row, with_secrets=with_secrets) for row in rows]

    def delete_service(self, name: str) -> bool:
        """Remove a service; its queued jobs are cancelled, its history and data are kept."""
        with self._write() as session:
            row = session.get(ServiceRow, name)
            if row is None:
                return False
            session.delete(row)
            session.execute(
                update(JobRow)
                .where(JobRow.service == name, JobRow.status == JobState.QUEUED)
                .values(status=JobState.CANCELLED, message="service deleted before the job ran", finished_at=utcnow())
            )
            return True

    # ---- events and jobs ------------------------------------------------------------------

    def record_event(self, event: ObjectEvent, services: Iterable[str]) -> list[str]:
        """Accept `event` for each service; returns the ids of the jobs created.

        A second notification of the same object version (same etag) for the same service is
        counted on the first event and creates nothing. When a job of this platform wrote the
        object, the new job is its child; past the lineage limit it is born dead, which stops a
        chain that triggers itself.
        """
        return self.record_events([(event, list(services))])[0]

    def record_events(self, batch: Iterable[tuple[ObjectEvent, Collection[str]]]) -> list[list[str]]:
        """record_event for many events in one transaction: the ids of the jobs each one created."""
        batch = list(batch)
        if not any(services for _event, services in batch):
            return [[] for _ in batch]  # nothing to write: no transaction
        now = utcnow()
        with self._write_rows() as connection:
            return [
                [job for service in services if (job := self._accept(connection, event, service, now))]
                for event, services in batch
            ]

    def _accept(self, connection: Connection, event: ObjectEvent, service: str, now: datetime) -> str | None:
        """The job created for `event` in `service`, or None for a version the service already has."""
        event_id = connection.execute(self._new_event, _event_values(service, event, now)).scalar()
        if event_id is None:
            connection.execute(_count_duplicate(service, event))
            return None
        if event.producer_job:
            parent_id, parent_depth = event.producer_job, event.producer_depth or 0
        else:
            parent_id, parent_depth = _writer_of(connection, event)
        depth = parent_depth + 1 if parent_id else 0
        job_id = new_job_id(service)
        job: dict[str, object] = {
            "id": job_id,
            "service": service,
            "event_id": event_id,
            "status": JobState.QUEUED,
            "created_at": now,
            "parent_job_id": parent_id,
            "depth": depth,
            "attempt": 1,
            "sync": False,
            "message": "",
        }
        if depth > self.lineage_limit:
            job |= {
                "status": JobState.DEAD,
                "finished_at": now,
                "message": f"stopped: {depth} jobs in a row triggered each other (lineage limit "
                f"{self.lineage_limit}); the services may form a loop through their buckets",
            }
        connection.execute(_NEW_JOB, job)
        return job_id

    def create_request_job(self, service: str, request_path: str, *, sync: bool, job_id: str | None = None) -> str:
        """A job for an HTTP invocation whose body is saved at `request_path`."""
        job_id = job_id or new_job_id(service)
        with self._write() as session:
            session.add(
                JobRow(
                    id=job_id,
                    service=service,
                    request_path=request_path,
                    sync=sync,
                    status=JobState.QUEUED,
                    created_at=utcnow(),
                )
            )
        return job_id

    def next_queued(
        self, limit: int, skip_services: Collection[str] = (), *, service: str | None = None
    ) -> list[ClaimedJob]:
        """The oldest queued jobs that may start now, oldest first, but none of `skip_services`
        (those that cannot start more now), or only `service`'s; nothing is changed (see mark_running)."""
        now = utcnow()
        query = (
            select(*_CLAIM_COLUMNS)
            .select_from(JOBS.outerjoin(EVENTS, EVENTS.c.id == JOBS.c.event_id))
            .where(JOBS.c.status == JobState.QUEUED, or_(JOBS.c.not_before.is_(None), JOBS.c.not_before <= now))
        )
        if skip_services:
            query = query.where(JOBS.c.service.not_in(list(skip_services)))
        if service is not None:
            query = query.where(JOBS.c.service == service)
        with self._read_engine.connect() as connection:
            return [_claimed_from(row) for row in connection.execute(query.order_by(JOBS.c.seq).limit(limit))]

    def mark_running(self, job_id: str) -> bool:
        """Queued → running; False when the job is no longer queued (cancelled meanwhile)."""
        return bool(self.mark_running_many([job_id]))

    def mark_running_many(self, job_ids: Collection[str]) -> set[str]:
        """Queued → running for each of `job_ids` in one statement; returns those that were still queued."""
        with self._write_rows() as connection:
            return set(connection.execute(_CLAIM, {"p_ids": list(job_ids), "p_now": utcnow()}).scalars())

    def cancel_queued(self, job_id: str, message: str) -> bool:
        """Queued → cancelled; False when the job is not queued (running, or already finished)."""
        with self._write() as session:
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == JobState.QUEUED)
                .values(status=JobState.CANCELLED, message=message, finished_at=utcnow(), not_before=None)
            )
            return result.rowcount == 1

    def has_queued(self) -> bool:
        with self._reading() as session:
            return session.scalar(select(JobRow.seq).where(JobRow.status == JobState.QUEUED).limit(1)) is not None

    def finish_job(self, job_id: str, outcome: JobOutcome) -> None:
        self.finish_jobs([(job_id, outcome)])

    def finish_jobs(self, finished: Collection[tuple[str, JobOutcome]]) -> None:
        """Record how jobs ended (a batch's in one transaction), each with the outputs it stored."""
        with self._write_rows() as connection:
            for job_id, outcome in finished:
                _finish(connection, job_id, outcome)

    def retry_later(self, job_id: str, outcome: JobOutcome, delay_s: float) -> None:
        """Queue the job's next attempt, not before `delay_s` from now; the failure stays in its message."""
        with self._write() as session:
            row = session.scalar(select(JobRow).where(JobRow.id == job_id))
            if row is None:
                return
            row.message = (
                f"attempt {row.attempt} failed ({outcome.failure}): {outcome.message}; retrying in {delay_s:.0f} s"
            )
            row.exit_code = outcome.exit_code
            row.status = JobState.QUEUED
            row.attempt += 1
            row.started_at = None
            row.not_before = utcnow() + timedelta(seconds=delay_s)

    def next_retry_time(self) -> datetime | None:
        """When the earliest queued retry becomes due (None when no retry waits)."""
        with self._reading() as session:
            return session.scalar(
                select(func.min(JobRow.not_before)).where(
                    JobRow.status == JobState.QUEUED, JobRow.not_before.is_not(None)
                )
            )

    def replay(self, service: str, job_ids: Iterable[str] = (), *, dead: bool = False) -> list[str]:
        """Queue finished jobs again as a new attempt: the named ones, or every dead one of the service."""
        ids = list(job_ids)
        with self._write() as session:
            query = select(JobRow).where(
                JobRow.service == service, JobRow.status.in_([s.value for s in TERMINAL_STATES])
            )
            if dead:
                query = query.where(JobRow.status == JobState.DEAD)
            if ids:
                query = query.where(JobRow.id.in_(ids))
            replayed = []
            for row in session.scalars(query):
                row.status = JobState.QUEUED
                row.attempt += 1
                row.not_before = None
                row.started_at = row.finished_at = None
                row.message = f"replayed on request (attempt {row.attempt})"
                replayed.append(row.id)
            return replayed

    def known_versions(self, service: str, provider: str, bucket: str, prefix: str) -> set[tuple[str, str]]:
        """(key, etag) of every object version under `prefix` the service has an event for."""
        in_prefix = EventRow.key >= prefix
        if prefix:  # a key range, not LIKE: the index on (service, provider, bucket, key) serves it
            in_prefix = in_prefix & (EventRow.key < prefix[:-1] + chr(ord(prefix[-1]) + 1))
        with self._reading() as session:
            rows = session.execute(
                select(EventRow.key, EventRow.etag).where(
                    EventRow.service == service,
                    EventRow.provider == provider,
                    EventRow.bucket == bucket,
                    in_prefix,
                )
            )
            return {(key, etag) for key, etag in rows}

    def has_event(self, service: str, event: ObjectEvent) -> bool:
        """Whether the service already has an event for this object version."""
        with self._reading() as session:
            return session.scalar(_event_identity(service, event).limit(1)) is not None

    def service_created_at(self, name: str) -> datetime | None:
        with self._reading() as session:
            return session.scalar(select(ServiceRow.created_at).where(ServiceRow.name == name))

    def running_jobs(self) -> list[ClaimedJob]:
        """Jobs marked running: at start-up, those a stopped platform did not see end."""
        query = (
            select(*_CLAIM_COLUMNS)
            .select_from(JOBS.outerjoin(EVENTS, EVENTS.c.id == JOBS.c.event_id))
            .where(JOBS.c.status == JobState.RUNNING)
            .order_by(JOBS.c.seq)
        )
        with self._read_engine.connect() as connection:
            return [_claimed_from(row) for row in connection.execute(query)]

    def requeue(self, job_id: str, message: str) -> None:
        """Queue a job again as a new attempt."""
        with self._write() as session:
            session.execute(
                update(JobRow)
                .where(JobRow.id == job_id)
                .values(status=JobState.QUEUED, attempt=JobRow.attempt + 1, started_at=None, message=message)
            )

    # ---- reading jobs ---------------------------------------------------------------------

    def list_jobs(
        self,
        service: str | None = None,
        *,
        states: Iterable[JobState] = (),
        limit: int = 100,
        before_seq: int | None = None,
        newest_first: bool = True,
        id_prefix: str | None = None,
    ) -> list[tuple[int, JobRecord]]:
        """Jobs with their sequence number (for paging), newest first by default."""
        wanted = [s.value for s in states]
        with self._reading() as session:
            query = select(JobRow)
            if service:
                query = query.where(JobRow.service == service)
            if id_prefix:
                query = query.where(JobRow.id.startswith(id_prefix, autoescape=True))
            if wanted:
                query = query.where(JobRow.status.in_(wanted))
            if before_seq is not None:
                query = query.where(JobRow.seq < before_seq)
            query = query.order_by(JobRow.seq.desc() if newest_first else JobRow.seq).limit(limit)
            rows = list(session.scalars(query))
            return [(row.seq, self._record(session, row)) for row in rows]

    def fetch_job(self, job_id: str) -> JobRecord | None:
        with self._reading() as session:
            row = session.scalar(select(JobRow).where(JobRow.id == job_id))
            return None if row is None else self._record(session, row)

    def count_jobs(self, service: str | None = None) -> dict[str, dict[JobState, int]]:
        """{service: {state: n}} for every service with jobs (or only `service`)."""
        with self._reading() as session:
            query = select(JobRow.service, JobRow.status, func.count()).group_by(JobRow.service, JobRow.status)
            if service:
                query = query.where(JobRow.service == service)
            counts: dict[str, dict[JobState, int]] = {}
            for name, status, number in session.execute(query):
                counts.setdefault(name, {})[JobState(status)] = number
            return counts

    def delete_jobs(self, service: str, *, only_succeeded: bool) -> list[str]:
        """Forget finished jobs of a service; returns their ids (their logs go with them)."""
        states = [JobState.SUCCEEDED] if only_succeeded else [s.value for s in TERMINAL_STATES]
        with self._write() as session:
            ids = list(session.scalars(select(JobRow.id).where(JobRow.service == service, JobRow.status.in_(states))))
            self._delete_job_rows(session, ids)
            return ids

    def delete_job(self, service: str, job_id: str) -> bool:
        with self._write() as session:
            found = session.scalar(select(JobRow.id).where(JobRow.id == job_id, JobRow.service == service))
            if found is None:
                return False
            self._delete_job_rows(session, [job_id])
            return True

    @staticmethod
    def _delete_job_rows(session: Session, ids: list[str]) -> None:
        if ids:
            session.execute(delete(JobOutputRow).where(JobOutputRow.job_id.in_(ids)))
            session.execute(delete(JobRow).where(JobRow.id.in_(ids)))

    @staticmethod
    def _record(session: Session, row: JobRow) -> JobRecord:
        event = session.get(EventRow, row.event_id) if row.event_id is not None else None
        outputs = session.scalars(select(JobOutputRow).where(JobOutputRow.job_id == row.id))
        return JobRecord(
            job_id=row.id,
            service=row.service,
            state=JobState(row.status),
            attempt=row.attempt,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            exit_code=row.exit_code,
            message=row.message or "",
            trigger=_info_from_event(event) if event else None,
            parent_job=row.parent_job_id,
            depth=row.depth,
            not_before=row.not_before,
            outputs=[
                ObjectInfo(ref=ObjectRef(provider=o.provider, bucket=o.bucket, key=o.key), etag=o.etag, size=o.size)
                for o in outputs
            ],
        )


@dataclass(slots=True)
class ClaimedJob:
    """A job the dispatcher has just taken from the queue."""

    job_id: str
    service: str
    attempt: int
    sync: bool
    request_path: str | None
    event: ObjectEvent | None
    depth: int = 0


def _service_from_row(row: ServiceRow, *, with_secrets: bool) -> Service:
    """The stored definition; with_secrets puts back secret variables and provider credentials."""
    service = Service.model_validate({**row.definition, "token": row.token})
    if with_secrets:
        service.environment.secrets = dict(row.secrets.get("environment", {}))
        service.storage_providers = row.secrets.get("storage_providers", service.storage_providers)
    return service


def _finish(connection: Connection, job_id: str, outcome: JobOutcome) -> None:
    values: dict[str, object] = {
        "status": outcome.state,
        "exit_code": outcome.exit_code,
        "message": outcome.message,
        "finished_at": outcome.finished_at or utcnow(),
    }
    if outcome.started_at:
        values["started_at"] = outcome.started_at
    if not connection.execute(_FINISH, {**values, "p_id": job_id}).rowcount:
        return
    connection.execute(_DROP_OUTPUTS, {"p_id": job_id})
    if outcome.outputs:
        connection.execute(
            _NEW_OUTPUTS,
            [
                {
                    "job_id": job_id,
                    "provider": info.ref.provider,
                    "bucket": info.ref.bucket,
                    "key": info.ref.key,
                    "etag": info.etag,
                    "size": info.size,
                }
                for info in outcome.outputs
            ],
        )


def _writer_of(connection: Connection, event: ObjectEvent) -> tuple[str | None, int]:
    """The job that stored exactly this object version, and its lineage depth."""
    if not event.etag:
        return None, 0
    ref = event.ref
    found = connection.execute(
        _WRITER, {"p_bucket": ref.bucket, "p_key": ref.key, "p_provider": ref.provider, "p_etag": event.etag}
    ).first()
    return (found[0], found[1]) if found else (None, 0)


def _event_values(service: str, event: ObjectEvent, received_at: datetime) -> dict[str, object]:
    return {
        "service": service,
        "provider": event.ref.provider,
        "bucket": event.ref.bucket,
        "key": event.ref.key,
        "etag": event.etag,
        "size": event.size,
        "event_time": event.event_time,
        "received_at": received_at,
        "source": event.source,
        "duplicates": 0,
    }


def _count_duplicate(service: str, event: ObjectEvent):
    return (
        update(EVENTS)
        .where(
            EVENTS.c.service == service,
            EVENTS.c.provider == event.ref.provider,
            EVENTS.c.bucket == event.ref.bucket,
            EVENTS.c.key == event.ref.key,
            EVENTS.c.etag == event.etag,
        )
        .values(duplicates=EVENTS.c.duplicates + 1)
    )


_CLAIM_COLUMNS = (
    JOBS.c.id,
    JOBS.c.service,
    JOBS.c.attempt,
    JOBS.c.sync,
    JOBS.c.request_path,
    JOBS.c.depth,
    EVENTS.c.id.label("event_row"),
    EVENTS.c.provider,
    EVENTS.c.bucket,
    EVENTS.c.key,
    EVENTS.c.etag,
    EVENTS.c.size,
    EVENTS.c.event_time,
    EVENTS.c.source,
)


def _claimed_from(row: Row) -> ClaimedJob:
    event = None
    if row.event_row is not None:
        event = ObjectEvent(
            ref=ObjectRef(provider=row.provider, bucket=row.bucket, key=row.key),
            etag=row.etag,
            size=row.size,
            event_time=row.event_time,
            source=row.source,
        )
    return ClaimedJob(
        job_id=row.id,
        service=row.service,
        attempt=row.attempt,
        sync=row.sync,
        request_path=row.request_path,
        event=event,
        depth=row.depth,
    )


def _event_identity(service: str, event: ObjectEvent):
    return select(EventRow).where(
        EventRow.service == service,
        EventRow.provider == event.ref.provider,
        EventRow.bucket == event.ref.bucket,
        EventRow.key == event.ref.key,
        EventRow.etag == event.etag,
    )


def _info_from_event(row: EventRow) -> ObjectInfo:
    return ObjectInfo(
        ref=ObjectRef(provider=row.provider, bucket=row.bucket, key=row.key),
        etag=row.etag,
        size=row.size,
        last_modified=row.event_time,
    )
