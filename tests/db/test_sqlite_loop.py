"""SQLite: a request's unit of work runs on the event loop's thread (app.db.unit), so it
must never sleep there: a write lock held by another process (the CLI, say) is waited
for with the loop free, and the connection goes back to the pool as everyone else
expects it (busy timeout, no transaction). And the one reach into aiosqlite
(``sqlite3_of``) gives the connection aiosqlite itself runs statements on."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text

from app.core.models import AccountChanges, AuditEvent, AuditQuery
from app.db.durable import CEILING, WalSync
from app.db.engine import BUSY_TIMEOUT_MS, sqlite3_of
from app.db.store import SqlStore
from tests.db.rows import NAME, VALUE, live_account, store_on


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[SqlStore]:
    async with store_on(sqlite_url) as store:
        yield store


def size(path: str) -> int:
    return os.stat(path).st_size


def database(store: SqlStore) -> str:
    path = store._engine.url.database
    assert path
    return path


def event(at: datetime) -> AuditEvent:
    return AuditEvent(at=at, event="update", outcome="ok", username="someone",
                      client="192.0.2.1", name=NAME, value_fingerprint="abcd", detail=None)


def other_process_writing(path: str) -> sqlite3.Connection:
    """What another process writing the file looks like: a connection of its own in the
    middle of a write transaction (it holds the write lock until it ends)."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE accounts SET note = 'the CLI was here'")
    return other


async def repeat(store: SqlStore, account: Any, at: datetime) -> bool:
    async with store.unit() as unit:
        return await unit.record_repeat(NAME, VALUE, at, account_id=account.id,
                                        event=event(at))


async def test_a_write_lock_held_elsewhere_is_waited_for_with_the_loop_free(
        store: SqlStore) -> None:
    """The repeat waits for the other writer without holding up the loop (in SQLite's busy
    handler it would sleep the loop until the lock went or 10 s passed, and fail), then
    writes everything once the lock is free."""
    account = await live_account(store)
    other = other_process_writing(database(store))
    at = datetime.now(UTC)
    try:
        waiting = asyncio.ensure_future(repeat(store, account, at))
        for _ in range(20):
            await asyncio.sleep(0.005)  # the loop turns: the unit is not sleeping on it
        assert not waiting.done()
        other.commit()
        assert await asyncio.wait_for(waiting, BUSY_TIMEOUT_MS / 1000)
    finally:
        other.close()
    (value,) = await store.values_at(NAME)
    assert value.updated_at == at
    assert (await store.get_account(account.username)).last_used_at == at  # type: ignore[union-attr]
    (row,) = await store.audit_events(AuditQuery(event="update"))
    assert row.at == at
    assert (await store.get_account(account.username)).note == "the CLI was here"  # type: ignore[union-attr]


