"""The request's unit of work (app.db.unit) on each database: what it writes reads back
exactly as the rest of the store writes it, a failed unit leaves nothing behind, and on
SQLite a repeat never hands off to the database driver's thread."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite
import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text

from app.core.models import AuditEvent, AuditQuery, ValueState
from app.db.engine import create_engine, unavailable
from app.db.locks import advisory_key
from app.db.store import SqlStore
from tests.db.rows import NAME, VALUE, live_account
from tests.support.wire import RoundTripCounter


def event(at: datetime, outcome: str = "ok") -> AuditEvent:
    return AuditEvent(at=at, event="update", outcome=outcome, username="someone",
                      client="192.0.2.1", name=NAME, value_fingerprint="abcd", detail=None)


async def test_a_repeat_reads_back_exactly_as_written(store: SqlStore) -> None:
    account = await live_account(store)
    at = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    async with store.unit() as unit:
        assert (await unit.account(account.username)) == account
        assert await unit.record_repeat(NAME, VALUE, at, account_id=account.id,
                                        event=event(at))
    (value,) = await store.values_at(NAME)
    assert value.updated_at == at
    assert (await store.get_account(account.username)).last_used_at == at  # type: ignore[union-attr]
    (row,) = await store.audit_events(AuditQuery(event="update"))
    assert (row.at, row.outcome, row.client, row.count) == (at, "ok", "192.0.2.1", 1)
    # Stored as the store stores times: a range query over them still finds the row.
    assert await store.audit_events(AuditQuery(event="update", since=at)) == [row]
    assert await store.audit_events(AuditQuery(
        event="update", since=at + timedelta(microseconds=1))) == []


async def test_a_settled_value_is_live_with_its_bookkeeping_or_not_at_all(
        store: SqlStore) -> None:
    """``settle``: the new row LIVE at the record it overwrote (the old row gone),
    last-used and the audit row, in one commit; a unit that fails writes none of it."""
    account = await live_account(store)
    (old,) = await store.values_at(NAME)
    at = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    new = await store.add_value(name=NAME, zone="example.com", value="w" * 43,
                                account_id=account.id, at=at, record_id=old.record_id)
    with pytest.raises(RuntimeError):
        async with store.unit() as unit:
            await unit.settle(new.id, 4242, at, replaces=old.id)
            await unit.touch_account(account.id, at)
            await unit.audit(event(at))
            raise RuntimeError("the database went away before the commit")
    assert [(v.value, v.state) for v in await store.values_at(NAME)] == [
        (VALUE, ValueState.LIVE), ("w" * 43, ValueState.PENDING)]
    assert await store.audit_events(AuditQuery(event="update")) == []
    async with store.unit() as unit:
        await unit.settle(new.id, 4242, at, replaces=old.id)
        await unit.touch_account(account.id, at)
        await unit.audit(event(at))
        await unit.commit()
    (value,) = await store.values_at(NAME)
    assert (value.value, value.state, value.record_id, value.updated_at) == (
        "w" * 43, ValueState.LIVE, 4242, at)
    assert (await store.get_account(account.username)).last_used_at == at  # type: ignore[union-attr]
    assert len(await store.audit_events(AuditQuery(event="update"))) == 1


async def test_a_value_not_live_is_no_repeat_and_writes_nothing(store: SqlStore) -> None:
    account = await live_account(store)
    (before,) = await store.values_at(NAME)
    at = datetime.now(UTC)
    async with store.unit() as unit:
        assert not await unit.record_repeat(NAME, "w" * 43, at, account_id=account.id,
                                            event=event(at))
        assert not await unit.record_repeat("_acme-challenge.other.example.com", VALUE, at,
                                            account_id=account.id, event=event(at))
    assert await store.values_at(NAME) == [before]
    assert (await store.get_account(account.username)).last_used_at is None  # type: ignore[union-attr]
    assert await store.audit_events(AuditQuery(event="update")) == []


async def test_a_name_someone_works_on_is_no_repeat_and_writes_nothing(
        store: SqlStore) -> None:
    """While another request holds the name (its lock), a repeat does not wait: False,
    nothing written; ``put`` takes its turn under the lock instead."""
    account = await live_account(store)
    (before,) = await store.values_at(NAME)
    at = datetime.now(UTC)
    async with store.name_lock(NAME), store.unit() as unit:
        assert not await unit.record_repeat(NAME, VALUE, at, account_id=account.id,
                                            event=event(at))
    assert await store.values_at(NAME) == [before]
    assert await store.audit_events(AuditQuery(event="update")) == []


async def test_a_failed_unit_leaves_nothing_and_the_connection_clean(store: SqlStore) -> None:
    account = await live_account(store)
    (before,) = await store.values_at(NAME)
    with pytest.raises(RuntimeError):
        async with store.unit() as unit:
            await unit.touch_account(account.id, datetime.now(UTC))
            await unit.audit(event(datetime.now(UTC), outcome="refused"))
            # After other writes a repeat joins their transaction (PostgreSQL too).
            assert await unit.record_repeat(NAME, VALUE, datetime.now(UTC),
                                            account_id=account.id,
                                            event=event(datetime.now(UTC)))
            raise RuntimeError("the request failed")
    assert await store.values_at(NAME) == [before]
    assert await store.audit_events(AuditQuery(event="update")) == []
    assert (await store.get_account(account.username)).last_used_at is None  # type: ignore[union-attr]
    # The next unit (on SQLite the same, only connection) starts from a clean slate: its
    # work commits, and nothing of the failed one rides along.
    async with store.unit() as unit:
        await unit.audit(event(datetime.now(UTC), outcome="second"))
    assert [r.outcome for r in await store.audit_events(AuditQuery(event="update"))] == [
        "second"]
    assert (await store.get_account(account.username)) is not None


async def test_a_sqlite_repeat_never_hands_off_to_aiosqlites_thread(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeat's statements and its commit run on the event loop's thread, on the
    connection the unit has to itself: no hand-off to aiosqlite's thread (there were
    five, one per statement and the commit; through SQLAlchemy's adapter fourteen)."""
    engine = create_engine(sqlite_url)
    try:
        store = SqlStore(engine)
        account = await live_account(store)
        handed: list[str] = []
        real: Callable[..., Awaitable[Any]] = aiosqlite.Connection._execute

        async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any
                          ) -> Any:
            handed.append(getattr(fn, "__name__", repr(fn)))
            return await real(self, fn, *args, **kwargs)

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        at = datetime.now(UTC)
        async with store.unit() as unit:
            await unit.account(account.username)
            assert await unit.record_repeat(NAME, VALUE, at, account_id=account.id,
                                            event=event(at))
        assert handed == []
        (value,) = await store.values_at(NAME)
        assert value.updated_at == at  # committed, and read back through aiosqlite
    finally:
        await store.close()
        await engine.dispose()


