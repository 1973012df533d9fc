"""Every read and write of the ledger (provenance's queries beside it, in lineage.py). Nothing
else in Conveyor issues SQL.

Events are written before anyone acknowledges them; a job is born in the same transaction as
its event, so an accepted event always has a job and a duplicate never gets a second one.
"""

from __future__ import annotations

import secrets as token_source
import threading
import uuid
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from operator import attrgetter
from typing import TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    Select,
    Table,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.elements import Label

from conveyor.ledger.db import create_ledger_engine
from conveyor.ledger.lineage import Lineage
from conveyor.ledger.tables import Base, EventRow, JobOutputRow, JobRow, ServiceRow
from conveyor.model.event import ObjectEvent, ObjectInfo, ObjectRef, utcnow
from conveyor.model.job import TERMINAL_STATES, JobOutcome, JobRecord, JobState
from conveyor.model.service import Service

SERVICES = ServiceRow.__table__
EVENTS = EventRow.__table__
JOBS = JobRow.__table__
OUTPUTS = JobOutputRow.__table__


def new_job_id(service: str) -> str:
    return f"{service}-{uuid.uuid4()}"


def new_service_token() -> str:
    """OSCAR's service token: hex of 32 random bytes (64 characters)."""
    return token_source.token_hex(32)


DEFAULT_LINEAGE_LIMIT = 16
T = TypeVar("T")

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
        self._write_lock = threading.RLock()
        insert_new = postgresql_insert if self._write_engine.dialect.name == "postgresql" else sqlite_insert
        self._new_event = insert_new(EVENTS).on_conflict_do_nothing().returning(EVENTS.c.id)

    @contextmanager
    def _write_rows(self) -> Iterator[Connection]:
        """One write transaction at a time in this process. Writers queue on a lock that wakes the
        next one at once; left to SQLite, a busy writer sleeps in steps of up to 100 ms, which
        made accepting an event wait ~60 ms behind the dispatcher's and the jobs' writes.

        Plain statements, not the ORM: on the per-file path (events, job starts and ends) they cost
        a fraction of the unit of work's CPU."""
        with self._write_lock, self._write_engine.begin() as connection:
            yield connection

    def ping(self) -> None:
        """One trivial read: raises when the database cannot be read (gone, locked for too long, a full disk)."""
        with self._read_engine.connect() as connection:
            connection.execute(select(1)).scalar()

    def close(self) -> None:
        self._write_engine.dispose()
        self._read_engine.dispose()

    @contextmanager
    def lineage(self) -> Iterator[Lineage]:
        """Provenance queries, all in one read transaction: on SQLite (WAL) each level of a walk
        then reads the same snapshot, whatever jobs end meanwhile (PostgreSQL reads committed
        rows at each statement). Valid inside the block only."""
        with self._read_engine.connect() as connection:
            yield Lineage(connection)

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
        stored_values = {
            "definition": service.public().model_dump(mode="json"),
            "secrets": stored_secrets,
            "updated_at": now,
        }
        named = SERVICES.c.name == service.name
        with self._write_rows() as connection:
            token = connection.execute(select(SERVICES.c.token).where(named)).scalar()
            created = token is None
            if token is None:
                token = service.token or new_service_token()
                connection.execute(
                    insert(SERVICES).values(name=service.name, created_at=now, token=token, **stored_values)
                )
            else:
                connection.execute(update(SERVICES).where(named).values(**stored_values))
        stored = service.model_copy(update={"token": token})
        return stored, created

    def fetch_service(self, name: str, *, with_secrets: bool = False) -> Service | None:
        with self._read_engine.connect() as connection:
            row = connection.execute(select(SERVICES).where(SERVICES.c.name == name)).first()
        return None if row is None else _service_from_row(row, with_secrets=with_secrets)

    def list_services(self, *, with_secrets: bool = False) -> list[Service]:
        """Every service; `with_secrets` for the platform's own use (listing stores), never for answers."""
        with self._read_engine.connect() as connection:
            rows = connection.execute(select(SERVICES).order_by(SERVICES.c.name)).all()
        return [_service_from_row(row, with_secrets=with_secrets) for row in rows]

    def delete_service(self, name: str) -> bool:
        """Remove a service; its queued jobs are cancelled, its history and data are kept."""
        with self._write_rows() as connection:
            if not connection.execute(delete(SERVICES).where(SERVICES.c.name == name)).rowcount:
                return False
            connection.execute(
                update(JOBS)
                .where(JOBS.c.service == name, JOBS.c.status == JobState.QUEUED)
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
        job = {
            "id": job_id,
            "service": service,
            "request_path": request_path,
            "sync": sync,
            "status": JobState.QUEUED,
            "created_at": utcnow(),
        }
        with self._write_rows() as connection:
            connection.execute(_NEW_JOB, job)
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
        with self._write_rows() as connection:
            result = connection.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status == JobState.QUEUED)
                .values(status=JobState.CANCELLED, message=message, finished_at=utcnow(), not_before=None)
            )
            return result.rowcount == 1

    def has_queued(self) -> bool:
        return self._read_one(select(JOBS.c.seq).where(JOBS.c.status == JobState.QUEUED).limit(1)) is not None

    def finish_job(self, job_id: str, outcome: JobOutcome) -> None:
        self.finish_jobs([(job_id, outcome)])

    def finish_jobs(self, finished: Collection[tuple[str, JobOutcome]]) -> None:
        """Record how jobs ended (a batch's in one transaction), each with the outputs it stored."""
        with self._write_rows() as connection:
            for job_id, outcome in finished:
                _finish(connection, job_id, outcome)

    def retry_later(self, job_id: str, outcome: JobOutcome, delay_s: float) -> None:
        """Queue the job's next attempt, not before `delay_s` from now; the failure stays in its message.
        Only a running job: asked twice (a write the dispatcher repeats), the attempt counts once."""
        running = (JOBS.c.id == job_id) & (JOBS.c.status == JobState.RUNNING)
        with self._write_rows() as connection:
            attempt = connection.execute(select(JOBS.c.attempt).where(running)).scalar()
            if attempt is None:
                return
            connection.execute(
                update(JOBS)
                .where(running)
                .values(
                    message=f"attempt {attempt} failed ({outcome.failure}): {outcome.message}; "
                    f"retrying in {delay_s:.0f} s",
                    exit_code=outcome.exit_code,
                    status=JobState.QUEUED,
                    attempt=attempt + 1,
                    started_at=None,
                    not_before=utcnow() + timedelta(seconds=delay_s),
                )
            )

    def wait_for_store(self, job_id: str, outcome: JobOutcome, delay_s: float) -> None:
        """Queue the same attempt again: its store (or engine, or disk) was not there. Not counted as an
        attempt, so an outage, however long, never makes the job a dead letter. Only a running job."""
        message = f"waiting for {outcome.awaited()}: {outcome.message}"
        with self._write_rows() as connection:
            connection.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status == JobState.RUNNING)
                .values(
                    message=message,
                    status=JobState.QUEUED,
                    started_at=None,
                    not_before=utcnow() + timedelta(seconds=delay_s),
                )
            )

    def next_retry_time(self) -> datetime | None:
        """When the earliest queued retry becomes due (None when none is due later than now).

        A retry already due that has not started waits for room or for its store: what frees either
        wakes the dispatcher, so a due time in the past is no reason to wake it again at once."""
        return self._read_one(
            select(func.min(JOBS.c.not_before)).where(JOBS.c.status == JobState.QUEUED, JOBS.c.not_before > utcnow())
        )

    def replay(self, service: str, job_ids: Iterable[str] = (), *, states: Iterable[JobState] = ()) -> list[str]:
        """Queue finished jobs again as a new attempt: the named ones, or every one of the service in `states`."""
        ids = list(job_ids)
        query = select(JOBS).where(JOBS.c.service == service, JOBS.c.status.in_([s.value for s in TERMINAL_STATES]))
        if wanted := [s.value for s in states]:
            query = query.where(JOBS.c.status.in_(wanted))
        if ids:
            query = query.where(JOBS.c.id.in_(ids))
        with self._write_rows() as connection:
            replayed = [(row.id, row.attempt + 1) for row in connection.execute(query)]
            if replayed:
                connection.execute(
                    _REPLAY,
                    [
                        {"p_id": job_id, "p_attempt": attempt, "p_message": f"replayed on request (attempt {attempt})"}
                        for job_id, attempt in replayed
                    ],
                )
        return [job_id for job_id, _ in replayed]

    def known_versions(self, service: str, provider: str, bucket: str, prefix: str) -> set[tuple[str, str]]:
        """(key, etag) of every object version under `prefix` the service has an event for."""
        in_prefix = EVENTS.c.key >= prefix
        if prefix:  # a key range, not LIKE: the index on (service, provider, bucket, key) serves it
            in_prefix = in_prefix & (EVENTS.c.key < prefix[:-1] + chr(ord(prefix[-1]) + 1))
        query = select(EVENTS.c.key, EVENTS.c.etag).where(
            EVENTS.c.service == service, EVENTS.c.provider == provider, EVENTS.c.bucket == bucket, in_prefix
        )
        with self._read_engine.connect() as connection:
            return {(key, etag) for key, etag in connection.execute(query)}

    def has_event(self, service: str, event: ObjectEvent) -> bool:
        """Whether the service already has an event for this object version."""
        return self._read_one(_event_identity(service, event).limit(1)) is not None

    def service_created_at(self, name: str) -> datetime | None:
        return self._read_one(select(SERVICES.c.created_at).where(SERVICES.c.name == name))

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
        """Queue a running job again as a new attempt (asked twice, it counts once)."""
        with self._write_rows() as connection:
            connection.execute(
                update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status == JobState.RUNNING)
                .values(status=JobState.QUEUED, attempt=JOBS.c.attempt + 1, started_at=None, message=message)
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
        """Jobs with their sequence number (for paging), newest first by default; in one statement,
        each with its trigger and its outputs."""
        conditions: list[ColumnElement[bool]] = []
        if service:
            conditions.append(JOBS.c.service == service)
        if id_prefix:
            conditions.append(JOBS.c.id.startswith(id_prefix, autoescape=True))
        if wanted := [s.value for s in states]:
            conditions.append(JOBS.c.status.in_(wanted))
        if before_seq is not None:
            conditions.append(JOBS.c.seq < before_seq)
        with self._read_engine.connect() as connection:
            return _job_records(connection, conditions, limit=limit, newest_first=newest_first)

    def fetch_job(self, job_id: str) -> JobRecord | None:
        with self._read_engine.connect() as connection:
            found = _job_records(connection, [JOBS.c.id == job_id], limit=1)
        return found[0][1] if found else None

    def count_jobs(
        self, service: str | None = None, *, since: datetime | None = None
    ) -> dict[str, dict[JobState, int]]:
        """{service: {state: n}} for every service with jobs (or only `service`); with `since`, only jobs
        created since then and those still queued or running (what `conveyor wait` judges)."""
        query = select(JOBS.c.service, JOBS.c.status, func.count()).group_by(JOBS.c.service, JOBS.c.status)
        if service:
            query = query.where(JOBS.c.service == service)
        if since is not None:
            query = query.where(
                (JOBS.c.created_at >= since) | JOBS.c.status.in_([JobState.QUEUED.value, JobState.RUNNING.value])
            )
        counts: dict[str, dict[JobState, int]] = {}
        with self._read_engine.connect() as connection:
            for name, status, number in connection.execute(query):
                counts.setdefault(name, {})[JobState(status)] = number
        return counts

    def delete_jobs(self, service: str, *, only_succeeded: bool) -> list[str]:
        """Forget finished jobs of a service; returns their ids (their logs go with them)."""
        states = [JobState.SUCCEEDED] if only_succeeded else [s.value for s in TERMINAL_STATES]
        with self._write_rows() as connection:
            ids = list(
                connection.execute(
                    select(JOBS.c.id).where(JOBS.c.service == service, JOBS.c.status.in_(states))
                ).scalars()
            )
            _delete_job_rows(connection, ids)
            return ids

    def delete_job(self, service: str, job_id: str) -> bool:
        with self._write_rows() as connection:
            found = connection.execute(select(JOBS.c.id).where(JOBS.c.id == job_id, JOBS.c.service == service)).scalar()
            if found is None:
                return False
            _delete_job_rows(connection, [job_id])
            return True

    def _read_one(self, query: Select[tuple[T]]) -> T | None:
        """The first column of the first row `query` finds, or None."""
        with self._read_engine.connect() as connection:
            return connection.execute(query).scalar()


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