async def test_a_lock_held_past_the_busy_timeout_fails_the_unit_and_leaves_nothing(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """As long as the busy timeout, no longer: then the unit fails as a statement past its
    busy timeout does, writes nothing, and the connection serves the next unit."""
    account = await live_account(store)
    (before,) = await store.values_at(NAME)
    monkeypatch.setattr("app.db.unit.BUSY_TIMEOUT_MS", 50)
    other = other_process_writing(database(store))
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await repeat(store, account, datetime.now(UTC))
    finally:
        other.rollback()
        other.close()
    assert await store.values_at(NAME) == [before]
    assert await store.audit_events(AuditQuery(event="update")) == []
    assert await repeat(store, account, datetime.now(UTC))


async def test_the_connection_goes_back_with_its_busy_timeout(store: SqlStore) -> None:
    """While a unit has the connection its busy timeout is 0; everyone after it (their
    statements wait in aiosqlite's thread) finds the usual one again, after a unit that
    committed and after one that failed."""
    account = await live_account(store)

    async def busy_timeout() -> int:
        async with store._engine.connect() as conn:
            return int((await conn.execute(text("PRAGMA busy_timeout"))).scalar_one())

    assert await repeat(store, account, datetime.now(UTC))
    assert await busy_timeout() == BUSY_TIMEOUT_MS
    with pytest.raises(RuntimeError):
        async with store.unit() as unit:
            await unit.account(account.username)
            raise RuntimeError("the request failed")
    assert await busy_timeout() == BUSY_TIMEOUT_MS


async def test_repeats_on_a_file_run_on_a_connection_of_their_own(store: SqlStore) -> None:
    """Batches of repeats take nothing from the pool (a checkout costs a hand-off to
    aiosqlite's thread and back; the pool's one connection stays free for the others),
    and their own connection is set up as the pool's are: foreign keys enforced, commits
    that leave the sync to the WAL sync and never checkpoint, and no sleeping in SQLite's
    busy handler on the loop's thread."""
    from sqlalchemy import event as sa_event

    accounts = [await live_account(store, f"h{i}") for i in range(8)]
    checkouts: list[object] = []
    sa_event.listen(store._engine.sync_engine.pool, "checkout",
                    lambda *args: checkouts.append(args))
    at = datetime.now(UTC)

    async def repeat_at(i: int) -> bool:
        async with store.unit() as unit:
            found = await unit.account(accounts[i].username)
            assert found is not None
            return await unit.record_repeat(f"_acme-challenge.h{i}.example.com", VALUE, at,
                                            account_id=found.id, event=event(at))

    assert all(await asyncio.gather(*(repeat_at(i) for i in range(8))))
    assert checkouts == []
    assert store._writer is not None
    writer = store._writer.conn
    assert [writer.execute(f"PRAGMA {pragma}").fetchone()[0] for pragma in (
        "foreign_keys", "synchronous", "wal_autocheckpoint", "busy_timeout",
        "journal_mode")] == [1, 1, 0, 0, "wal"]
    assert not writer.in_transaction
    (value,) = await store.values_at("_acme-challenge.h3.example.com")
    assert value.updated_at == at
    assert len(await store.audit_events(AuditQuery(event="update"))) == 8


async def test_account_reads_share_the_batches_connection_outside_transactions(
        store: SqlStore) -> None:
    """A unit's account read runs on the store's own connection, the batches' (its pages
    stay cached across their commits); with a transaction open on it, never inside that:
    on a read-only connection of its own, which sees only what was committed."""
    account = await live_account(store)
    assert await repeat(store, account, datetime.now(UTC))  # the own connection is open
    assert store._writer is not None
    writer = store._writer.conn
    ran: list[str] = []
    writer.set_trace_callback(ran.append)

    async def read() -> Any:
        async with store.unit() as unit:
            return await unit.account(account.username)

    assert (await read()).note is None
    assert any(sql.startswith("SELECT") and "FROM accounts" in sql for sql in ran)
    writer.execute("UPDATE accounts SET note = 'not committed'")
    assert writer.in_transaction
    ran.clear()
    try:
        assert (await read()).note is None
        assert ran == []
    finally:
        writer.rollback()
        writer.set_trace_callback(None)


async def test_kept_account_rows_follow_every_commit_of_another_connection(
        store: SqlStore) -> None:
    """An account read is kept while no other connection commits: the next read of it
    runs no SELECT. Another process's commit (the CLI revoking the credential) and one of
    this process's pool connection (an admin change) are both seen at the next read; a
    repeat's last-used time, committed on the store's own connection, is in the kept
    row too."""
    account = await live_account(store)
    assert await repeat(store, account, datetime.now(UTC))  # the own connection is open
    assert store._writer is not None
    ran: list[str] = []
    store._writer.conn.set_trace_callback(ran.append)

    async def read() -> Any:
        async with store.unit() as unit:
            return await unit.account(account.username)

    try:
        await read()
        ran.clear()
        assert (await read()).revoked_at is None
        assert not any("FROM accounts" in sql for sql in ran)  # kept

        at = datetime.now(UTC)
        assert await repeat(store, account, at)  # touches it, on the own connection
        assert (await read()).last_used_at == at

        cli = sqlite3.connect(database(store), isolation_level=None)
        try:
            cli.execute("UPDATE accounts SET revoked_at = '2026-01-01 00:00:00.000000'")
        finally:
            cli.close()
        assert (await read()).revoked_at is not None

        await store.update_account(account.username, AccountChanges(note="from the API"))
        assert (await read()).note == "from the API"
    finally:
        store._writer.conn.set_trace_callback(None)


async def test_sqlite3_of_is_the_connection_aiosqlite_runs_statements_on(
        tmp_path: Path) -> None:
    """If aiosqlite keeps its sqlite3 connection elsewhere one day, this fails (and
    ``sqlite3_of`` raises rather than hand out something else)."""
    async with aiosqlite.connect(tmp_path / "x.sqlite3", check_same_thread=False) as driver:
        await driver.execute("CREATE TEMP TABLE only_here (x INTEGER)")
        await driver.execute("INSERT INTO only_here VALUES (42)")
        raw = sqlite3_of(driver)
        assert isinstance(raw, sqlite3.Connection)
        # A temporary table is seen by its own connection only.
        assert raw.execute("SELECT x FROM only_here").fetchall() == [(42,)]
        raw.execute("INSERT INTO only_here VALUES (43)")
        assert list(await driver.execute_fetchall("SELECT count(*) FROM only_here")) == [(2,)]
        await driver.rollback()
    with pytest.raises(RuntimeError, match="aiosqlite"):
        sqlite3_of(object())  # type: ignore[arg-type]


async def test_a_commit_on_the_loop_never_checkpoints(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past SQLite's own threshold (1000 pages in the WAL) a unit's commit, on the loop's
    thread, copies nothing into the database file (that would be a sync of it there)."""
    monkeypatch.setattr("app.db.durable.WalSync._maybe_checkpoint", lambda self, size: None)
    account = await live_account(store)
    path = database(store)
    before = size(path)
    async with store.unit() as unit:
        for _ in range(15_000):  # some 4.5 MB of audit rows: past 1000 pages of 4 KiB
            await unit.audit(AuditEvent(
                at=datetime.now(UTC), event="update", outcome="ok", username="someone",
                client="192.0.2.1", name=NAME, value_fingerprint="abcd", detail="d" * 200))
    assert size(f"{path}-wal") > 4_096_000
    assert await repeat(store, account, datetime.now(UTC))
    assert size(path) == before


async def test_the_wal_is_checkpointed_from_a_thread_and_stays_bounded(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The WAL sync checkpoints when the WAL has grown past its bound, and the WAL then
    starts over: it stays within a few times the bound however many units commit."""
    bound = 64 * 1024
    monkeypatch.setattr("app.db.durable.CHECKPOINT_BYTES", bound)
    account = await live_account(store)
    wal = f"{database(store)}-wal"
    largest = 0
    for _ in range(300):  # each adds a few pages: some 3.5 MB unchecked
        assert await repeat(store, account, datetime.now(UTC))
        largest = max(largest, size(wal))
    assert store._durable is not None and store._durable.checkpoints >= 1
    assert largest < 8 * bound


async def test_writers_wait_for_a_checkpoint_that_is_behind(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint starved of CPU (its thread does not run): once the WAL has reached
    CEILING times the bound, writers wait for the checkpoint, and the WAL stops growing;
    when the checkpoint runs, they go on."""
    bound = 64 * 1024
    monkeypatch.setattr("app.db.durable.CHECKPOINT_BYTES", bound)
    runs = threading.Event()
    real = WalSync._checkpoint_now

    def starved(self: WalSync) -> None:
        runs.wait(30)
        real(self)

    monkeypatch.setattr(WalSync, "_checkpoint_now", starved)
    account = await live_account(store)
    wal = f"{database(store)}-wal"
    largest = done = 0

    async def writer() -> None:
        nonlocal largest, done
        for _ in range(200):  # each adds a few pages: some 2.5 MB unchecked
            assert await repeat(store, account, datetime.now(UTC))
            largest = max(largest, size(wal))
            done += 1

    writing = asyncio.ensure_future(writer())
    try:
        for _ in range(100):
            await asyncio.sleep(0.01)
        assert not writing.done() and done < 200
        held_at = size(wal)  # the held repeat's sync saw it past the ceiling
        assert largest < CEILING * bound <= held_at < (CEILING + 1) * bound
    finally:
        runs.set()
    await asyncio.wait_for(writing, 30)
    assert done == 200
    assert store._durable is not None and store._durable.checkpoints >= 1
