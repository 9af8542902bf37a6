"""The accounts aggregate: credentials and the one name each is bound to.

``to_account`` and ``account_columns`` are the one mapping between ``Account`` and the
``accounts`` table, both ways (``app.db.unit`` maps with ``to_account`` too)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from app.core.models import Account, AccountChanges, AccountFilter, Mode, NewAccount
from app.db.database import Database
from app.db.tables import AccountRow
from app.errors import NameInUse


def to_account(row: Any) -> Account:
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


def account_columns(account: NewAccount) -> dict[str, Any]:
    """A new account's columns (networks as text: JSON holds no ``ip_network``)."""
    return {
        "username": account.username,
        "key_hash": account.key_hash,
        "label": account.label,
        "name": account.name,
        "zone": account.zone,
        "mode": account.mode.value,
        "domain": account.domain,
        "allowfrom": [str(n) for n in account.allowfrom],
        "note": account.note,
        "created_at": account.created_at,
        "expires_at": account.expires_at,
        "max_values": account.max_values,
    }


class SqlAccounts(Database):
    """``app.core.ports.Accounts``; each method is one transaction."""

    async def add_account(self, account: NewAccount) -> Account:
        row = AccountRow(**account_columns(account))
        try:
            async with self._tx() as session:
                session.add(row)
        except IntegrityError as exc:
            raise NameInUse(f"an active account is already bound to {account.name}") from exc
        return to_account(row)

    async def get_account(self, username: str) -> Account | None:
        async with self._sessions() as session:
            row = await session.scalar(select(AccountRow).where(AccountRow.username == username))
            return to_account(row) if row else None

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
            return [to_account(row) for row in await session.scalars(query)]

    async def count_accounts(self) -> int:
        """Active accounts."""
        query = select(func.count()).select_from(AccountRow).where(AccountRow.revoked_at.is_(None))
        async with self._sessions() as session:
            return int((await session.execute(query)).scalar_one())

    async def accounts_by_id(self, ids: Sequence[int]) -> dict[int, Account]:
        if not ids:
            return {}
        async with self._sessions() as session:
            rows = await session.scalars(select(AccountRow).where(AccountRow.id.in_(set(ids))))
            return {row.id: to_account(row) for row in rows}

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
            return to_account(row)

    async def set_key_hash(self, username: str, key_hash: str) -> bool:
        """Replace the key hash in one statement (a rotation: the old key stops working)."""
        query = update(AccountRow).where(AccountRow.username == username)
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
            return to_account(row)
