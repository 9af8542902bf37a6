"""Database URLs as people type them, and engines configured for each backend."""

from __future__ import annotations

import fcntl
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg  # type: ignore[import-untyped]  # (no stubs; only its exception classes are used)
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, PoolProxiedConnection

from app.errors import DatabaseBusy, DatabaseUrlError

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


# SQLite: how long a statement waits for another process's write lock (busy_timeout).
BUSY_TIMEOUT_MS = 10_000

# A pooled PostgreSQL connection idle longer than this is pinged before it is handed out.
PING_IDLE_SECONDS = 1.0


# What the database's drivers raise when it cannot be reached, is shutting down or
# starting up, or dropped the connection: a wait-and-retry, not a bug.
UNREACHABLE_ERRORS: tuple[type[Exception], ...] = (
    ConnectionError,  # refused, reset, aborted
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,  # starting up, shutting down
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.InterfaceError,  # "connection is closed"
)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is out of reach (rather than that a statement
    is wrong): SQLAlchemy's wrapper of a lost connection, or a driver's own error, in
    the exception or its causes."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, sqlalchemy.exc.DBAPIError):
            if seen.connection_invalidated or isinstance(seen.orig, UNREACHABLE_ERRORS):
                return True
        elif isinstance(seen, UNREACHABLE_ERRORS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def async_url(raw: str) -> URL:
    """``sqlite:///f``, ``postgresql://u@h/db`` and friends, as SQLAlchemy async URLs."""
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise DatabaseUrlError("DATABASE_URL is not a database URL") from exc
    backend, _, driver = url.drivername.partition("+")
    if backend not in _ASYNC_DRIVERS:
        raise DatabaseUrlError(
            f"DATABASE_URL scheme {url.drivername!r}: use sqlite:///PATH or postgresql://…"
        )
    if driver not in ("", "aiosqlite", "asyncpg", "psycopg2", "psycopg", "pysqlite"):
        raise DatabaseUrlError(f"DATABASE_URL driver {driver!r} is not supported")
    url = url.set(drivername=_ASYNC_DRIVERS[backend])
    if url.drivername.startswith("postgresql"):
        # libpq spells TLS as sslmode=…; asyncpg as ssl=….
        query = dict(url.query)
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
            url = url.set(query=query)
    return url


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def sqlite_path(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:":
        return None
    return Path(database)


def create_engine(raw_url: str, *, pool_size: int = 10, statement_timeout_ms: int = 10_000,
                  pool: bool = True, ping_idle: float = PING_IDLE_SECONDS) -> AsyncEngine:
    url = async_url(raw_url)
    kwargs: dict[str, Any] = {}
    if not pool:
        kwargs["poolclass"] = NullPool
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if pool:
                # SQLite has one writer. One connection, handed out in turn, serializes
                # this process's transactions in the pool's queue instead of in SQLite's
                # busy handler, which sleeps in growing steps (the p99 of 0.2-2 s seen
                # from 4 concurrent writers up) and rolls a read-then-write back.
                kwargs.update(pool_size=1, max_overflow=0,
                              pool_timeout=statement_timeout_ms / 1000,
                              # Every user of a connection ends its transaction (SQLAlchemy's
                              # Connection.close rolls back an open one): the pool's own
                              # rollback on return would be one more thread hand-off each.
                              pool_reset_on_return=None)
        # check_same_thread off: a request's unit of work runs its statements on the event
        # loop's thread while it has the connection to itself (app.db.unit), besides
        # aiosqlite's own thread running everyone else's, one after the other.
        kwargs["connect_args"] = {"timeout": statement_timeout_ms / 1000,
                                  "check_same_thread": False}
    else:
        if pool:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_timeout=10)
        kwargs.update(
            # A stalled statement must not freeze the service for good.
            connect_args={
                "command_timeout": statement_timeout_ms / 1000,
                "timeout": 5,  # to connect: a database that does not answer is a 503, soon
                "server_settings": {
                    "statement_timeout": str(statement_timeout_ms),
                    "idle_in_transaction_session_timeout": str(statement_timeout_ms * 6),
                    "application_name": "acme-delegate",
                },
            },
        )
    # An error's text (and so a logged traceback) never carries the statement's
    # parameters: challenge values and key hashes among them.
    engine = create_async_engine(url, hide_parameters=True, **kwargs)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect",
                     lambda dbapi_connection, _record: sqlite_pragmas(dbapi_connection))
    elif pool:
        _ping_when_idle(engine, ping_idle)
    return engine


