"""What the persistence tests set up on a store: a store on an engine of its own, and an
account whose one value is live."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from app.core.models import Account, Mode, NewAccount
from app.db.engine import create_engine
from app.db.store import SqlStore

NAME = "_acme-challenge.www.example.com"
VALUE = "v" * 43


@asynccontextmanager
async def store_on(database_url: str) -> AsyncIterator[SqlStore]:
    """``SqlStore`` on ``database_url`` (migrated, empty), on an engine of its own."""
    engine = create_engine(database_url)
    store = SqlStore(engine)
    try:
        yield store
    finally:
        await store.close()
        await engine.dispose()


async def live_account(store: SqlStore, host: str = "www") -> Account:
    """An account at NAME (or ``_acme-challenge.<host>.example.com``) whose value VALUE
    is live (record 4242)."""
    name = f"_acme-challenge.{host}.example.com"
    account = await store.add_account(NewAccount(
        username=str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), key_hash="h" * 64, label=host,
        name=name, zone="example.com", mode=Mode.DIRECT, domain=f"{host}.example.com",
        allowfrom=(), note=None, created_at=datetime(2026, 1, 1, tzinfo=UTC)))
    value = await store.add_value(name=name, zone="example.com", value=VALUE,
                                  account_id=account.id, at=datetime(2026, 1, 2, tzinfo=UTC))
    async with store.unit() as unit:
        await unit.settle(value.id, 4242, datetime(2026, 1, 2, tzinfo=UTC))
    return account
