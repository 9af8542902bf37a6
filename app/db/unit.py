"""One request's work (``app.core.ports.Unit``), in SQLAlchemy Core: the ORM's identity
map and flush would cost more than they give to these few statements, whose shapes are
built once here and compiled once per engine.

On SQLite the compiled statements run on the event loop's own thread, directly on the
sqlite3 connection under the pool's one connection (or, for the store's batches, on a
connection of the store's own, ``own_connection``): while the unit has it nobody else
in the process can use it, and a statement there costs tens of
microseconds where a hand-off to aiosqlite's thread costs about a hundred of CPU and
leaves the connection checked out while the busy loop gets round to the next step
(every other request queues behind it). Two things must then never happen on the
loop: sleeping in SQLite's busy handler (another process, the CLI say, or a checkpoint
holding the write lock) and checkpointing the WAL (a sync of the database file). The
unit sets the connection's busy timeout to 0 while it has it, and waits for the lock
with the loop free (``LoopSqlite``); the engine's connections never checkpoint by
themselves, the WAL sync's thread does (``app.db.durable``).

A request's first steps go to the store (``UnitBatches``): its account read, and its
repeat if nothing of its own came before. Concurrent requests' repeats share one
transaction (``app.db.batches``): one commit (and, on SQLite, one wait for the WAL's
sync) for the batch; on PostgreSQL their reads share one round trip, and on a SQLite
file each read runs on the loop's thread on the batches' connection, or is answered
from the rows kept since no other connection committed (``LoopReader``). A unit that
took those steps alone took a connection for each, and that, not the statements, was
most of what a repeat cost.

On PostgreSQL every round trip costs CPU on both sides (the database shares the
machine), so a repeat is two, each shared with its batch: the accounts, read outside
any transaction, then ``RECORD_REPEAT`` once per repeat, the whole repeat in one
statement that never waits on a lock, in one pipeline (asyncpg's ``fetchmany``: one
implicit transaction). Both go to the checked-out connection's asyncpg connection
directly, compiled once (SQLAlchemy's asyncpg adapter would send a BEGIN before the
first and a COMMIT after the last). Any other write (a refusal's audit row, ``settle``,
a key rehash) goes through SQLAlchemy, which begins a transaction at the first of them;
``commit`` ends it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from collections import namedtuple
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import aiosqlite
import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import (
    BigInteger,
    Table,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import ClauseElement, Select
from sqlalchemy.sql.compiler import SQLCompiler

from app.core.models import Account, AuditEvent, ValueState
from app.db.batches import Batches
from app.db.engine import BUSY_TIMEOUT_MS, sqlite3_of, sqlite_pragmas, unavailable
from app.db.locks import advisory_key
from app.db.tables import AccountRow, AuditRow, TxtValueRow

_accounts = cast(Table, AccountRow.__table__)
_values = cast(Table, TxtValueRow.__table__)
_audit = cast(Table, AuditRow.__table__)

ACCOUNT_BY_USERNAME = select(_accounts).where(_accounts.c.username == bindparam("username"))
# The value ``txt`` live at the name ``target``.
_LIVE_VALUE = (_values.c.name == bindparam("target"), _values.c.value == bindparam("txt"),
               _values.c.state == ValueState.LIVE.value)
BUMP_LIVE = update(_values).where(*_LIVE_VALUE).values(updated_at=bindparam("at"))
# PostgreSQL: the same, only if the name's transaction-level advisory lock is free (then
# held until the commit) and nobody holds a lock on the value's row or the account's
# (``SKIP LOCKED``: then locked until the commit): one round trip for "lock, check,
# bump" that never waits on a lock. A repeat is batched with other requests'
# (``app.db.batches``): one waiting would hold up all of them.
_FREE_ACCOUNT = exists(select(_accounts.c.id).where(_accounts.c.id == bindparam("account"))
                       .with_for_update(skip_locked=True))
_FREE_LIVE = select(_values.c.id).where(*_LIVE_VALUE).with_for_update(skip_locked=True)
BUMP_LIVE_LOCKED = (update(_values)
                    .where(_values.c.id.in_(_FREE_LIVE), _FREE_ACCOUNT,
                           func.pg_try_advisory_xact_lock(bindparam("key", type_=BigInteger)))
                    .values(updated_at=bindparam("at")))
SETTLE = (update(_values).where(_values.c.id == bindparam("value_id"))
          .values(state=bindparam("live"), record_id=bindparam("rid"),
                  updated_at=bindparam("settled_at")))
DROP_VALUE = delete(_values).where(_values.c.id == bindparam("old_id"))
TOUCH = (update(_accounts).where(_accounts.c.id == bindparam("account_id"))
         .values(last_used_at=bindparam("used_at")))
REHASH = (update(_accounts)
          .where(_accounts.c.username == bindparam("who"),
                 _accounts.c.key_hash == bindparam("expected"))
          .values(key_hash=bindparam("key_hash")))
_AUDIT_FIELDS = ("at", "event", "outcome", "username", "client", "name",
                 "value_fingerprint", "detail")
# Its columns spelt out (``count`` 1): compiled once, it takes exactly these values.
AUDIT = insert(_audit).values({**{f: bindparam(f) for f in _AUDIT_FIELDS}, "count": 1})
# PostgreSQL: last-used and the audit row in one round trip (a data-modifying WITH runs
# once whether or not the statement reads it).
# Every value of it is a named parameter that no column of ``accounts`` is called: an
# execution's extra keys that match column names would join the UPDATE's SET clause.
AUDIT_AND_TOUCH = (insert(_audit)
                   .values({**{f: bindparam(f"audit_{f}") for f in _AUDIT_FIELDS},
                            "count": 1})
                   .add_cte(TOUCH.cte("touched")))
# The newest row of the same refusal (event, outcome, client, username, name) begun since
# a time; ``IS NOT DISTINCT FROM`` so that missing fields match (SQLite spells it IS).
SAME_REFUSAL = (
    select(_audit.c.id)
    .where(_audit.c.event == bindparam("event"), _audit.c.outcome == bindparam("outcome"),
           _audit.c.client.is_not_distinct_from(bindparam("client")),
           _audit.c.username.is_not_distinct_from(bindparam("username")),
           _audit.c.name.is_not_distinct_from(bindparam("name")),
           _audit.c.at >= bindparam("since"))
    .order_by(_audit.c.id.desc()).limit(1))
REPEAT = (update(_audit).where(_audit.c.id == bindparam("row_id"))
          .values(count=_audit.c.count + 1, last_at=bindparam("repeat_at")))

# PostgreSQL: a whole repeat in one statement: the bump (only if the name's advisory lock
# is free: a session holding it, ``name_lock``'s, works on the name; and only if no row
# it needs is locked), and only if it matched, last-used and the audit row
# (data-modifying WITHs run once each, whether or not the statement reads them). True if
# it matched.
# Named parameters that no column of txt_values or accounts is called, as above.
_bumped = BUMP_LIVE_LOCKED.returning(_values.c.id).cte("bumped")
_matched = exists(select(_bumped.c.id))
RECORD_REPEAT = (
    select(_matched.label("recorded"))
    .add_cte(update(_accounts).where(_accounts.c.id == bindparam("account"), _matched)
             .values(last_used_at=bindparam("at")).cte("touched"))
    .add_cte(insert(_audit).from_select(
        [*_AUDIT_FIELDS, "count"],
        select(*(bindparam(f"audit_{f}", type_=_audit.c[f].type) for f in _AUDIT_FIELDS),
               literal(1)).where(_matched)).cte("audited")))


class _Compiled:
    """A statement compiled once for a driver called directly (sqlite3, asyncpg): its
    SQL, its parameters in order with SQLAlchemy's own conversions (a datetime is stored
    exactly as everywhere else), and for a SELECT its columns' conversions and a row type
    with their names."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self._compiled = compiled
        self.sql = compiled.string
        self._binds = [
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup or ()]
        self._columns: list[Any] = []
        self._row: Any = None
        if isinstance(statement, Select):
            columns = list(statement.selected_columns)
            self._columns = [c.type.dialect_impl(dialect).result_processor(dialect, None)
                             for c in columns]
            self._row = namedtuple("_Row", [c.name for c in columns])  # type: ignore[misc]

    def parameters(self, given: dict[str, Any]) -> list[Any]:
        values = self._compiled.construct_params(given)
        return [values[name] if convert is None else convert(values[name])
                for name, convert in self._binds]

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[Any]:
        if self._row is None:
            return list(raw)
        return [self._row(*(value if convert is None else convert(value)
                             for value, convert in zip(row, self._columns, strict=True)))
                for row in raw]