def _ping_when_idle(engine: AsyncEngine, idle: float) -> None:
    """Ping a pooled connection before handing it out only when it sat idle for ``idle``
    seconds. SQLAlchemy's ``pool_pre_ping`` pings at every checkout, and on asyncpg a ping
    outside a transaction is three round trips (BEGIN, the ping, ROLLBACK): more than a
    whole repeat's two (``app.db.unit``). A connection back from work less than ``idle``
    ago was alive then; one the database dropped meanwhile fails its request like any
    statement that loses its connection (a 503, and the pool drops the connections
    made before). A dead idle one is replaced, unseen (``DisconnectionError``: the pool
    connects afresh)."""
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    def returned(_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["returned_at"] = time.monotonic()

    def checkout(connection: Any, record: ConnectionPoolEntry,
                 _proxy: PoolProxiedConnection) -> None:
        returned_at = record.info.get("returned_at")
        if returned_at is not None and time.monotonic() - returned_at < idle:
            return
        try:
            dialect.do_ping(connection)
        except Exception as exc:
            raise sqlalchemy.exc.DisconnectionError(type(exc).__name__) from exc

    event.listen(pool, "connect", returned)  # new: as good as just back from work
    event.listen(pool, "checkin", returned)
    event.listen(pool, "checkout", checkout)


def sqlite_pragmas(dbapi_connection: Any) -> None:
    """What every connection to a SQLite database is set up with: the engine's, and the
    store's own (``app.db.unit.own_connection``)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # Commits append to the WAL without a sync of their own; SqlStore syncs the WAL
    # after each commit, one sync shared by concurrent commits (app.db.durable).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # No checkpoint inside a commit (a request's commits run on the event loop's thread):
    # app.db.durable checkpoints from a thread when the WAL grows, and with no size limit
    # kept the WAL file is cut back when it starts over, so its size says what is left.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.execute("PRAGMA journal_size_limit=0")
    cursor.close()


def sqlite3_of(driver: aiosqlite.Connection) -> sqlite3.Connection:
    """The ``sqlite3`` connection under an aiosqlite one, to run statements on it directly
    (on the event loop's thread) while nobody else can use it: checked out of the pool.

    aiosqlite has no public way to it; this is the one place that reaches in (its
    ``_conn`` in aiosqlite 0.22). tests/db/test_engine.py checks that what it
    gives is the connection aiosqlite runs statements on, and this fails loudly rather
    than handing out anything else."""
    raw = getattr(driver, "_conn", None)
    if not isinstance(raw, sqlite3.Connection):
        raise RuntimeError(
            f"aiosqlite {getattr(aiosqlite, '__version__', '?')} no longer keeps its sqlite3 "
            "connection as _conn: app.db.engine.sqlite3_of needs updating")
    return raw


@contextmanager
def sqlite_owner(raw_url: str) -> Iterator[None]:
    """Hold the one-process lock of a SQLite database (a ``.lock`` file beside it).

    SQLite deployments are one process: name locks live in its memory. This keeps a
    second ``serve``, or a ``reconcile`` run beside a server, from breaking that.
    Does nothing for PostgreSQL, where advisory locks are shared by every process.
    """
    url = async_url(raw_url)
    path = sqlite_path(url) if is_sqlite(url) else None
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatabaseBusy(
                f"another acme-delegate process is using {path}: SQLite takes one process "
                "(use PostgreSQL for replicas, or stop the server first)"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
