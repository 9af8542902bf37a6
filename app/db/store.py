"""The ``Store`` the core uses, over SQLAlchemy 2 async. Each method is one transaction."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.models import (
    Account,
    AccountChanges,
    AccountFilter,
    AuditEvent,
    AuditQuery,
    Mode,
    NewAccount,
    TxtValue,
    ValueState,
)
from app.db.durable import WalSync
from app.db.tables import AccountRow, AuditRow, TxtValueRow
from app.db.unit import SqlUnit
from app.errors import DomainError, NameInUse


def _account(row: Any) -> Account:
    """An ``AccountRow``, or a Core row of the accounts table."""
    return Account(
        id=row.id,
        username=row.username,
        key_hash=row.key_hash,
        label=row.label,
        name=row.name,
        zone=row.zone,
        mode=Mode(row.mode),
        domain=row.domain,
        allowfrom=tuple(ipaddress.ip_network(n) for n in row.allowfrom or ()),
        note=row.note,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
        expires_at=row.expires_at,
        max_values=row.max_values,
    )


def _value(row: Any) -> TxtValue:
    """A ``TxtValueRow``, or a Core row of the txt_values table."""
    return TxtValue(
        id=row.id,
        name=row.name,
        zone=row.zone,
        value=row.value,
        state=ValueState(row.state),
        record_id=row.record_id,
        account_id=row.account_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for PostgreSQL advisory locks (not Python's salted hash)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=b"acme-dlg").digest()
    return int.from_bytes(digest, "big", signed=True)


_RECONCILE_KEY = advisory_key("acme-delegate:reconciler")


class _LocalLocks:
    """One asyncio lock per name, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            self._leave(name)

    async def try_hold(self, name: str) -> asyncio.Lock | None:
        """The name's lock if nobody holds or waits for it (taken at once), else None."""
        if name in self._locks:
            return None
        lock = asyncio.Lock()
        self._locks[name] = (lock, 1)
        await lock.acquire()  # a new lock: taken without waiting
        return lock

    def release(self, name: str, lock: asyncio.Lock) -> None:
        lock.release()
        self._leave(name)

    def _leave(self, name: str) -> None:
        lock, users = self._locks[name]
        if users == 1:
            del self._locks[name]
        else:
            self._locks[name] = (lock, users - 1)