_compiled: weakref.WeakKeyDictionary[Dialect, dict[ClauseElement, _Compiled]] = (
    weakref.WeakKeyDictionary())


def _for_driver(statement: ClauseElement, dialect: Dialect) -> _Compiled:
    known = _compiled.setdefault(dialect, {})
    found = known.get(statement)
    if found is None:
        found = known[statement] = _Compiled(statement, dialect)
    return found


class _Rows:
    """What the unit's callers read of a result: ``first``, ``scalar``, ``rowcount``
    (the rows a statement changed, else the rows it returned)."""

    def __init__(self, rows: list[Any], changed: int = -1) -> None:
        self._rows = rows
        self.rowcount = changed if changed >= 0 else len(rows)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None


# How long a unit waits between tries for a write lock another process holds: doubling
# from the first to the last, the busy timeout in all.
_FIRST_WAIT, _LAST_WAIT = 0.001, 0.01


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


class LoopSqlite:
    """A unit's statements on a sqlite3 connection, on the event loop's thread: the pooled
    connection's, with its busy timeout 0 until ``release``, or one of the store's own
    (``own_connection``), whose busy timeout stays 0. A lock held by another
    process fails a statement at once instead of sleeping the loop in SQLite's busy
    handler. Until the unit has written, such a failure rolls its transaction back (it
    holds nothing yet) and the statement is tried again after an asynchronous wait, for
    as long as the busy timeout; once it has written it holds the write lock until its
    commit, so no later statement of it meets one (and one that did would fail the unit)."""

    def __init__(self, conn: sqlite3.Connection, *, pooled: bool = True) -> None:
        self.conn = conn
        self._pooled = pooled
        self._wrote = False
        conn.execute("PRAGMA busy_timeout=0")

    async def run(self, sql: str, args: Sequence[Any]) -> tuple[list[Any], int]:
        """The statement's rows, and how many it changed (an UPDATE's, counted by SQLite
        itself: a RETURNING clause to count them would double its cost), else -1."""
        conn = self.conn
        deadline, wait = time.monotonic() + BUSY_TIMEOUT_MS / 1000, _FIRST_WAIT
        while True:
            try:
                cursor = conn.execute(sql, args)
                rows = cursor.fetchall()
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or self._wrote or time.monotonic() >= deadline:
                    raise
            else:
                self._wrote = self._wrote or conn.in_transaction
                return rows, cursor.rowcount
            if conn.in_transaction:
                conn.rollback()  # begun by the statement that failed: nothing in it
            await asyncio.sleep(wait)
            wait = min(wait * 2, _LAST_WAIT)

    def release(self) -> None:
        """At the unit's end: no transaction left open (a failed commit's), and before a
        pooled connection goes back, the busy timeout everyone else's statements expect
        (they wait in aiosqlite's thread). A connection of the store's own
        (``own_connection``) runs on the loop's thread only: its timeout stays 0."""
        self._wrote = False
        try:
            if self.conn.in_transaction:
                self.conn.rollback()
        finally:
            if self._pooled:
                self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def own_connection(owner: object, database: str, *, read_only: bool) -> LoopSqlite:
    """A sqlite3 connection of the store's own to a SQLite file, for the event loop's
    thread only, set up as the engine's are (``app.db.engine``: foreign keys on, no
    checkpoint by itself, ...), busy timeout 0 for good; closed with ``owner``."""
    conn = sqlite3.connect(database, check_same_thread=False)
    sqlite_pragmas(conn)
    if read_only:
        conn.execute("PRAGMA query_only=1")
    weakref.finalize(owner, conn.close)
    return LoopSqlite(conn, pooled=False)


