"""Test data in bulk: distinct DNS-01 values, and credentials and live values written
straight into a fresh database (as the services would shape them, thousands a second),
for runs that need many accounts before they start.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import Table, func, insert, select

from app.core.keys import hash_key, new_key, new_username
from app.core.names import challenge_name, new_delegation_label, relative_name
from app.db.engine import create_engine
from app.db.tables import AccountRow, TxtValueRow
from tests.support.processes import Reporter


class RecordWriter(Protocol):
    """Where a live value's record goes (``StandinProcess``)."""

    def add_record(self, zone: str, type_: str, name: str, data: str, ttl: int = 30) -> int: ...


class Values:
    """Distinct, well-formed 43-character DNS-01 values, never repeated across runs."""

    def __init__(self) -> None:
        self._salt = secrets.token_hex(8)
        self._n = 0

    def __call__(self) -> str:
        self._n += 1
        digest = hashlib.sha256(f"{self._salt}-{self._n}".encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()



@dataclass(frozen=True)
class Credential:
    id: int
    username: str
    key: str
    label: str
    name: str
    zone: str


def seed_accounts(database_url: str, count: int, *, zones: Sequence[str],
                  keep: Iterable[int] = (), batch: int = 5000,
                  progress: Reporter | None = None) -> dict[int, Credential]:
    """Insert ``count`` direct accounts (``_acme-challenge.h<i>.<zone>``) in batches, as
    ``AccountService.create`` would shape them (uuid4 username and label, SHA-256 key
    hash); returns the credentials (with their keys) of the indices in ``keep``.

    Must run on a freshly created database: account ids are then 1..count.
    """
    wanted = set(keep)
    kept: dict[int, Credential] = {}
    now = dt.datetime.now(dt.UTC)

    async def insert_all() -> None:
        engine = create_engine(database_url, pool=False)
        try:
            async with engine.connect() as conn:
                start = int((await conn.execute(select(func.count()).select_from(
                    AccountRow))).scalar() or 0)
            if start:
                raise RuntimeError("seed_accounts needs an empty accounts table")
            for first in range(0, count, batch):
                rows: list[dict[str, Any]] = []
                for i in range(first, min(first + batch, count)):
                    zone = zones[i % len(zones)]
                    domain = f"h{i}.{zone}"
                    key, username, label = new_key(), new_username(), new_delegation_label()
                    name = challenge_name(domain)
                    rows.append({"username": username, "key_hash": hash_key(key),
                                 "label": label, "name": name, "zone": zone, "mode": "direct",
                                 "domain": domain, "allowfrom": [], "note": None,
                                 "created_at": now})
                    if i in wanted:
                        kept[i] = Credential(i + 1, username, key, label, name, zone)
                async with engine.begin() as conn:
                    await conn.execute(insert(cast(Table, AccountRow.__table__)), rows)
                if progress is not None:
                    progress.update(min(first + batch, count), "seeding credentials")
        finally:
            await engine.dispose()

    asyncio.run(insert_all())
    return kept


def seed_live_values(database_url: str, standin: RecordWriter,
                     accounts: Sequence[tuple[int, str, str]], values: Values,
                     progress: Reporter | None = None) -> int:
    """One live TXT value per (account id, name, zone): a record in the stand-in and its
    ``txt_values`` row, as if the account had updated once. Returns how many."""
    now = dt.datetime.now(dt.UTC)
    rows = []
    for n, (account_id, name, zone) in enumerate(accounts):
        value = values()
        record_id = standin.add_record(zone, "TXT", relative_name(name, zone), value)
        rows.append({"name": name, "zone": zone, "value": value, "state": "live",
                     "record_id": record_id, "account_id": account_id, "created_at": now,
                     "updated_at": now})
        if progress is not None:
            progress.update(n + 1, "seeding live values")

    async def insert_all() -> None:
        engine = create_engine(database_url, pool=False)
        try:
            async with engine.begin() as conn:
                if rows:
                    await conn.execute(insert(cast(Table, TxtValueRow.__table__)), rows)
        finally:
            await engine.dispose()

    asyncio.run(insert_all())
    return len(rows)