@pytest.mark.postgres
async def test_a_postgres_repeat_is_two_round_trips(postgres_url: str) -> None:
    """A repeat on PostgreSQL: the account, then the whole repeat in one statement, each
    its own transaction (no BEGIN, no COMMIT): two round trips (it was five)."""
    async with RoundTripCounter(postgres_url) as relay:
        engine = create_engine(relay.url, ping_idle=3600)  # no idle ping in the count
        try:
            store = SqlStore(engine)
            account = await live_account(store)

            async def repeat() -> None:
                async with store.unit() as unit:
                    assert (await unit.account(account.username)) is not None
                    at = datetime.now(UTC)
                    assert await unit.record_repeat(NAME, VALUE, at, account_id=account.id,
                                                    event=event(at))

            await repeat()  # the statements prepared on the pool's one connection
            before = relay.count
            await repeat()
            assert relay.count - before == 2
        finally:
            await store.close()
            await engine.dispose()


async def nothing_recorded(store: SqlStore, account: Any, before: Any) -> None:
    assert await store.values_at(NAME) == [before]
    assert (await store.get_account(account.username)).last_used_at is None  # type: ignore[union-attr]
    assert await store.audit_events(AuditQuery(event="update")) == []


@pytest.mark.postgres
async def test_a_postgres_repeat_waits_for_no_session_that_holds_the_name(
        postgres_url: str) -> None:
    """Another session (``name_lock``'s, another replica's) holding the name's advisory
    lock: the repeat's one statement writes nothing and says False, without waiting.
    Once the lock is free, the same repeat goes through."""
    engine, other = create_engine(postgres_url), create_engine(postgres_url, pool=False)
    try:
        store = SqlStore(engine)
        account = await live_account(store)
        (before,) = await store.values_at(NAME)
        at = datetime.now(UTC)
        async with other.connect() as holder:
            await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": advisory_key(NAME)})
            await holder.commit()
            async with store.unit() as unit:
                assert not await unit.record_repeat(NAME, VALUE, at, account_id=account.id,
                                                    event=event(at))
            await nothing_recorded(store, account, before)
            await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": advisory_key(NAME)})
            await holder.commit()
        async with store.unit() as unit:
            assert await unit.record_repeat(NAME, VALUE, at, account_id=account.id,
                                            event=event(at))
        assert len(await store.audit_events(AuditQuery(event="update"))) == 1
    finally:
        await store.close()
        await engine.dispose()
        await other.dispose()