def _repeat_params(repeat: Repeat) -> dict[str, Any]:
    """``RECORD_REPEAT``'s parameters."""
    return {"target": repeat.name, "txt": repeat.value, "at": repeat.at,
            "key": advisory_key(repeat.name), "account": repeat.account_id,
            **{f"audit_{k}": v for k, v in audit_row(repeat.event).items()}}


def audit_row(event: AuditEvent) -> dict[str, Any]:
    return {"at": event.at, "event": event.event, "outcome": event.outcome,
            "username": event.username, "client": event.client[:64] if event.client else None,
            "name": event.name, "value_fingerprint": event.value_fingerprint,
            "detail": event.detail[:200] if event.detail else None}


@dataclass(frozen=True, slots=True)
class Repeat:
    """A ``record_repeat`` waiting for its batch."""

    name: str
    value: str
    at: datetime
    account_id: int
    event: AuditEvent


@dataclass(frozen=True, slots=True)
class UnitBatches:
    """What units that have not begun a transaction of their own hand to the store:
    their account reads (a batch, ``SqlUnit.accounts_named``, or on a SQLite file a
    ``LoopReader``), and their repeats (a batch, ``SqlUnit.record_repeats``), each batch
    in a unit of its own (``app.db.batches``)."""

    accounts: Callable[[str], Awaitable[Any]]  # a username: its row, or None
    repeats: Batches[Repeat, bool]


