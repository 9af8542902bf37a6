"""The reconciler, and crash safety: whatever happened, one pass makes DigitalOcean match
the database, touching nothing it does not own. First through the service on each
database and the stand-in; then (``test_isolated_*``) the reconciler alone on the
in-memory store and DNS of tests/core/fakes.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from app.core.models import Account
from app.core.reconcile import ReconcileReport
from app.db.tables import TxtValueRow
from tests.conftest import ADMIN_TOKEN, Harness, challenge_value
from tests.core.fakes import Core, FailingStore, StoreDown
from tests.core.support import Crash, CrashAt, consistent, reconciler

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
V1, V2, V3 = (challenge_value(n) for n in (1, 2, 3))


async def age(h: Harness, name: str, seconds: int) -> None:
    async with h.services.engine.begin() as conn:
        await conn.execute(update(TxtValueRow).where(TxtValueRow.name == name).values(
            updated_at=datetime.now(UTC) - timedelta(seconds=seconds)))


async def test_a_clean_state_needs_no_repair_and_lists_each_zone_once(harness: Harness) -> None:
    a = await harness.create_account(domain="www.example.com")
    b = await harness.create_account(domain="mail.example.com")
    c = await harness.create_account(domain="x.customer.net", delegated=True)
    for account in (a, b, c):
        await harness.update(account, V1)
    harness.do.clear_requests()
    report = await reconciler(harness).run_once()
    assert report.repairs == 0 and report.failures == [] and report.zones == 2
    calls = [(e.method, e.path, e.query) for e in harness.do.requests()]
    assert len(calls) == 2 and all(m == "GET" and "type=TXT" in q and "per_page=200" in q
                                   for m, _, q in calls)


async def test_values_past_their_lifetime_are_removed(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    await harness.update(account, V2)
    await age(harness, account["fulldomain"], 4000)
    await harness.update(account, V3)  # fresh
    report = await reconciler(harness).run_once()
    assert report.expired == 1  # V1 went when V3 came; the aged V2 expires now
    assert harness.txt_at(account["fulldomain"]) == [V3]
    consistent(harness, await harness.services.store.values_at(account["fulldomain"]),
               account["fulldomain"])


async def test_ghosts_and_duplicates_at_owned_names_go_and_nothing_else_moves(
    harness: Harness,
) -> None:
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    # Behind our back: a duplicate of V1 and a stranger at our name; records at names we
    # do not own, including a TXT right next to ours.
    harness.do.add_record("example.com", "TXT", "_acme-challenge.www", V1)
    harness.do.add_record("example.com", "TXT", "_acme-challenge.www", "someone-else")
    harness.do.add_record("example.com", "TXT", "_acme-challenge.mail", V2)
    harness.do.add_record("example.com", "TXT", "_acme-challenge", V3)
    harness.do.add_record("example.com", "CNAME", "_acme-challenge.ftp", "x.example.org.")
    harness.do.add_records("example.com", [("TXT", f"n{i}", "x") for i in range(250)])
    foreign = {r for r in harness.snapshot() if r[2] != "_acme-challenge.www"}
    report = await reconciler(harness).run_once()
    assert report.ghosts == 2
    assert harness.txt_at(account["fulldomain"]) == [V1]
    assert {r for r in harness.snapshot() if r[2] != "_acme-challenge.www"} == foreign
    consistent(harness, await harness.services.store.values_at(account["fulldomain"]),
               account["fulldomain"])
    assert (await reconciler(harness).run_once()).repairs == 0


async def test_records_at_an_owned_name_that_holds_no_value_go_with_the_zones_listing(
    harness: Harness,
) -> None:
    """A name whose rows are all gone but whose records are not (a ghost the database never
    knew of): the listing its zone gets for the other names settles it too (the SQLite and
    replica chaos runs once left two such records behind)."""
    busy = await harness.create_account(domain="www.example.com")
    idle = await harness.create_account(domain="mail.example.com")
    await harness.update(busy, V1)
    harness.do.add_record("example.com", "TXT", "_acme-challenge.mail", V2)
    harness.do.add_record("example.com", "TXT", "_acme-challenge.mail", V3)
    foreign = {r for r in harness.snapshot() if r[2] != "_acme-challenge.mail"}
    report = await reconciler(harness).run_once()
    assert report.ghosts == 2
    assert harness.txt_at(idle["fulldomain"]) == []
    assert {r for r in harness.snapshot() if r[2] != "_acme-challenge.mail"} == foreign
    assert (await reconciler(harness).run_once()).repairs == 0


async def test_values_deleted_behind_our_back_are_recreated(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    (record,) = harness.do.find_records(account["fulldomain"], "TXT")
    harness.do.delete_record("example.com", record.id)
    report = await reconciler(harness).run_once()
    assert report.recreated == 1
    assert harness.txt_at(account["fulldomain"]) == [V1]
    consistent(harness, await harness.services.store.values_at(account["fulldomain"]),
               account["fulldomain"])


async def test_failed_revocations_are_finished(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    harness.do.update_faults(methods=["DELETE"], error_next=100)
    await harness.client.delete(f"/admin/accounts/{account['username']}", headers=AUTH)
    harness.do.update_faults(error_next=0)
    assert harness.txt_at(account["fulldomain"]) == [V1]
    report = await reconciler(harness).run_once()
    assert report.retried == 1
    assert harness.txt_at(account["fulldomain"]) == []
    assert await harness.services.store.values_at(account["fulldomain"]) == []


async def test_values_of_expired_accounts_are_removed(harness: Harness) -> None:
    from app.core.models import AccountChanges

    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    await harness.services.store.update_account(
        account["username"], AccountChanges(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    report = await reconciler(harness).run_once()
    assert report.revoked == 1 and harness.txt_at(account["fulldomain"]) == []


async def test_only_one_reconciler_at_a_time(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    harness.do.update_faults(latency_ms=200)
    reports: list[ReconcileReport] = list(await asyncio.gather(
        reconciler(harness).run_once(), reconciler(harness).run_once()))
    assert sorted(r.skipped for r in reports) == [False, True]


# Crash safety: a process killed at each point of an update


@pytest.fixture
def crash_at(monkeypatch: pytest.MonkeyPatch) -> CrashAt:
    return CrashAt(monkeypatch)


async def _after_crash(h: Harness, account: dict[str, Any], newest: list[str]) -> None:
    report = await reconciler(h, later=timedelta(minutes=10)).run_once()
    assert report.failures == []
    rows = await h.services.store.values_at(account["fulldomain"])
    consistent(h, rows, account["fulldomain"])
    assert sorted(r.value for r in rows) == sorted(newest)
    assert (await reconciler(h, later=timedelta(minutes=10)).run_once()).repairs == 0


async def test_killed_before_the_create(harness: Harness, crash_at: CrashAt) -> None:
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    crash_at(harness.services.provider, "create_txt")
    with pytest.raises(Crash):
        await harness.update(account, V2)
    crash_at.restart()
    await _after_crash(harness, account, [V1])


async def test_killed_after_the_create_before_the_commit(harness: Harness, crash_at: CrashAt
                                                         ) -> None:
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    crash_at(harness.services.provider, "create_txt", after=True)
    with pytest.raises(Crash):
        await harness.update(account, V2)
    assert harness.txt_at(account["fulldomain"]) == sorted([V1, V2])  # DigitalOcean has it
    crash_at.restart()
    # Its client never heard 200: the orphan goes, the confirmed value stays.
    await _after_crash(harness, account, [V1])


async def test_killed_during_eviction(harness: Harness, crash_at: CrashAt) -> None:
    # Create + evict: the path of a token without domain:update.
    harness.do.update_faults(forbidden_methods=["PUT"])
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    await harness.update(account, V2)
    crash_at(harness.services.provider, "delete_record")
    with pytest.raises(Crash):
        await harness.update(account, V3)
    assert harness.txt_at(account["fulldomain"]) == sorted([V1, V2, V3])
    crash_at.restart()
    await _after_crash(harness, account, [V2, V3])


async def test_killed_while_marking_for_eviction(harness: Harness, crash_at: CrashAt) -> None:
    harness.do.update_faults(forbidden_methods=["PUT"])
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    await harness.update(account, V2)
    crash_at(harness.services.store, "set_state")
    with pytest.raises(Crash):
        await harness.update(account, V3)
    crash_at.restart()
    # Three live rows now, over the window of two: the reconciler trims the oldest.
    report = await reconciler(harness).run_once()
    assert report.failures == [] and report.trimmed == 1
    rows = await harness.services.store.values_at(account["fulldomain"])
    consistent(harness, rows, account["fulldomain"])
    assert sorted(r.value for r in rows) == sorted([V2, V3])
    await harness.update(account, challenge_value(4))
    assert harness.txt_at(account["fulldomain"]) == sorted([V3, challenge_value(4)])


# In isolation: an in-memory store and DNS provider (tests/core/fakes.py), no database

NAME = "_acme-challenge.www.example.com"


async def _isolated_with(*values: str) -> tuple[Core, Account]:
    core = Core.build()
    account = await core.account()
    for value in values:
        await core.update(account, value)
        core.clock.advance(1)
    return core, account


async def test_isolated_a_consistent_state_is_left_alone() -> None:
    core, _ = await _isolated_with(V1, V2)
    before = dict(core.dns.records), dict(core.store.tables.values)
    report = await core.reconciler.run_once()
    assert report.repairs == 0 and report.failures == [] and report.listings == 1
    assert (core.dns.records, core.store.tables.values) == before


async def test_isolated_records_no_row_knows_go_and_only_at_owned_names() -> None:
    core, _ = await _isolated_with(V1)
    ghost = await core.dns.create_txt("example.com", NAME, V2, 30)
    stranger = await core.dns.create_txt("example.com", "_acme-challenge.other.example.com",
                                         V2, 30)
    report = await core.reconciler.run_once()
    assert report.ghosts == 1
    assert ghost.id not in core.dns.records and stranger.id in core.dns.records
    core.consistent(NAME)


async def test_isolated_a_live_value_deleted_behind_our_back_is_recreated() -> None:
    core, _ = await _isolated_with(V1)
    core.dns.records.clear()
    report = await core.reconciler.run_once()
    assert report.recreated == 1 and core.dns.txt_at(NAME) == [V1]
    core.consistent(NAME)


async def test_isolated_values_past_their_lifetime_are_retired_then_deleted() -> None:
    core, _ = await _isolated_with(V1)
    core.clock.advance(3600)
    report = await core.reconciler.run_once()
    assert (report.expired, report.retired) == (1, 1)
    assert core.dns.records == {} and core.store.tables.values == {}


async def test_isolated_a_name_over_its_window_loses_its_oldest() -> None:
    core, account = await _isolated_with(V1, V2)
    # A crash between a create and its eviction: a third live value.
    pending = await core.store.add_value(name=NAME, zone="example.com", value=V3,
                                         account_id=account.id, at=core.clock.now)
    record = await core.dns.create_txt("example.com", NAME, V3, 30)
    async with core.store.unit() as unit:
        await unit.settle(pending.id, record.id, core.clock.now)
        await unit.commit()
    report = await core.reconciler.run_once()
    assert report.trimmed == 1 and core.store.live(NAME) == sorted([V2, V3])
    core.consistent(NAME)


async def test_isolated_a_listing_that_fails_changes_nothing() -> None:
    core, _ = await _isolated_with(V1)
    core.dns.records.clear()
    core.dns.fail("list_txt")
    report = await core.reconciler.run_once()
    assert report.failures and report.recreated == 0
    assert core.store.live(NAME) == [V1]


async def test_isolated_a_pass_the_database_breaks_is_finished_by_the_next() -> None:
    store = FailingStore()
    core = Core.build(store)
    await core.update(await core.account(), V1)
    core.clock.advance(1)
    core.dns.records.clear()  # DigitalOcean lost the live value
    store.fail("set_record_id")  # the database goes as the re-created record is noted
    with pytest.raises(StoreDown):
        await core.reconciler.run_once()
    assert store.tables.values  # the row is still there: it leads
    report = await core.reconciler.run_once()
    # The first pass's record is a ghost now: the second deletes it and creates anew.
    assert report.failures == [] and report.recreated == 1 and report.ghosts == 1
    core.consistent(NAME)


async def test_isolated_one_reconciler_at_a_time() -> None:
    core, _ = await _isolated_with(V1)
    async with core.store.reconcile_lock():
        assert (await core.reconciler.run_once()).skipped
    assert not (await core.reconciler.run_once()).skipped