@pytest.mark.postgres
async def test_a_postgres_repeat_that_fails_writes_nothing(postgres_url: str) -> None:
    """The one statement fails in its last part (an audit row the table refuses): the
    bump and last-used before it go too."""
    engine = create_engine(postgres_url)
    try:
        store = SqlStore(engine)
        account = await live_account(store)
        (before,) = await store.values_at(NAME)
        at = datetime.now(UTC)
        too_long = AuditEvent(at=at, event="update", outcome="ok", username=None,
                              client=None, name="x" * 300, value_fingerprint=None,
                              detail=None)
        with pytest.raises(Exception, match="too long"):
            async with store.unit() as unit:
                await unit.record_repeat(NAME, VALUE, at, account_id=account.id,
                                         event=too_long)
        await nothing_recorded(store, account, before)
    finally:
        await store.close()
        await engine.dispose()


@pytest.mark.postgres
async def test_a_postgres_repeat_is_its_own_transaction(postgres_url: str) -> None:
    """A repeat before any other write commits at once, whole: seen by another session
    and the name's advisory lock free while the unit is still open; kept when the unit
    then fails (nothing may follow a repeat: it is the whole request). No transaction
    is left open on the connection for its next user."""
    engine, other = create_engine(postgres_url, pool_size=1), create_engine(
        postgres_url, pool=False)
    try:
        store = SqlStore(engine)
        account = await live_account(store)
        at = datetime.now(UTC)
        with pytest.raises(RuntimeError):
            async with store.unit() as unit:
                assert await unit.account(account.username) is not None
                assert await unit.record_repeat(NAME, VALUE, at, account_id=account.id,
                                                event=event(at))
                async with other.connect() as conn:
                    assert (await conn.execute(text(
                        "SELECT count(*) FROM audit_events"))).scalar() == 1
                    assert (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                               {"k": advisory_key(NAME)})).scalar()
                raise RuntimeError("the request failed after its repeat")
        (value,) = await store.values_at(NAME)
        assert value.updated_at == at
        assert (await store.get_account(account.username)).last_used_at == at  # type: ignore[union-attr]
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            assert not raw.driver_connection.is_in_transaction()  # type: ignore[union-attr]
    finally:
        await store.close()
        await engine.dispose()
        await other.dispose()


async def test_a_repeat_is_told_to_the_audit_listener_once_when_committed(
        database_url: str) -> None:
    """The metrics hear of a repeat's audit row once it is committed: once, whether the
    repeat commits on its own (PostgreSQL) or with the unit; a repeat that wrote nothing
    is not heard of."""
    engine = create_engine(database_url)
    heard: list[AuditEvent] = []
    try:
        store = SqlStore(engine, on_audit=heard.append)
        account = await live_account(store)
        at = datetime.now(UTC)
        async with store.unit() as unit:
            assert not await unit.record_repeat(NAME, "w" * 43, at, account_id=account.id,
                                                event=event(at, outcome="missed"))
        async with store.unit() as unit:
            assert await unit.record_repeat(NAME, VALUE, at, account_id=account.id,
                                            event=event(at))
        assert heard == [event(at)]
    finally:
        await store.close()
        await engine.dispose()


