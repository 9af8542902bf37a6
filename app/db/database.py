"""What every aggregate's persistence shares: the engine, transactions, durability, and
the locks that serialize work on a name (and the reconciler) across replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core.models import AuditEvent
from app.db.durable import WalSync
from app.db.locks import RECONCILE_KEY, LocalLocks, advisory_key


class Database:
    """The state the aggregates (``app.db.accounts``, ``values``, ``audit``) share;
    ``app.db.store.SqlStore`` is all of them over one ``Database``."""

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
        self._local = LocalLocks()
        self._reconciling = asyncio.Lock()
        self._postgres = engine.dialect.name == "postgresql"
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self._durable = (WalSync(Path(database)) if database and database != ":memory:"
                         else None)

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        """One transaction; on disk (SQLite's WAL synced) before anyone acts on it."""
        async with self._sessions() as session, session.begin():
            yield session
        if self._durable is not None:
            await self._durable()

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

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
                                          {"k": RECONCILE_KEY})).scalar()
                await conn.commit()
                if not got:
                    yield False
                    return
                try:
                    yield True
                finally:
                    try:
                        await conn.execute(text("SELECT pg_advisory_unlock(:k)"),
                                           {"k": RECONCILE_KEY})
                        await conn.commit()
                    except BaseException:
                        await conn.invalidate()
                        raise
