"""The persistence the core uses (``app.core.ports``), over SQLAlchemy 2 async: one
object made of one module per aggregate (``accounts``, ``values``, ``audit``) over the
shared ``Database`` (engine, transactions, locks), plus ``unit``: one request's work
(``app.db.unit``; what is atomic in it: ``app.core.ports.Unit``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta

from app.core.models import AuditEvent
from app.db.accounts import SqlAccounts, to_account
from app.db.audit import SqlAudit
from app.db.locks import advisory_key
from app.db.unit import SqlUnit
from app.db.values import SqlValues
from app.errors import DomainError

__all__ = ["SqlStore", "advisory_key"]  # app.db.budget keys its lock here


class SqlStore(SqlAccounts, SqlValues, SqlAudit):
    @asynccontextmanager
    async def unit(self) -> AsyncIterator[SqlUnit]:
        """One request's unit of work (what is atomic in it: ``app.core.ports.Unit``)."""
        unit = SqlUnit(self._engine, local=self._local,
                       postgres=self._postgres, advisory_key=advisory_key,
                       to_account=to_account, on_audit=self._on_audit,
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
