"""The persistence the core uses (``app.core.ports``), over SQLAlchemy 2 async: one
object made of one module per aggregate (``accounts``, ``values``, ``audit``) over the
shared ``Database`` (engine, transactions, locks), plus ``unit``: one request's work
(``app.db.unit``; what is atomic in it: ``app.core.ports.Unit``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from app.core.models import AuditEvent
from app.db.accounts import SqlAccounts, to_account
from app.db.audit import SqlAudit
from app.db.batches import Batches
from app.db.locks import advisory_key
from app.db.unit import Repeat, SqlUnit, UnitBatches
from app.db.values import SqlValues
from app.errors import DomainError

__all__ = ["SqlStore", "advisory_key"]  # app.db.budget keys its lock here


class SqlStore(SqlAccounts, SqlValues, SqlAudit):
    _batches: UnitBatches | None = None

    def unit(self) -> AbstractAsyncContextManager[SqlUnit]:
        """One request's unit of work (what is atomic in it: ``app.core.ports.Unit``).
        Its account read and its repeat, when they come before anything else of its
        own, join the store's batches (``app.db.batches``)."""
        if self._batches is None:
            self._batches = UnitBatches(accounts=Batches(self._accounts_named),
                                        repeats=Batches(self._record_repeats))
        return self._unit(self._batches)

    @asynccontextmanager
    async def _unit(self, batches: UnitBatches | None) -> AsyncIterator[SqlUnit]:
        unit = SqlUnit(self._engine, local=self._local, postgres=self._postgres,
                       to_account=to_account, on_audit=self._on_audit,
                       durable=self._durable, batches=batches)
        try:
            yield unit
        except DomainError:
            await unit.commit()  # an answer: the refusal's audit row is kept
            raise
        except BaseException:
            await unit.rollback()
            raise
        await unit.commit()

    # A batch runs in a unit of its own, which joins no batch.

    async def _accounts_named(self, usernames: Sequence[str]) -> list[Any]:
        async with self._unit(None) as unit:
            return await unit.accounts_named(usernames)

    async def _record_repeats(self, repeats: Sequence[Repeat]) -> list[bool]:
        async with self._unit(None) as unit:
            recorded = await unit.record_repeats(repeats)
        return recorded  # committed (and on disk) when the unit ended

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
