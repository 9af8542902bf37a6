"""One request's work in one transaction (``app.core.ports.Unit``), in SQLAlchemy Core:
the ORM's identity map and flush would cost more than they give to these few
statements, whose shapes are built once here and compiled once per engine."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import BigInteger, Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.core.models import Account, AuditEvent, ValueState
from app.db.tables import AccountRow, AuditRow, TxtValueRow

_accounts = cast(Table, AccountRow.__table__)
_values = cast(Table, TxtValueRow.__table__)
_audit = cast(Table, AuditRow.__table__)

ACCOUNT_BY_USERNAME = select(_accounts).where(_accounts.c.username == bindparam("username"))
BUMP_LIVE = (update(_values)
             .where(_values.c.name == bindparam("target"), _values.c.value == bindparam("txt"),
                    _values.c.state == ValueState.LIVE.value)
             .values(updated_at=bindparam("at")))
# PostgreSQL: the same, only if the name's transaction-level advisory lock is free (then
# held until the commit): one round trip for "lock, check, bump".
BUMP_LIVE_LOCKED = BUMP_LIVE.where(
    func.pg_try_advisory_xact_lock(bindparam("key", type_=BigInteger)))
TOUCH = (update(_accounts).where(_accounts.c.id == bindparam("account_id"))
         .values(last_used_at=bindparam("used_at")))
REHASH = (update(_accounts)
          .where(_accounts.c.username == bindparam("who"),
                 _accounts.c.key_hash == bindparam("expected"))
          .values(key_hash=bindparam("key_hash")))
AUDIT = insert(_audit)
# PostgreSQL: last-used and the audit row in one round trip (a data-modifying WITH runs
# once whether or not the statement reads it).
# Every value of it is a named parameter that no column of ``accounts`` is called: an
# execution's extra keys that match column names would join the UPDATE's SET clause.
_AUDIT_FIELDS = ("at", "event", "outcome", "username", "client", "name",
                 "value_fingerprint", "detail")
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


def audit_row(event: AuditEvent) -> dict[str, Any]:
    return {"at": event.at, "event": event.event, "outcome": event.outcome,
            "username": event.username, "client": event.client[:64] if event.client else None,
            "name": event.name, "value_fingerprint": event.value_fingerprint,
            "detail": event.detail[:200] if event.detail else None}


class SqlUnit:
    """A connection with one transaction; the names it locked are released when it ends.
    On PostgreSQL the lock is also a transaction-level advisory lock: the same key as
    ``SqlStore.name_lock``'s session-level one, so the two exclude each other, and the
    commit releases it (crash included) with no statement of its own."""

    def __init__(self, engine: AsyncEngine, *, local: Any, postgres: bool,
                 advisory_key: Callable[[str], int],
                 to_account: Callable[[Any], Account],
                 on_audit: Callable[[AuditEvent], None] | None,
                 durable: Callable[[], Awaitable[None]] | None = None) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None  # taken at the first statement
        self._local = local
        self._postgres = postgres
        self._key = advisory_key
        self._to_account = to_account
        self._on_audit = on_audit
        self._durable = durable
        self._held: list[tuple[str, asyncio.Lock]] = []
        self._audited: list[AuditEvent] = []
        self._touch: dict[str, Any] | None = None  # a last-used not sent yet (PostgreSQL)
        self._open = True

    async def _execute(self, statement: Any, params: dict[str, Any]) -> Any:
        if not self._open:
            raise RuntimeError("this unit of work has ended")
        if self._conn is None:
            self._conn = await self._engine.connect()
        if self._touch is not None:
            touch, self._touch = self._touch, None
            await self._conn.execute(TOUCH, touch)  # kept in order with what follows
        return await self._conn.execute(statement, params)

    async def account(self, username: str) -> Account | None:
        row = (await self._execute(ACCOUNT_BY_USERNAME, {"username": username})).first()
        return self._to_account(row) if row is not None else None

    async def mark_repeat(self, name: str, value: str, at: datetime) -> bool:
        lock = await self._local.try_hold(name)
        if lock is None:
            return False  # another request of this process works on the name
        self._held.append((name, lock))
        if self._postgres:
            result = await self._execute(BUMP_LIVE_LOCKED, {
                "target": name, "txt": value, "at": at, "key": self._key(name)})
        else:
            result = await self._execute(BUMP_LIVE, {"target": name, "txt": value, "at": at})
        return bool(getattr(result, "rowcount", 0))

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
            if self._conn is not None:
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
            if self._conn is not None:
                await self._conn.rollback()
        finally:
            await self._end()

    async def _end(self) -> None:
        """Give the connection back and the names free (the locks after the transaction)."""
        self._open = False
        try:
            if self._conn is not None:
                await self._conn.close()
        finally:
            while self._held:
                self._local.release(*self._held.pop())
