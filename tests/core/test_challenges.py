"""Putting and removing challenge values (``app.core.challenges``) alone: an in-memory
store and DNS provider, failures at every step. The database leads, DNS follows, and a
failure leaves nothing half-done: no record without a row that tells the reconciler."""

from __future__ import annotations

import pytest

from app.core.models import ValueState
from app.errors import BadTxt, NotPermitted, ProviderFailed, ProviderUnavailable
from tests.core.fakes import Core, FailingStore, Record, StoreDown, txt

V1, V2, V3 = txt(1), txt(2), txt(3)
NAME = "_acme-challenge.www.example.com"


def states(core: Core) -> list[tuple[str, ValueState]]:
    return sorted((v.value, v.state) for v in core.store.tables.values.values())


async def test_a_new_value_is_written_down_before_dns_is_asked() -> None:
    core = Core.build()
    account = await core.account()
    seen: list[list[tuple[str, ValueState]]] = []
    create = core.dns.create_txt

    async def watching(zone: str, name: str, value: str, ttl: int) -> Record:
        seen.append(states(core))
        return await create(zone, name, value, ttl)

    core.dns.create_txt = watching  # type: ignore[method-assign]
    assert await core.update(account, V1) == V1
    assert seen == [[(V1, ValueState.PENDING)]]
    assert states(core) == [(V1, ValueState.LIVE)]
    core.consistent(NAME)
    assert core.store.outcomes("update") == ["ok"]


async def test_a_repeat_costs_no_dns_call_and_is_newest_again() -> None:
    core = Core.build()
    account = await core.account()
    await core.update(account, V1)
    await core.update(account, V2)
    core.dns.calls.clear()
    core.clock.advance(60)
    await core.update(account, V1)
    assert core.dns.calls == []
    newest = max(core.store.tables.values.values(), key=lambda v: v.updated_at)
    assert newest.value == V1 and newest.updated_at == core.clock.now
    assert core.store.outcomes("update") == ["ok", "ok", "ok"]


async def test_a_full_name_takes_a_new_value_in_place_of_its_oldest() -> None:
    core = Core.build()
    account = await core.account()
    for n, value in enumerate((V1, V2)):
        core.clock.advance(n)
        await core.update(account, value)
    core.dns.calls.clear()
    await core.update(account, V3)
    assert core.dns.calls == ["update_txt"]
    assert core.store.live(NAME) == sorted([V2, V3])
    core.consistent(NAME)


async def test_without_update_scope_a_new_value_is_created_and_the_oldest_deleted() -> None:
    core = Core.build()
    account = await core.account()
    await core.update(account, V1)
    core.clock.advance(1)
    await core.update(account, V2)
    core.dns.fail("update_txt", NotPermitted("no domain:update"))
    await core.update(account, V3)
    assert core.challenges.rotate_in_place is False
    assert core.store.live(NAME) == sorted([V2, V3])
    core.consistent(NAME)


async def test_a_record_deleted_behind_our_back_is_created_afresh() -> None:
    core = Core.build()
    account = await core.account()
    await core.update(account, V1)
    core.clock.advance(1)
    await core.update(account, V2)
    oldest = min(core.dns.records.values(), key=lambda r: r.id)
    del core.dns.records[oldest.id]
    await core.update(account, V3)
    assert core.store.live(NAME) == sorted([V2, V3])
    core.consistent(NAME)


async def test_a_refused_create_leaves_no_row_and_no_record() -> None:
    core = Core.build()
    account = await core.account()
    core.dns.fail("create_txt", ProviderFailed("503", retry_after=7))
    with pytest.raises(ProviderUnavailable) as caught:
        await core.update(account, V1)
    assert caught.value.retry_after == 7
    assert core.store.tables.values == {} and core.dns.records == {}
    assert core.store.outcomes("update") == ["dns_provider_unavailable"]


async def test_a_create_whose_answer_was_lost_is_adopted_when_it_landed() -> None:
    core = Core.build()
    account = await core.account()
    core.dns.fail("create_txt", lost=True)
    await core.update(account, V1)
    assert core.dns.calls[-2:] == ["create_txt", "find_txt"]
    core.consistent(NAME)
    assert core.store.live(NAME) == [V1]


async def test_a_create_of_unknown_outcome_keeps_its_pending_row_for_the_reconciler() -> None:
    core = Core.build()
    account = await core.account()
    core.dns.fail("create_txt", lost=True)
    core.dns.fail("find_txt")
    with pytest.raises(ProviderUnavailable):
        await core.update(account, V1)
    assert states(core) == [(V1, ValueState.PENDING)]
    assert core.dns.txt_at(NAME) == [V1]
    core.clock.advance(60)
    report = await core.reconciler.run_once()
    assert report.forgotten == 1 and report.ghosts == 1 and report.failures == []
    assert core.dns.records == {} and core.store.tables.values == {}