def _service_from_row(row: Row, *, with_secrets: bool) -> Service:
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


def _event_identity(service: str, event: ObjectEvent) -> Select:
    return select(EVENTS.c.id).where(
        EVENTS.c.service == service,
        EVENTS.c.provider == event.ref.provider,
        EVENTS.c.bucket == event.ref.bucket,
        EVENTS.c.key == event.ref.key,
        EVENTS.c.etag == event.etag,
    )


_REPLAY = (
    update(JOBS)
    .where(JOBS.c.id == bindparam("p_id"))
    .values(
        status=JobState.QUEUED,
        attempt=bindparam("p_attempt"),
        not_before=None,
        started_at=None,
        finished_at=None,
        message=bindparam("p_message"),
    )
)


def _delete_job_rows(connection: Connection, ids: list[str]) -> None:
    if ids:
        connection.execute(delete(OUTPUTS).where(OUTPUTS.c.job_id.in_(ids)))
        connection.execute(delete(JOBS).where(JOBS.c.id.in_(ids)))


# ---- a page of job records in one statement -----------------------------------------------


def _prefixed(prefix: str, table: Table, *names: str) -> tuple[Label, ...]:
    """Columns of a joined table, renamed apart from the job's own and from the other table's:
    all three have an id, and events and outputs share their other names."""
    return tuple(table.c[name].label(f"{prefix}_{name}") for name in names)