class SqlStore:
    def __init__(self, engine: AsyncEngine,
                 on_audit: Callable[[AuditEvent], None] | None = None,
                 lock_engine: AsyncEngine | None = None) -> None:
        """``lock_engine``: a pool of its own for held advisory locks (PostgreSQL). Were
        they taken from ``engine``'s pool, enough concurrent holders would hold every
        connection while each waits for one more to do its work: a deadlock."""
        self._on_audit = on_audit
        self._engine = engine
        self._lock_engine = lock_engine or engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._local = _LocalLocks()
        self._reconciling = asyncio.Lock()
        self._postgres = engine.dialect.name == "postgresql"
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self._durable = (WalSync(Path(database)) if database and database != ":memory:"
                         else None)

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session, session.begin():
            yield session
        if self._durable is not None:
            await self._durable()  # on disk before anyone acts on it

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[SqlUnit]:
        """One transaction for one request's work (see ``app.core.ports.Unit``)."""
        unit = SqlUnit(self._engine, local=self._local,
                       postgres=self._postgres, advisory_key=advisory_key,
                       to_account=_account, on_audit=self._on_audit,
                       durable=self._durable)
        try:
            yield unit
        except DomainError:
            await unit.commit()  # an answer: the refusal's audit row is kept
            raise
        except BaseException:
            await unit.rollback()
            raise
        await unit.commit()

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    # accounts

    async def add_account(self, account: NewAccount) -> Account:
        row = AccountRow(
            username=account.username,
            key_hash=account.key_hash,
            label=account.label,
            name=account.name,
            zone=account.zone,
            mode=account.mode.value,
            domain=account.domain,
            allowfrom=[str(n) for n in account.allowfrom],
            note=account.note,
            created_at=account.created_at,
            expires_at=account.expires_at,
            max_values=account.max_values,
        )
        try:
            async with self._tx() as session:
                session.add(row)
        except IntegrityError as exc:
            raise NameInUse(f"an active account is already bound to {account.name}") from exc
        return _account(row)

    async def get_account(self, username: str) -> Account | None:
        async with self._sessions() as session:
            row = await session.scalar(select(AccountRow).where(AccountRow.username == username))
            return _account(row) if row else None

    async def list_accounts(self, where: AccountFilter) -> list[Account]:
        query = select(AccountRow).order_by(AccountRow.id).limit(where.limit).offset(where.offset)
        if not where.include_revoked:
            query = query.where(AccountRow.revoked_at.is_(None))
        if where.mode is not None:
            query = query.where(AccountRow.mode == where.mode.value)
        if where.domain is not None:
            query = query.where(AccountRow.domain == where.domain)
        if where.stale_before is not None:
            query = query.where(
                or_(
                    AccountRow.last_used_at < where.stale_before,
                    and_(AccountRow.last_used_at.is_(None),
                         AccountRow.created_at < where.stale_before),
                )
            )
        if where.expires_before is not None:
            query = query.where(AccountRow.expires_at < where.expires_before)
        if where.search:
            # A literal substring: the LIKE wildcards a person types match only themselves.
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", where.search.lower()) + "%"
            query = query.where(or_(*(
                func.lower(column).like(pattern, escape="\\")
                for column in (AccountRow.username, AccountRow.name, AccountRow.domain,
                               AccountRow.note))))
        async with self._sessions() as session:
            return [_account(row) for row in await session.scalars(query)]

    async def count_accounts(self) -> int:
        """Active accounts."""
        query = select(func.count()).select_from(AccountRow).where(AccountRow.revoked_at.is_(None))
        async with self._sessions() as session:
            return int((await session.execute(query)).scalar_one())

    async def update_account(self, username: str, changes: AccountChanges) -> Account | None:
        async with self._tx() as session:
            row = await session.scalar(select(AccountRow).where(AccountRow.username == username))
            if row is None:
                return None
            if changes.allowfrom is not None:
                row.allowfrom = [str(n) for n in changes.allowfrom]
            if changes.note is not None or changes.clear_note:
                row.note = changes.note
            if changes.expires_at is not None or changes.clear_expiry:
                row.expires_at = changes.expires_at
            return _account(row)

    async def set_key_hash(self, username: str, key_hash: str, *, expected: str | None = None
                           ) -> bool:
        """Replace the key hash in one statement; with ``expected``, only if unchanged
        (so a concurrent rotation is never undone by a rehash)."""
        query = update(AccountRow).where(AccountRow.username == username)
        if expected is not None:
            query = query.where(AccountRow.key_hash == expected)
        async with self._tx() as session:
            result = await session.execute(query.values(key_hash=key_hash))
            return bool(getattr(result, "rowcount", 0))

    async def delete_account(self, username: str) -> bool:
        async with self._tx() as session:
            result = await session.execute(
                delete(AccountRow).where(AccountRow.username == username))
            return bool(getattr(result, "rowcount", 0))

    async def set_revoked(self, username: str, at: datetime) -> Account | None:
        async with self._tx() as session:
            row = await session.scalar(select(AccountRow).where(AccountRow.username == username))
            if row is None:
                return None
            if row.revoked_at is None:
                row.revoked_at = at
            return _account(row)

    async def touch_account(self, account_id: int, at: datetime) -> None:
        async with self._tx() as session:
            await session.execute(
                update(AccountRow).where(AccountRow.id == account_id).values(last_used_at=at)
            )

    # challenge values

    @asynccontextmanager
    async def name_lock(self, name: str) -> AsyncIterator[None]:
        """Serialize work on one name: in this process, and across replicas on PostgreSQL."""
        async with self._local.hold(name):
            if not self._postgres:
                # SQLite is one writer and one process: the local lock is the whole story.
                yield
                return
            key = advisory_key(name)
            async with self._lock_engine.connect() as conn:
                await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                await conn.commit()
                try:
                    yield
                finally:
                    try:
                        await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                        await conn.commit()
                    except BaseException:
                        # Never return a connection that may still hold the lock to the pool.
                        await conn.invalidate()
                        raise

    @asynccontextmanager
    async def reconcile_lock(self) -> AsyncIterator[bool]:
        """One reconciler at a time in the deployment; yields False if another holds it.
        On PostgreSQL a crashed holder's connection closes and the lock goes with it."""
        if self._reconciling.locked():
            yield False
            return
        async with self._reconciling:
            if not self._postgres:
                yield True
                return
            async with self._lock_engine.connect() as conn:
                got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                          {"k": _RECONCILE_KEY})).scalar()
                await conn.commit()
                if not got:
                    yield False
                    return
                try:
                    yield True
                finally:
                    try:
                        await conn.execute(text("SELECT pg_advisory_unlock(:k)"),
                                           {"k": _RECONCILE_KEY})
                        await conn.commit()
                    except BaseException:
                        await conn.invalidate()
                        raise

    async def owned_names(self) -> dict[str, set[str]]:
        """Every name this service has bound or written, by zone: the reconciler's scope."""
        owned: dict[str, set[str]] = {}
        async with self._sessions() as session:
            for zone, name in await session.execute(
                select(AccountRow.zone, AccountRow.name).distinct()
            ):
                owned.setdefault(zone, set()).add(name)
            for zone, name in await session.execute(
                select(TxtValueRow.zone, TxtValueRow.name).distinct()
            ):
                owned.setdefault(zone, set()).add(name)
        return owned

    async def names_with_values(self) -> set[str]:
        async with self._sessions() as session:
            return set(await session.scalars(select(TxtValueRow.name).distinct()))

    async def accounts_by_id(self, ids: Sequence[int]) -> dict[int, Account]:
        if not ids:
            return {}
        async with self._sessions() as session:
            rows = await session.scalars(select(AccountRow).where(AccountRow.id.in_(set(ids))))
            return {row.id: _account(row) for row in rows}

    async def set_record_id(self, value_id: int, record_id: int) -> None:
        async with self._tx() as session:
            await session.execute(
                update(TxtValueRow).where(TxtValueRow.id == value_id).values(record_id=record_id)
            )

    async def values_at(self, name: str) -> list[TxtValue]:
        query = (
            select(TxtValueRow)
            .where(TxtValueRow.name == name)
            .order_by(TxtValueRow.updated_at, TxtValueRow.id)
        )
        async with self._sessions() as session:
            return [_value(row) for row in await session.scalars(query)]

    async def values_of_account(self, account_id: int) -> list[TxtValue]:
        query = (
            select(TxtValueRow)
            .where(TxtValueRow.account_id == account_id)
            .order_by(TxtValueRow.updated_at, TxtValueRow.id)
        )
        async with self._sessions() as session:
            return [_value(row) for row in await session.scalars(query)]

    async def add_value(
        self, *, name: str, zone: str, value: str, account_id: int, at: datetime,
        record_id: int | None = None,
    ) -> TxtValue:
        """A PENDING value; ``record_id`` names the record it is about to overwrite."""
        row = TxtValueRow(
            name=name,
            zone=zone,
            value=value,
            record_id=record_id,
            state=ValueState.PENDING.value,
            account_id=account_id,
            created_at=at,
            updated_at=at,
        )
        async with self._tx() as session:
            session.add(row)
        return _value(row)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def shared(self) -> bool:
        """True when several processes may share this database (PostgreSQL)."""
        return self._postgres

    async def mark_live(self, value_id: int, record_id: int, at: datetime) -> None:
        async with self._tx() as session:
            await session.execute(
                update(TxtValueRow)
                .where(TxtValueRow.id == value_id)
                .values(state=ValueState.LIVE.value, record_id=record_id, updated_at=at)
            )

    async def replace_value(self, old_id: int, new_id: int, record_id: int, at: datetime
                            ) -> None:
        """An in-place rotation landed: the new value is LIVE at the record, the old row
        goes, in one transaction."""
        async with self._tx() as session:
            await session.execute(delete(TxtValueRow).where(TxtValueRow.id == old_id))
            await session.execute(
                update(TxtValueRow)
                .where(TxtValueRow.id == new_id)
                .values(state=ValueState.LIVE.value, record_id=record_id, updated_at=at)
            )

    async def bump_value(self, value_id: int, at: datetime) -> None:
        async with self._tx() as session:
            await session.execute(
                update(TxtValueRow).where(TxtValueRow.id == value_id)
                .values(updated_at=at, state=ValueState.LIVE.value)
            )

    async def set_state(self, value_ids: Sequence[int], state: ValueState) -> None:
        if not value_ids:
            return
        async with self._tx() as session:
            await session.execute(
                update(TxtValueRow).where(TxtValueRow.id.in_(value_ids)).values(state=state.value)
            )

    async def delete_values(self, value_ids: Sequence[int]) -> None:
        if not value_ids:
            return
        async with self._tx() as session:
            await session.execute(delete(TxtValueRow).where(TxtValueRow.id.in_(value_ids)))

    # audit

    async def audit(self, event: AuditEvent) -> None:
        async with self._tx() as session:
            session.add(
                AuditRow(
                    at=event.at,
                    event=event.event,
                    outcome=event.outcome,
                    username=event.username,
                    client=event.client[:64] if event.client else None,
                    name=event.name,
                    value_fingerprint=event.value_fingerprint,
                    detail=event.detail[:200] if event.detail else None,
                )
            )
        if self._on_audit is not None:
            self._on_audit(event)

    async def audit_repeated(self, event: AuditEvent, window: timedelta) -> None:
        """``Unit.audit_repeated`` in a transaction of its own."""
        async with self.unit() as unit:
            await unit.audit_repeated(event, window)

    async def count_values(self) -> dict[str, int]:
        """TXT values by state, for the metrics."""
        query = select(TxtValueRow.state, func.count()).group_by(TxtValueRow.state)
        async with self._sessions() as session:
            return {str(state): int(n) for state, n in await session.execute(query)}

    async def audit_events(self, where: AuditQuery) -> list[AuditEvent]:
        """Newest first."""
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(where.limit)
        if where.since is not None:
            query = query.where(AuditRow.at >= where.since)
        if where.username is not None:
            query = query.where(AuditRow.username == where.username)
        if where.event is not None:
            query = query.where(AuditRow.event == where.event)
        async with self._sessions() as session:
            return [
                AuditEvent(
                    at=row.at,
                    event=row.event,
                    outcome=row.outcome,
                    username=row.username,
                    client=row.client,
                    name=row.name,
                    value_fingerprint=row.value_fingerprint,
                    detail=row.detail,
                    count=row.count,
                    last_at=row.last_at,
                )
                for row in await session.scalars(query)
            ]
