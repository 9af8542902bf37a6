"""Importing acme-dns accounts (``app.core.importing``) alone, on the in-memory store:
each account lands whole or not at all, and a run the database broke is finished by
running it again."""

from __future__ import annotations

import uuid

import pytest

from app.core.importing import Importer, Outcome, SourceAccount
from app.core.zones import ZoneResolver
from tests.core.fakes import Core, FailingStore, StoreDown

HASH = "$2a$10$" + "a" * 53  # the form acme-dns stores (never checked until first use)


def source(n: int, **fields: object) -> SourceAccount:
    values: dict[str, object] = {"username": str(uuid.UUID(int=n)), "password_hash": HASH,
                                 "subdomain": f"label{n}", "allowfrom": ["192.0.2.0/24"]}
    return SourceAccount(**{**values, **fields})  # type: ignore[arg-type]


def importer(core: Core) -> Importer:
    return Importer(core.store, ZoneResolver(core.dns), delegation_domain="acme.example.org",
                    clock=core.clock)


async def test_each_account_lands_at_its_old_name_with_its_old_hash() -> None:
    core = Core.build()
    report = await importer(core).run([source(1)], dry_run=False)
    assert report.results == [(str(uuid.UUID(int=1)), Outcome.IMPORTED,
                               "label1.acme.example.org")]
    [account] = core.store.tables.accounts.values()
    assert account.key_hash == f"bcrypt${HASH}" and account.zone == "example.org"
    assert core.store.outcomes("account.import") == ["ok"]


async def test_invalid_accounts_are_reported_and_not_stored() -> None:
    core = Core.build()
    report = await importer(core).run([
        source(1, username="not-a-uuid"), source(2, subdomain="no dots.allowed"),
        source(3, allowfrom=None), source(4, password_hash="plain"),
    ], dry_run=False)
    assert [o for _, o, _ in report.results] == [Outcome.INVALID] * 4
    assert core.store.tables.accounts == {} and core.store.tables.audit == []


async def test_a_dry_run_writes_nothing() -> None:
    core = Core.build()
    report = await importer(core).run([source(1), source(2)], dry_run=True)
    assert report.count(Outcome.WOULD_IMPORT) == 2
    assert core.store.tables.accounts == {} and core.store.tables.audit == []


async def test_a_run_the_database_broke_is_finished_by_running_it_again() -> None:
    store = FailingStore()
    core = Core.build(store)
    sources = [source(1), source(2), source(3)]
    store.fail("add_account", nth=2)
    with pytest.raises(StoreDown):
        await importer(core).run(sources, dry_run=False)
    assert len(store.tables.accounts) == 1 and len(store.tables.audit) == 1
    report = await importer(core).run(sources, dry_run=False)
    assert [o for _, o, _ in report.results] == [Outcome.EXISTS, Outcome.IMPORTED,
                                                  Outcome.IMPORTED]
    assert len(store.tables.accounts) == 3 and len(store.tables.audit) == 3


async def test_a_name_already_bound_is_a_conflict_not_a_second_account() -> None:
    core = Core.build()
    await importer(core).run([source(1)], dry_run=False)
    report = await importer(core).run([source(2, subdomain="label1")], dry_run=False)
    assert [o for _, o, _ in report.results] == [Outcome.CONFLICT]
    assert len(core.store.tables.accounts) == 1
