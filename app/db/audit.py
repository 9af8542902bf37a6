"""The audit trail aggregate: who did what to which name, from where, with what outcome.

``app.db.unit.audit_row`` is the one mapping of an ``AuditEvent`` to its row (a request's
unit writes its audit rows too); ``to_event`` maps a row back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select

from app.core.models import AuditEvent, AuditQuery
from app.db.database import Database
from app.db.tables import AuditRow
from app.db.unit import audit_row


def to_event(row: Any) -> AuditEvent:
    return AuditEvent(
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


class SqlAudit(Database):
    """``app.core.ports.AuditTrail`` but ``audit_repeated`` (``SqlStore``: it is a unit's)."""

    async def audit(self, event: AuditEvent) -> None:
        async with self._tx() as session:
            await session.execute(insert(AuditRow).values(count=1, **audit_row(event)))
        if self._on_audit is not None:
            self._on_audit(event)

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
            return [to_event(row) for row in await session.scalars(query)]
