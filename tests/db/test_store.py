"""``SqlStore`` on each database: what the in-memory store of tests/core/fakes.py stands
in for must hold here, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from app.core.models import (
    AccountFilter,
    AuditEvent,
    AuditQuery,
    Mode,
    NewAccount,
    ValueState,
)
from app.db.store import SqlStore
from app.errors import NameInUse

AT = datetime(2026, 1, 1, tzinfo=UTC)


def new(name: str = "_acme-challenge.www.example.com", **fields: object) -> NewAccount:
    values: dict[str, object] = {
        "username": "0b0e7a52-6d4f-4a44-9f39-4c1c61d4d7a1", "key_hash": "h", "label": "l",
        "name": name, "zone": "example.com", "mode": Mode.DIRECT,
        "domain": "www.example.com",
        "allowfrom": (ipaddress.ip_network("192.0.2.0/24"),
                      ipaddress.ip_network("2001:db8::/32")),
        "note": "web", "created_at": AT, "expires_at": AT + timedelta(days=90),
        "max_values": 3}
    return NewAccount(**{**values, **fields})  # type: ignore[arg-type]



async def test_one_account_mapping_both_ways_for_the_store_and_the_unit(store: SqlStore
                                                                        ) -> None:
    added = await store.add_account(new())
    got = await store.get_account(added.username)
    async with store.unit() as unit:
        in_unit = await unit.account(added.username)
    assert added == got == in_unit
    assert got is not None and got.allowfrom == new().allowfrom and got.max_values == 3
    assert await store.accounts_by_id([added.id]) == {added.id: added}


async def test_one_active_account_per_name(store: SqlStore) -> None:
    first = await store.add_account(new())
    with pytest.raises(NameInUse):
        await store.add_account(new(username="9a0e7a52-6d4f-4a44-9f39-4c1c61d4d7a1"))
    await store.set_revoked(first.username, AT)
    await store.add_account(new(username="9a0e7a52-6d4f-4a44-9f39-4c1c61d4d7a1"))
    assert await store.count_accounts() == 1


async def test_search_is_a_literal_substring(store: SqlStore) -> None:
    await store.add_account(new(note="100% web_1"))
    await store.add_account(new(name="_acme-challenge.mail.example.com", note="100 web-1",
                                username="9a0e7a52-6d4f-4a44-9f39-4c1c61d4d7a1"))
    found = await store.list_accounts(AccountFilter(search="0% WEB_"))
    assert [a.note for a in found] == ["100% web_1"]


async def test_a_rotation_in_place_replaces_the_row_in_one_step(store: SqlStore) -> None:
    account = await store.add_account(new())
    old = await store.add_value(name=account.name, zone="example.com", value="a",
                                account_id=account.id, at=AT)
    async with store.unit() as unit:
        await unit.settle(old.id, 7, AT)
        await unit.commit()
    pending = await store.add_value(name=account.name, zone="example.com", value="b",
                                    account_id=account.id, at=AT, record_id=7)
    await store.replace_value(old.id, pending.id, 7, AT + timedelta(seconds=1))
    [row] = await store.values_at(account.name)
    assert (row.id, row.value, row.state, row.record_id) == (pending.id, "b",
                                                            ValueState.LIVE, 7)


async def test_the_audit_trail_bounds_its_fields_and_counts_repeated_refusals(
        store: SqlStore) -> None:
    await store.audit(AuditEvent(at=AT, event="update", outcome="ok", client="c" * 100,
                                 detail="d" * 500))
    refusal = AuditEvent(at=AT, event="auth.failed", outcome="forbidden", client="192.0.2.1")
    for n in range(3):
        await store.audit_repeated(replace(refusal, at=AT + timedelta(seconds=n)),
                                   timedelta(minutes=10))
    events = await store.audit_events(AuditQuery())
    assert [e.event for e in events] == ["auth.failed", "update"]  # newest first
    assert (events[0].count, events[0].last_at) == (3, AT + timedelta(seconds=2))
    assert len(events[1].client or "") == 64 and len(events[1].detail or "") == 200