@pytest.mark.postgres
async def test_a_postgres_connection_lost_mid_unit_is_unavailable_and_left_behind(
        postgres_url: str) -> None:
    """The database drops the pool's connections (a restart) while a unit holds one: its
    repeat fails as the database being unavailable (a 503), and the next unit works on
    a new connection, not one of the dead ones (however recently used: no ping)."""
    engine = create_engine(postgres_url, ping_idle=3600)
    other = create_engine(postgres_url, pool=False)
    try:
        store = SqlStore(engine)
        account = await live_account(store)
        async with engine.connect() as one, engine.connect() as two:  # two in the pool
            for conn in (one, two):
                await conn.execute(text("SELECT 1"))
                await conn.commit()
        at = datetime.now(UTC)
        with pytest.raises(Exception) as failed:
            async with store.unit() as unit:
                assert await unit.account(account.username) is not None
                async with other.connect() as conn:
                    await conn.execute(text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"))
                await asyncio.sleep(0.3)  # the backends gone, their sockets closed
                await unit.record_repeat(NAME, VALUE, at, account_id=account.id,
                                         event=event(at))
        assert unavailable(failed.value)
        async with store.unit() as unit:
            assert await unit.record_repeat(NAME, VALUE, at, account_id=account.id,
                                            event=event(at))
    finally:
        await store.close()
        await engine.dispose()
        await other.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("locked", ["txt_values", "accounts"])
async def test_a_postgres_repeat_never_waits_on_a_locked_row(postgres_url: str,
                                                             locked: str) -> None:
    """Repeats are batched (app.db.batches): one that waited on a row another session has
    locked (the value's, or its account's) would hold up every request in its batch and
    behind it. It answers False at once instead (the request then takes the name's lock
    and waits on its own, as a new value would), and writes nothing; a repeat at another
    name in the same batch goes through."""
    engine = create_engine(postgres_url, ping_idle=3600)
    other = create_engine(postgres_url, pool=False)
    try:
        store = SqlStore(engine)
        account = await live_account(store)
        neighbour = await live_account(store, "other")
        (before,) = await store.values_at(NAME)
        at = datetime.now(UTC)

        async def repeat(name: str, account_id: int) -> bool:
            async with store.unit() as unit:
                return await unit.record_repeat(name, VALUE, at, account_id=account_id,
                                                event=event(at))

        async with other.connect() as blocker:
            await blocker.execute(text(f"SELECT id FROM {locked} WHERE id = :id FOR UPDATE"),
                                  {"id": before.id if locked == "txt_values" else account.id})
            mine, theirs = await asyncio.wait_for(asyncio.gather(
                repeat(NAME, account.id),
                repeat("_acme-challenge.other.example.com", neighbour.id)), 5)
            assert (mine, theirs) == (False, True)
            await blocker.rollback()
        assert await store.values_at(NAME) == [before]
        assert (await store.get_account(account.username)).last_used_at is None  # type: ignore[union-attr]
        assert len(await store.audit_events(AuditQuery(event="update"))) == 1  # theirs
        assert await asyncio.wait_for(repeat(NAME, account.id), 5)
    finally:
        await store.close()
        await engine.dispose()
        await other.dispose()


@pytest.mark.postgres
async def test_a_postgres_connection_left_mid_operation_is_unavailable_and_left_behind(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen when PostgreSQL shut down under load: a pooled connection's first statement
    failed with asyncpg's "cannot switch to state 12; another operation (2) is in
    progress" (the database's parting message had left its protocol mid-operation), and
    the request was a 500. The unit that meets it fails as the database being
    unavailable (a 503), and that connection leaves the pool: the next unit has another."""
    engine = create_engine(postgres_url, ping_idle=3600, pool_size=1)
    try:
        store = SqlStore(engine)
        account = await live_account(store)
        real_fetch = asyncpg.connection.Connection.fetchmany
        confused: list[object] = []

        async def fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
            if not confused:
                confused.append(self)
                raise asyncpg.InternalClientError(
                    "cannot switch to state 12; another operation (2) is in progress")
            return await real_fetch(self, *args, **kwargs)

        monkeypatch.setattr(asyncpg.connection.Connection, "fetchmany", fetch)
        with pytest.raises(Exception) as failed:
            async with store.unit() as unit:
                await unit.account(account.username)
        assert unavailable(failed.value), repr(failed.value)
        async with store.unit() as unit:
            assert await unit.account(account.username) is not None
            assert unit._pg is not confused[0]
    finally:
        await store.close()
        await engine.dispose()