class LoopReader:
    """Account reads on a SQLite file, on the event loop's thread, on the connection the
    store's batches of repeats write on (``writer``): in WAL mode a read never waits for
    a writer, and costs tens of microseconds, less than a turn through a batch. On that
    connection its pages stay cached across the batches' commits, its own: a connection
    that did not write finds its cache emptied by every commit of another, and reads in
    about three times as long. A batch runs from its first write to its commit without
    letting the loop turn, so no transaction is open when a read starts; if one ever
    were, the read goes to a read-only connection of its own. Busy (a checkpoint
    restarting the WAL, rarely): waited for with the loop free, as a unit does.

    The rows read are kept (the newest ``KEPT``) for as long as no other connection
    commits anything: SQLite's ``data_version`` of a connection changes with every
    commit of another (another process's included: the CLI revoking a credential, say)
    and with none of its own. One pragma instead of a read of the row, and the row is
    exactly what a read would give: the only change the own connection makes to an
    account, its last-used time, is applied to the kept row once committed
    (``touched``)."""

    KEPT = 4096

    def __init__(self, database: str, dialect: Dialect,
                 writer: Callable[[], LoopSqlite]) -> None:
        self._database = database
        self._compiled = _for_driver(ACCOUNT_BY_USERNAME, dialect)
        self._writer = writer
        self._reader: LoopSqlite | None = None
        self._version: int | None = None
        self._kept: dict[str, Any] = {}  # username: row, oldest first
        self._usernames: dict[int, str] = {}  # of the rows kept, by account id

    async def __call__(self, username: str) -> Any:
        sqlite = self._writer()
        if sqlite.conn.in_transaction:
            if self._reader is None:
                self._reader = own_connection(self, self._database, read_only=True)
            return await self._read(self._reader, username)
        ((version,),), _ = await sqlite.run(_DATA_VERSION, ())
        if version != self._version:
            self._kept.clear()
            self._usernames.clear()
            self._version = version
        row = self._kept.get(username)
        if row is None:
            row = await self._read(sqlite, username)
            if row is not None and self._version == version:
                if len(self._kept) >= self.KEPT:
                    self._usernames.pop(self._kept.pop(next(iter(self._kept))).id, None)
                self._kept[username] = row
                self._usernames[row.id] = username
        return row

    async def _read(self, sqlite: LoopSqlite, username: str) -> Any:
        compiled = self._compiled
        rows, _ = await sqlite.run(compiled.sql, compiled.parameters({"username": username}))
        return _Rows(compiled.rows(rows)).first()

    def touched(self, used: Sequence[tuple[int, datetime]]) -> None:
        """The own connection committed these accounts' last-used times."""
        for account_id, at in used:
            username = self._usernames.get(account_id)
            if username is not None:
                self._kept[username] = self._kept[username]._replace(last_used_at=at)


