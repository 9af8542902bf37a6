"""Issuing, rotating and revoking credentials (``app.core.accounts``) alone: an in-memory
store and DNS provider. A failed step leaves no account half-made or half-revoked."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.core.accounts import Registration
from app.core.keys import verify_key
from app.core.models import AccountFilter, AuditQuery, Mode, ValueState
from app.errors import (
    AccountNotFound,
    InvalidInput,
    NameInUse,
    ProviderUnavailable,
    RegistrationClosed,
    ZoneNotFound,
)
from tests.core.fakes import Core, FailingStore, StoreDown, txt


async def test_a_direct_account_is_bound_to_the_challenge_name_in_its_zone() -> None:
    core = Core.build()
    issued = await core.accounts.create(domain="WWW.Example.com", delegated=False,
                                        note=" web ")
    account = issued.account
    assert (account.name, account.zone, account.mode) == (
        "_acme-challenge.www.example.com", "example.com", Mode.DIRECT)
    assert account.note == "web"
    # The key is shown once; the store holds only its hash.
    stored = core.store.tables.accounts[account.id]
    assert issued.key not in stored.key_hash and verify_key(issued.key, stored.key_hash)
    assert core.store.outcomes("account.create") == ["ok"]


async def test_a_delegated_account_gets_a_random_name_below_the_delegation_domain() -> None:
    core = Core.build()
    a, b = [(await core.accounts.create(domain="x.customer.net", delegated=True)).account
            for _ in range(2)]
    assert a.name.endswith(".acme.example.org") and a.zone == "example.org"
    assert a.name != b.name and a.mode is Mode.DELEGATED


async def test_a_name_in_no_zone_is_refused_and_nothing_is_stored() -> None:
    core = Core.build()
    with pytest.raises(ZoneNotFound):
        await core.accounts.create(domain="www.elsewhere.net", delegated=False)
    assert core.store.tables.accounts == {} and core.store.tables.audit == []


async def test_zones_unknown_while_dns_is_down_refuse_with_a_retry() -> None:
    core = Core.build()
    core.dns.fail("list_zones")
    with pytest.raises(ProviderUnavailable):
        await core.account()
    assert core.store.tables.accounts == {}


async def test_one_active_account_per_name_and_a_revoked_one_frees_it() -> None:
    core = Core.build()
    first = await core.account()
    with pytest.raises(NameInUse):
        await core.account()
    await core.accounts.revoke(first.username)
    second = await core.account()
    assert second.name == first.name and second.username != first.username


async def test_an_account_the_store_failed_to_add_leaves_no_trace() -> None:
    store = FailingStore()
    core = Core.build(store)
    store.fail("add_account")
    with pytest.raises(StoreDown):
        await core.account()
    assert store.tables.accounts == {} and store.tables.audit == []


async def test_bad_input_is_refused_before_anything_is_stored() -> None:
    core = Core.build()
    for bad in ({"note": "x" * 501}, {"max_values": 0},
                {"expires_at": core.clock.now - timedelta(seconds=1)}):
        with pytest.raises(InvalidInput):
            await core.accounts.create(domain="www.example.com", delegated=False, **bad)
    assert core.dns.calls == [] and core.store.tables.accounts == {}


async def test_registration_closed_refuses_and_counts_repeats_on_one_audit_row() -> None:
    core = Core.build(registration=Registration.CLOSED)
    for _ in range(3):
        with pytest.raises(RegistrationClosed):
            await core.accounts.register((), client="192.0.2.7", token_given=False)
    [row] = core.store.tables.audit
    assert (row.event, row.outcome, row.count) == ("register", "registration_closed", 3)
    assert core.store.tables.accounts == {}


async def test_registration_stops_at_the_most_accounts_allowed() -> None:
    core = Core.build(max_registered=1)
    issued = await core.accounts.register((), client="192.0.2.7", token_given=False)
    assert issued.account.mode is Mode.DELEGATED
    with pytest.raises(RegistrationClosed):
        await core.accounts.register((), client="192.0.2.7", token_given=False)
    assert len(core.store.tables.accounts) == 1


async def test_token_registration_needs_the_token() -> None:
    core = Core.build(registration=Registration.TOKEN)
    with pytest.raises(RegistrationClosed):
        await core.accounts.register((), client=None, token_given=False)
    await core.accounts.register((), client=None, token_given=True)


async def test_rotation_replaces_the_key_and_keeps_name_and_values() -> None:
    core = Core.build()
    issued = await core.accounts.create(domain="www.example.com", delegated=False)
    await core.update(issued.account, txt(1))
    rotated = await core.accounts.rotate(issued.account.username.upper())
    stored = core.store.tables.accounts[issued.account.id]
    assert verify_key(rotated.key, stored.key_hash)
    assert not verify_key(issued.key, stored.key_hash)
    assert core.store.live(issued.account.name) == [txt(1)]


async def test_a_revoked_account_cannot_be_rotated_or_found_by_junk() -> None:
    core = Core.build()
    account = await core.account()
    await core.accounts.revoke(account.username)
    with pytest.raises(AccountNotFound):
        await core.accounts.rotate(account.username)
    with pytest.raises(AccountNotFound):
        await core.accounts.get("not-a-username%")


async def test_revocation_removes_the_values_from_dns_and_the_store() -> None:
    core = Core.build()
    account = await core.account()
    await core.update(account, txt(1))
    revoked, removal = await core.accounts.revoke(account.username)
    assert revoked.revoked_at == core.clock.now and removal.removed == 1
    assert core.dns.records == {} and core.store.tables.values == {}
    assert await core.accounts.list_accounts() == []
    assert [a.username for a in await core.accounts.list_accounts(
        AccountFilter(include_revoked=True))] == [account.username]


async def test_a_revocation_the_store_could_not_record_removes_nothing() -> None:
    store = FailingStore()
    core = Core.build(store)
    account = await core.account()
    await core.update(account, txt(1))
    store.fail("set_revoked")
    with pytest.raises(StoreDown):
        await core.accounts.revoke(account.username)
    assert store.tables.accounts[account.id].revoked_at is None
    assert core.dns.txt_at(account.name) == [txt(1)] and core.store.live(account.name)


async def test_a_revocation_dns_failed_to_finish_is_finished_by_the_reconciler() -> None:
    core = Core.build()
    account = await core.account()
    await core.update(account, txt(1))
    core.dns.fail("delete_record")
    _, removal = await core.accounts.revoke(account.username)
    assert (removal.removed, removal.pending) == (0, 1)
    assert [v.state for v in core.store.tables.values.values()] == [ValueState.DELETING]
    report = await core.reconciler.run_once()
    assert report.retried == 1 and core.dns.records == {} and core.store.tables.values == {}


async def test_delete_revokes_then_forgets_the_account_and_keeps_the_trail() -> None:
    core = Core.build()
    account = await core.account()
    await core.update(account, txt(1))
    await core.accounts.delete(account.username, client="cli")
    assert core.store.tables.accounts == {} and core.dns.records == {}
    trail = await core.accounts.audit_trail(AuditQuery(username=account.username))
    assert [e.event for e in trail][:3] == ["account.delete", "account.revoke", "update"]