_OBJECT_COLUMNS = ("id", "provider", "bucket", "key", "etag", "size")
_TRIGGER_COLUMNS = _prefixed("trigger", EVENTS, *_OBJECT_COLUMNS, "event_time")
_OUTPUT_COLUMNS = _prefixed("output", OUTPUTS, *_OBJECT_COLUMNS)


_RECORDS = select(JOBS, *_TRIGGER_COLUMNS, *_OUTPUT_COLUMNS).select_from(
    JOBS.outerjoin(EVENTS, EVENTS.c.id == JOBS.c.event_id).outerjoin(OUTPUTS, OUTPUTS.c.job_id == JOBS.c.id)
)
"""Each job with its trigger and its outputs: a row per output, or one for a job without outputs."""


def _job_records(
    connection: Connection, conditions: Sequence[ColumnElement[bool]], *, limit: int, newest_first: bool = True
) -> list[tuple[int, JobRecord]]:
    """The page of jobs `conditions` select, with its sequence numbers, in order."""
    rows = connection.execute(_records_query(conditions, limit=limit, newest_first=newest_first))
    return [(seq, _record(list(job_rows))) for seq, job_rows in groupby(rows, key=attrgetter("seq"))]


def _records_query(conditions: Sequence[ColumnElement[bool]], *, limit: int, newest_first: bool) -> Select:
    """_RECORDS for the page of jobs `conditions` select, in page order, each job's outputs in the
    order they were recorded. The page is limited before the join, so that `limit` counts jobs,
    not outputs; it is a subquery in `IN`, not in FROM, where building the subquery's column
    proxies at each call took several times the CPU of running the statement (fetch_job, SQLite)."""
    page = select(JOBS.c.seq).where(*conditions).order_by(_by_seq(newest_first)).limit(limit)
    return _RECORDS.where(JOBS.c.seq.in_(page)).order_by(_by_seq(newest_first), OUTPUTS.c.id)