_DATA_VERSION = "PRAGMA data_version"


class SqlUnit:
    """A connection, and the transaction of its writes (what is atomic:
    ``app.core.ports.Unit``); the names it locked in this process are released when it
    ends. On PostgreSQL a repeat's lock is also a transaction-level advisory lock: the
    same key as ``SqlStore.name_lock``'s session-level one, so the two exclude each
    other, and the end of the repeat's transaction (its one statement's, or the unit's
    when it joins one) releases it, crash included, with no statement of its own."""

    def __init__(self, engine: AsyncEngine, *, local: Any, postgres: bool,
                 to_account: Callable[[Any], Account],
                 on_audit: Callable[[AuditEvent], None] | None,
                 durable: Callable[[], Awaitable[None]] | None = None,
                 batches: UnitBatches | None = None,
                 own: LoopSqlite | None = None) -> None:
        self._engine = engine
        self._batches = batches
        self._own = own  # a SQLite connection of the store's own, instead of the pool's
        self._conn: AsyncConnection | None = None  # taken at the first statement
        self._sqlite: LoopSqlite | None = None  # its sqlite3 connection, on SQLite
        self._pg: Any = None  # its driver's (an asyncpg connection), on PostgreSQL
        self._pooled: PoolProxiedConnection | None = None  # the pool's handle on it
        self._local = local
        self._postgres = postgres
        self._to_account = to_account
        self._on_audit = on_audit
        self._durable = durable
        self._held: list[tuple[str, asyncio.Lock]] = []
        self._audited: list[AuditEvent] = []
        self._touch: dict[str, Any] | None = None  # a last-used not sent yet (PostgreSQL)
        self._open = True

    async def _connect(self) -> AsyncConnection | None:
        """The pool's connection, taken at the first statement; None for a unit on a
        connection of the store's own (its statements run on ``self._sqlite``)."""
        if not self._open:
            raise RuntimeError("this unit of work has ended")
        if self._own is not None:
            self._sqlite = self._own
            return None
        if self._conn is None:
            self._conn = await self._engine.connect()
            try:
                raw = await self._conn.get_raw_connection()
                if self._postgres:
                    self._pooled, self._pg = raw, raw.driver_connection
                else:
                    self._sqlite = LoopSqlite(
                        sqlite3_of(cast(aiosqlite.Connection, raw.driver_connection)))
            except BaseException:
                await self._close()
                raise
        return self._conn

    async def _execute(self, statement: Any, params: dict[str, Any]) -> Any:
        conn = await self._connect()
        if self._sqlite is not None:
            compiled = _for_driver(statement, self._engine.dialect)
            # sqlite3 opens the transaction itself before the first write.
            rows, changed = await self._sqlite.run(compiled.sql, compiled.parameters(params))
            return _Rows(compiled.rows(rows), changed)
        assert conn is not None  # PostgreSQL: always the pool's
        if self._touch is not None:
            touch, self._touch = self._touch, None
            await conn.execute(TOUCH, touch)  # kept in order with what follows
        return await conn.execute(statement, params)

    def _untouched(self) -> bool:
        """Nothing of this unit's own begun (no connection taken, nothing waiting to be
        sent): its read or repeat may go to the store-wide batch."""
        return self._batches is not None and self._conn is None and self._touch is None

    async def _fetch_many(self, statement: Any, many: Sequence[dict[str, Any]]) -> _Rows:
        """PostgreSQL: one statement run once per parameter set, outside any transaction
        of this unit, compiled once: one round trip (asyncpg's ``fetchmany``: one
        pipeline ending in one Sync, so the whole is one implicit transaction, committed
        or rolled back together), the rows of every run in order. SQLAlchemy never sees
        it, so what it would do on a failure is done here: a lost connection leaves the
        pool, and the pool's older ones are replaced at their next checkout (the database
        restarted, likely). Any other failure but the database's own answer (an error it
        reported, after which the connection is ready again) leaves this connection's
        state unknown: a statement cancelled with its request, or one interrupted while
        the database shut down (asyncpg then refuses the connection's next statement,
        "another operation is in progress"). That connection leaves the pool too, as
        SQLAlchemy does."""
        conn = await self._connect()
        assert conn is not None  # PostgreSQL: always the pool's
        compiled = _for_driver(statement, self._engine.dialect)
        try:
            rows = await self._pg.fetchmany(
                compiled.sql, [compiled.parameters(params) for params in many])
        except BaseException as exc:
            lost = unavailable(exc)
            if lost and self._pooled is not None:
                self._engine.sync_engine.pool._invalidate(  # as SQLAlchemy's own do
                    self._pooled, exc, _checkin=False)
            if lost or not isinstance(exc, asyncpg.PostgresError):
                await conn.invalidate(exc)
            if not lost and isinstance(exc, asyncpg.InternalClientError):
                # Seen when the database shut down while the connection sat in the pool:
                # its FATAL message left asyncpg's protocol mid-operation. The connection
                # is gone; the request is a 503, like any lost one.
                raise ConnectionResetError("the database connection was left in an "
                                           "unknown state") from exc
            raise
        return _Rows(compiled.rows(rows))

    async def account(self, username: str) -> Account | None:
        if self._untouched():
            assert self._batches is not None
            row = await self._batches.accounts(username)
        else:
            row = (await self._execute(ACCOUNT_BY_USERNAME, {"username": username})).first()
        return self._to_account(row) if row is not None else None

    async def accounts_named(self, usernames: Sequence[str]) -> list[Any]:
        """A batch of account reads (``UnitBatches.accounts``): each username's row or
        None, in order, in one trip."""
        wanted = list(dict.fromkeys(usernames))
        if self._postgres:
            rows = (await self._fetch_many(ACCOUNT_BY_USERNAME,
                                           [{"username": u} for u in wanted]))._rows
        else:
            rows = [row for u in wanted for row in
                    (await self._execute(ACCOUNT_BY_USERNAME, {"username": u}))._rows]
        found = {row.username: row for row in rows}
        return [found.get(u) for u in usernames]

    async def record_repeat(self, name: str, value: str, at: datetime, *, account_id: int,
                            event: AuditEvent) -> bool:
        lock = await self._local.try_hold(name)
        if lock is None:
            return False  # another request of this process works on the name
        self._held.append((name, lock))
        repeat = Repeat(name, value, at, account_id, event)
        if self._untouched():
            # Committed with the batch's other repeats before this returns (the name stays
            # this unit's until it ends, so no other unit of this process is in the batch
            # for it).
            assert self._batches is not None
            return await self._batches.repeats(repeat)
        if self._postgres:
            # Joins the transaction of the unit's writes before it.
            if not (await self._execute(RECORD_REPEAT, _repeat_params(repeat))).scalar():
                return False
            self._audited.append(event)  # heard when the unit commits
            return True
        return await self._sqlite_repeat(repeat)

    async def _sqlite_repeat(self, repeat: Repeat) -> bool:
        result = await self._execute(BUMP_LIVE,
                                     {"target": repeat.name, "txt": repeat.value,
                                      "at": repeat.at})
        if not getattr(result, "rowcount", 0):
            return False
        await self.touch_account(repeat.account_id, repeat.at)
        await self.audit(repeat.event)
        return True

    async def record_repeats(self, repeats: Sequence[Repeat]) -> list[bool]:
        """A batch of repeats (``UnitBatches.repeats``), each as ``record_repeat`` would
        record it, all in one transaction: on PostgreSQL one round trip, committed when
        this returns; on SQLite one commit (the unit's) and one wait for the WAL's sync,
        with the unit's end. The callers hold their names' locks in this process."""
        if not self._postgres:
            return [await self._sqlite_repeat(repeat) for repeat in repeats]
        rows = (await self._fetch_many(RECORD_REPEAT,
                                       [_repeat_params(r) for r in repeats]))._rows
        recorded = [bool(row[0]) for row in rows]
        if self._on_audit is not None:
            for repeat, done in zip(repeats, recorded, strict=True):
                if done:
                    self._on_audit(repeat.event)  # committed now: the audit row counts
        return recorded

    async def touch_account(self, account_id: int, at: datetime) -> None:
        touch = {"account_id": account_id, "used_at": at}
        if self._postgres:
            self._touch = touch  # sent with the next statement (the audit row's, usually)
        else:
            await self._execute(TOUCH, touch)

    async def set_key_hash(self, username: str, key_hash: str, *, expected: str) -> bool:
        result = await self._execute(
            REHASH, {"who": username, "expected": expected, "key_hash": key_hash})
        return bool(getattr(result, "rowcount", 0))

    async def settle(self, value_id: int, record_id: int, at: datetime, *,
                     replaces: int | None = None) -> None:
        if replaces is not None:
            await self._execute(DROP_VALUE, {"old_id": replaces})
        await self._execute(SETTLE, {"value_id": value_id, "rid": record_id,
                                     "live": ValueState.LIVE.value, "settled_at": at})

    async def audit(self, event: AuditEvent) -> None:
        if self._touch is not None:
            params = {f"audit_{k}": v for k, v in audit_row(event).items()}
            params, self._touch = {**params, **self._touch}, None
            await self._execute(AUDIT_AND_TOUCH, params)
        else:
            await self._execute(AUDIT, audit_row(event))
        self._audited.append(event)

    async def audit_repeated(self, event: AuditEvent, window: timedelta) -> None:
        """Record a refusal, or count it on the row of the same refusal begun within
        ``window``: a flood of refusals grows a count, not the trail, and pushes no real
        event out of the newest-first view. (Two replicas racing may each begin a row.)"""
        row = audit_row(event)
        found = (await self._execute(SAME_REFUSAL, {
            "event": row["event"], "outcome": row["outcome"], "client": row["client"],
            "username": row["username"], "name": row["name"],
            "since": event.at - window})).scalar()
        if found is None:
            await self._execute(AUDIT, row)
        else:
            await self._execute(REPEAT, {"row_id": found, "repeat_at": event.at})
        self._audited.append(event)

    async def commit(self) -> None:
        if not self._open:
            return
        try:
            if self._touch is not None:
                touch, self._touch = self._touch, None
                await self._execute(TOUCH, touch)
            wrote = self._conn is not None
            if self._sqlite is not None:
                wrote = self._sqlite.conn.in_transaction
                if wrote:
                    self._sqlite.conn.commit()
            elif self._conn is not None:
                await self._conn.commit()
        except BaseException:
            await self._end()
            raise
        await self._end()
        if wrote and self._durable is not None:
            await self._durable()  # on disk before the answer
        if self._on_audit is not None:
            for event in self._audited:
                self._on_audit(event)

    async def rollback(self) -> None:
        if not self._open:
            return
        try:
            if self._sqlite is not None:
                if self._sqlite.conn.in_transaction:
                    self._sqlite.conn.rollback()
            elif self._conn is not None:
                await self._conn.rollback()
        finally:
            await self._end()

    async def _end(self) -> None:
        """Give the connection back and the names free (the locks after the transaction)."""
        self._open = False
        await self._close()

    async def _close(self) -> None:
        try:
            if self._sqlite is not None:
                # The pool does not reset connections: a failed commit's transaction is
                # rolled back here, and the busy timeout restored.
                sqlite, self._sqlite = self._sqlite, None
                sqlite.release()
        finally:
            try:
                if self._conn is not None:
                    await self._conn.close()
            finally:
                while self._held:
                    self._local.release(*self._held.pop())
