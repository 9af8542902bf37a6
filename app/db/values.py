"""The challenge values aggregate: TXT values at names, and the records that hold them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update

from app.core.models import TxtValue, ValueState
from app.db.database import Database
from app.db.tables import AccountRow, TxtValueRow


def to_value(row: Any) -> TxtValue:
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


class SqlValues(Database):
    """``app.core.ports.Values``; each method is one transaction."""

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

    async def values_at(self, name: str) -> list[TxtValue]:
        """Oldest first."""
        query = (
            select(TxtValueRow)
            .where(TxtValueRow.name == name)
            .order_by(TxtValueRow.updated_at, TxtValueRow.id)
        )
        async with self._sessions() as session:
            return [to_value(row) for row in await session.scalars(query)]

    async def values_of_account(self, account_id: int) -> list[TxtValue]:
        query = (
            select(TxtValueRow)
            .where(TxtValueRow.account_id == account_id)
            .order_by(TxtValueRow.updated_at, TxtValueRow.id)
        )
        async with self._sessions() as session:
            return [to_value(row) for row in await session.scalars(query)]

    async def count_values(self) -> dict[str, int]:
        """TXT values by state, for the metrics."""
        query = select(TxtValueRow.state, func.count()).group_by(TxtValueRow.state)
        async with self._sessions() as session:
            return {str(state): int(n) for state, n in await session.execute(query)}

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
        return to_value(row)

    async def set_record_id(self, value_id: int, record_id: int) -> None:
        async with self._tx() as session:
            await session.execute(
                update(TxtValueRow).where(TxtValueRow.id == value_id).values(record_id=record_id)
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
