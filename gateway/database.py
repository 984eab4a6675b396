"""The gateway's database: SQLite embedded by default, PostgreSQL when several gateways share it.

    db = open_database(".cache/votes.sqlite3")                     # a file path: SQLite
    db = open_database("postgresql://gateway@db:5432/gateway")     # a URL: PostgreSQL (psycopg 3)
    with db.transaction() as tx:
        tx.execute("INSERT INTO t (a, b) VALUES (?, ?)", (1, "x"))
        rows = tx.execute("SELECT a, b FROM t WHERE a = ?", (1,)).fetchall()
    db.close()

One small seam over the two drivers, written once: `?` placeholders (rewritten to `%s` for
psycopg), `DOUBLE PRECISION` and `TEXT` columns, `INSERT ... ON CONFLICT` upserts, which both
speak; a unique-key violation raises `DuplicateKey` whichever database it came from.
Calls block: the gateway runs them in a worker thread (`asyncio.to_thread`), never on its loop.
SQLite opens a short connection per transaction (WAL, so readers never block the writer);
PostgreSQL uses a small connection pool.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol


class DuplicateKey(Exception):
    """An INSERT hit a unique key (a second vote on one comparison, for example)."""


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    @property
    def rowcount(self) -> int: ...


class Transaction(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...


class Database(Protocol):
    kind: str  # "sqlite" | "postgresql"

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]: ...

    def close(self) -> None: ...


def is_database_url(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


def open_database(target: str | Path) -> Database:
    """A PostgreSQL URL, or a SQLite file path (created with its directory on first use)."""
    if isinstance(target, str) and is_database_url(target):
        return PostgresDatabase(target)
    return SqliteDatabase(Path(target))


class _SqliteTransaction:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            return self._connection.execute(sql, tuple(params))
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                raise DuplicateKey(str(exc)) from exc
            raise


class SqliteDatabase:
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._prepared = False

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        if not self._prepared:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as db:
                db.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            self._prepared = True
        connection = sqlite3.connect(self.path, timeout=10)
        try:
            with connection:  # commits on success, rolls back on error
                yield _SqliteTransaction(connection)
        finally:
            connection.close()

    def close(self) -> None:
        """Nothing stays open between transactions."""


class _PostgresTransaction:
    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        import psycopg  # noqa: PLC0415 - only deployments that use PostgreSQL load the driver

        try:
            cursor: Cursor = self._connection.execute(sql.replace("?", "%s"), tuple(params))
        except psycopg.errors.UniqueViolation as exc:
            raise DuplicateKey(str(exc)) from exc
        return cursor


class PostgresDatabase:
    kind = "postgresql"

    def __init__(self, url: str, *, max_connections: int = 8) -> None:
        from psycopg_pool import ConnectionPool  # noqa: PLC0415 - only deployments that use PostgreSQL load it

        self._pool = ConnectionPool(url, min_size=1, max_size=max_connections, open=True, timeout=10)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._pool.connection() as connection, connection.transaction():
            yield _PostgresTransaction(connection)

    def close(self) -> None:
        self._pool.close()