async def test_a_database_gone_before_the_row_means_no_dns_call() -> None:
    store = FailingStore()
    core = Core.build(store)
    account = await core.account()
    core.dns.calls.clear()
    store.fail("add_value")
    with pytest.raises(StoreDown):
        await core.update(account, V1)
    assert core.dns.calls == [] and core.dns.records == {}
    assert store.tables.values == {}


async def test_a_database_gone_after_the_create_is_repaired_by_the_reconciler() -> None:
    store = FailingStore()
    core = Core.build(store)
    account = await core.account()
    await core.update(account, V1)
    store.fail("unit.settle")
    with pytest.raises(StoreDown):
        await core.update(account, V2)
    assert core.dns.txt_at(NAME) == sorted([V1, V2])  # DNS has it, the client heard no 200
    core.clock.advance(60)
    report = await core.reconciler.run_once()
    assert report.failures == [] and report.forgotten == 1 and report.ghosts == 1
    assert core.store.live(NAME) == [V1]
    core.consistent(NAME)


async def test_a_repeat_whose_commit_fails_leaves_nothing_of_it() -> None:
    store = FailingStore()
    core = Core.build(store)
    account = await core.account()
    await core.update(account, V1)
    before = dict(store.tables.values), dict(store.tables.accounts), list(store.tables.audit)
    core.clock.advance(60)
    store.fail("unit.commit")
    with pytest.raises(StoreDown):
        await core.update(account, V1)
    assert (store.tables.values, store.tables.accounts, store.tables.audit) == before
    await core.update(account, V1)  # and the name's lock was given back
    assert store.tables.accounts[account.id].last_used_at == core.clock.now


async def test_a_bad_value_is_refused_and_audited_with_nothing_written() -> None:
    core = Core.build()
    account = await core.account()
    with pytest.raises(BadTxt):
        await core.update(account, "not a challenge value")
    assert core.store.tables.values == {} and core.dns.calls == ["list_zones"]
    assert core.store.outcomes("update") == ["bad_txt"]


async def test_cleanup_retires_a_value_without_a_dns_call() -> None:
    core = Core.build()
    account = await core.account()
    await core.update(account, V1)
    core.dns.calls.clear()
    assert await core.cleanup(account, V1) is True
    assert core.dns.calls == [] and states(core) == [(V1, ValueState.RETIRED)]
    assert await core.cleanup(account, V2) is False
    assert core.store.outcomes("cleanup") == ["ok", "absent"]


async def test_a_removal_that_fails_in_dns_stays_deleting_for_the_reconciler() -> None:
    core = Core.build()
    account = await core.account()
    await core.update(account, V1)
    core.clock.advance(1)
    await core.update(account, V2)
    core.dns.fail("delete_record")
    removal = await core.challenges.remove_all(account)
    assert (removal.removed, removal.pending) == (1, 1)
    assert [s for _, s in states(core)] == [ValueState.DELETING]
    report = await core.reconciler.run_once()
    assert report.retried == 1 and core.dns.records == {} and core.store.tables.values == {}


@pytest.mark.parametrize("full", [False, True], ids=["create", "in-place"])
async def test_a_new_value_is_live_and_audited_together_or_not_at_all(full: bool) -> None:
    """The row made LIVE, last-used and the request's audit row are one transaction after
    DigitalOcean's answer: when it cannot be written, the client hears no success and the
    trail shows none; the row stays PENDING and the reconciler settles it either way."""
    store = FailingStore()
    core = Core.build(store)
    account = await core.account()
    for value in (V1, V2) if full else (V1,):
        await core.update(account, value)
    used = core.store.tables.accounts[account.id].last_used_at
    core.clock.advance(5)
    store.fail("unit.commit", nth=2)  # the first is the request's own (auth, count)
    with pytest.raises(StoreDown):
        await core.update(account, V3)
    assert core.store.outcomes("update") == ["ok"] * (2 if full else 1)  # no "ok" for V3
    assert core.store.tables.accounts[account.id].last_used_at == used
    assert (V3, ValueState.PENDING) in states(core)
    assert V3 in core.dns.txt_at(NAME)  # DigitalOcean has it: the reconciler decides
    core.clock.advance(60)
    report = await core.reconciler.run_once()
    assert report.failures == []
    core.consistent(NAME)