def _by_seq(newest_first: bool) -> ColumnElement:
    return JOBS.c.seq.desc() if newest_first else JOBS.c.seq.asc()


def _record(rows: list[Row]) -> JobRecord:
    """A job from its rows of _records_query: the job and its trigger on each, an output on each."""
    job = rows[0]
    return JobRecord(
        job_id=job.id,
        service=job.service,
        state=JobState(job.status),
        attempt=job.attempt,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        exit_code=job.exit_code,
        message=job.message or "",
        trigger=_trigger_of(job),
        parent_job=job.parent_job_id,
        depth=job.depth,
        not_before=job.not_before,
        outputs=[_output_of(row) for row in rows if row.output_id is not None],
    )


def _trigger_of(row: Row) -> ObjectInfo | None:
    if row.trigger_id is None:
        return None
    return ObjectInfo(
        ref=ObjectRef(provider=row.trigger_provider, bucket=row.trigger_bucket, key=row.trigger_key),
        etag=row.trigger_etag,
        size=row.trigger_size,
        last_modified=row.trigger_event_time,
    )


def _output_of(row: Row) -> ObjectInfo:
    return ObjectInfo(
        ref=ObjectRef(provider=row.output_provider, bucket=row.output_bucket, key=row.output_key),
        etag=row.output_etag,
        size=row.output_size,
    )
