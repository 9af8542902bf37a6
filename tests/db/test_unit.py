"""The request's unit of work (app.db.unit) on each database: what it writes reads back
exactly as the rest of the store writes it, a failed unit leaves nothing behind, and on
SQLite each statement is one hand-off to the database's thread."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiosqlite
import pytest

from app.core.models import AuditEvent, AuditQuery, Mode, NewAccount, ValueState
from app.db.engine import create_engine
from app.db.store import SqlStore

NAME = "_acme-challenge.www.example.com"
VALUE = "v" * 43



async def live_account(store: SqlStore) -> Any:
    account = await store.add_account(NewAccount(
        username="0f8e2f7a-1a53-4a43-8e0b-2f0f2d6e8c31", key_hash="h" * 64, label="www",
        name=NAME, zone="example.com", mode=Mode.DIRECT, domain="www.example.com",
        allowfrom=(), note=None, created_at=datetime(2026, 1, 1, tzinfo=UTC)))
    value = await store.add_value(name=NAME, zone="example.com", value=VALUE,
                                  account_id=account.id, at=datetime(2026, 1, 2, tzinfo=UTC))
    async with store.unit() as unit:
        await unit.settle(value.id, 4242, datetime(2026, 1, 2, tzinfo=UTC))
        await unit.commit()
    return account


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
            assert await unit.record_repeat(NAME, VALUE, datetime.now(UTC),
                                            account_id=account.id,
                                            event=event(datetime.now(UTC)))
            raise RuntimeError("the request failed")
    assert await store.values_at(NAME) == [before]
    assert await store.audit_events(AuditQuery(event="update")) == []
    # The next unit (on SQLite the same, only connection) starts from a clean slate: its
    # work commits, and nothing of the failed one rides along.
    async with store.unit() as unit:
        await unit.audit(event(datetime.now(UTC), outcome="second"))
    assert [r.outcome for r in await store.audit_events(AuditQuery(event="update"))] == [
        "second"]
    assert (await store.get_account(account.username)) is not None


async def test_a_sqlite_unit_hands_off_once_per_statement(
        sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeat's four statements and its commit: five hand-offs to aiosqlite's thread
    (through SQLAlchemy's adapter it was fourteen: cursor, execute, fetch, close)."""
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
        async with store.unit() as unit:
            await unit.account(account.username)
            assert await unit.record_repeat(NAME, VALUE, datetime.now(UTC),
                                            account_id=account.id,
                                            event=event(datetime.now(UTC)))
        assert len(handed) == 5, handed
    finally:
        await engine.dispose()
