"""A way into the ledger's rows and statements for tests that look at what no Ledger method shows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.orm import Session

from conveyor.ledger.store import Ledger


def ledger_session(ledger: Ledger) -> Session:
    """A session on the ledger's database for a test's own queries. The ledger hands out no
    session, so this reaches for its read engine: tests only."""
    return Session(ledger._read_engine, expire_on_commit=False)


@contextmanager
def statements_run(ledger: Ledger) -> Iterator[list[str]]:
    """The SQL statements (BEGIN aside) the ledger's engines run inside the block."""
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement != "BEGIN" and not statement.startswith("BEGIN "):
            statements.append(statement)

    engines = (ledger._read_engine, ledger._write_engine)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)
