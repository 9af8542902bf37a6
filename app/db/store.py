"""The persistence the core uses (``app.core.ports``), over SQLAlchemy 2 async: one
object made of one module per aggregate (``accounts``, ``values``, ``audit``) over the
shared ``Database`` (engine, transactions, locks), plus ``unit``: one request's work
(``app.db.unit``; what is atomic in it: ``app.core.ports.Unit``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from functools import cached_property

from app.core.models import AuditEvent
from app.db.accounts import SqlAccounts, to_account
from app.db.audit import SqlAudit
from app.db.batches import Batches, Held, Item, Result
from app.db.locks import advisory_key
from app.db.unit import (
    LoopReader,
    LoopSqlite,
    Repeat,
    SqlUnit,
    UnitBatches,
    own_connection,
)
from app.db.values import SqlValues
from app.errors import DomainError

__all__ = ["SqlStore", "advisory_key"]  # app.db.budget keys its lock here

# How long the batches' PostgreSQL connections are held with no batch on them: under load
# they never go back to the pool; one that sat this long is given back (a held connection
# is not pinged; the pool pings one idle for longer than app.db.engine.PING_IDLE_SECONDS).
HOLD_SECONDS = 0.5


class SqlStore(SqlAccounts, SqlValues, SqlAudit):
    _batches: UnitBatches | None = None
    _writer: LoopSqlite | None = None  # on a SQLite file: the store's own connection

    def unit(self) -> AbstractAsyncContextManager[SqlUnit]:
        """One request's unit of work (what is atomic in it: ``app.core.ports.Unit``).
        Its account read and its repeat, when they come before anything else of its
        own, go to the store's: the repeat to a batch (``app.db.batches``), the read to
        a batch too, or on a SQLite file to the ``LoopReader``."""
        if self._batches is None:
            database = self._engine.url.database
            file = database if self._durable is not None and database else None
            if file is not None:
                own = self._own(file)
                reader = LoopReader(file, self._engine.dialect, own)

                def recorded(repeats: Sequence[Repeat], done: Sequence[bool]) -> None:
                    reader.touched([(r.account_id, r.at)
                                    for r, ok in zip(repeats, done, strict=True) if ok])

                self._batches = UnitBatches(
                    accounts=reader, repeats=self._batched(
                        SqlUnit.record_repeats, own=own, committed=recorded,
                        settle=self._durable))
            else:
                self._batches = UnitBatches(accounts=self._batched(SqlUnit.accounts_named),
                                            repeats=self._batched(SqlUnit.record_repeats))
        return self._unit(self._batches)

    def _own(self, file: str) -> Callable[[], LoopSqlite]:
        """The store's own connection to the SQLite ``file``, opened when first asked for:
        its batches of repeats write on it, its account reads read on it."""
        def own() -> LoopSqlite:
            if self._writer is None:
                self._writer = own_connection(self, file, read_only=False)
            return self._writer

        return own

    def _batched(self, run: Callable[[SqlUnit, Sequence[Item]], Awaitable[list[Result]]],
                 *, own: Callable[[], LoopSqlite] | None = None,
                 committed: Callable[[Sequence[Item], list[Result]], None] | None = None,
                 settle: Callable[[], Awaitable[None]] | None = None
                 ) -> Batches[Item, Result]:
        """Batches of ``run``, each in a unit of its own that joins no batch. On
        PostgreSQL each batch is one round trip of its own (``fetchmany``), so the
        batches of ``run`` share one unit the store holds (``Held``; the reads and the
        repeats have one each, so neither waits behind the other): one connection,
        checked out when a batch comes after a pause, given back once none came for
        ``HOLD_SECONDS``, when a batch fails (its connection may be gone), or at
        ``close``. On SQLite each batch is a transaction of its own: on a
        SQLite file, on the store's ``own`` connection (one batch runs at a time), which
        costs no checkout from the pool (a thread hand-off and back in aiosqlite's
        thread, two busy-timeout changes) and leaves the pool's one connection to
        everyone else; with no file, on that connection. ``committed`` hears each SQLite
        batch that committed. With ``settle`` (a SQLite file's WAL sync) a batch's unit
        does not wait for the sync: each call does (``Batches``), while the next batch
        runs, so the loop commits one batch as the disk syncs the one before."""
        if self._postgres:
            lane = Held(lambda: self._unit(None), hold=HOLD_SECONDS)
            self._lanes.append(lane)

            async def held(items: Sequence[Item]) -> list[Result]:
                return await lane.use(lambda unit: run(unit, items))

            return Batches(held)

        async def one(items: Sequence[Item]) -> list[Result]:
            async with self._unit(None, own=own() if own is not None else None,
                                  durable=settle is None) as unit:
                results = await run(unit, items)
            if committed is not None:  # committed when the unit ended (synced: see settle)
                committed(items, results)
            return results

        return Batches(one, settle=settle)

    @cached_property
    def _lanes(self) -> list[Held[SqlUnit]]:
        return []

    async def close(self) -> None:
        """Give back what the store holds (its batches' connections) and stop its WAL's
        sync process; the engine stays the caller's to dispose of, after this."""
        for lane in self._lanes:
            await lane.close()
        if self._durable is not None:
            await self._durable.close()

    @asynccontextmanager
    async def _unit(self, batches: UnitBatches | None, *, own: LoopSqlite | None = None,
                    durable: bool = True) -> AsyncIterator[SqlUnit]:
        """A unit of work; ``durable``: its commit waits for the WAL's sync (a SQLite
        file), unless whoever asked for it waits instead."""
        unit = SqlUnit(self._engine, local=self._local, postgres=self._postgres,
                       to_account=to_account, on_audit=self._on_audit,
                       durable=self._durable if durable else None, batches=batches, own=own)
        try:
            yield unit
        except DomainError:
            await unit.commit()  # an answer: the refusal's audit row is kept
            raise
        except BaseException:
            await unit.rollback()
            raise
        await unit.commit()

    async def replace_value(self, old_id: int, new_id: int, record_id: int, at: datetime
                            ) -> None:
        """An in-place rotation landed (the reconciler found it so): the new value LIVE
        at the record, the old row gone, in one transaction, as a request settles it."""
        async with self.unit() as unit:
            await unit.settle(new_id, record_id, at, replaces=old_id)

    async def audit_repeated(self, event: AuditEvent, window: timedelta) -> None:
        """``Unit.audit_repeated`` in a transaction of its own."""
        async with self.unit() as unit:
            await unit.audit_repeated(event, window)
