"""In-memory stand-ins for the core's ports (``app.core.ports``), for testing the core's
services alone: fast (no database, no process, no sleep) and able to fail on any call.

- ``MemoryStore``: the store, with ``SqlStore``'s meaning (each method one transaction;
  a unit's writes land together at its commit, or not at all).
- ``FailingStore``: a ``MemoryStore`` that raises ``StoreDown`` on a chosen call
  (``fail("set_state")``, ``fail("unit.commit")``), as a database gone at that moment.
- ``MemoryDns``: the DNS provider, with DigitalOcean's meaning (ids, relative names,
  404 as ``RecordMissing``), and faults: a refusal, or a change made whose answer is lost.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from app.core.access import Authorized
from app.core.accounts import AccountService, Registration
from app.core.challenges import ChallengeService
from app.core.models import (
    Account,
    AccountChanges,
    AccountFilter,
    AuditEvent,
    AuditQuery,
    NewAccount,
    TxtValue,
    ValueState,
)
from app.core.names import is_within, relative_name
from app.core.ports import AccountStore, ChallengeStore, DnsProvider, ReconcileStore
from app.core.reconcile import Reconciler
from app.core.zones import ZoneResolver
from app.errors import (
    DomainError,
    NameInUse,
    ProviderError,
    ProviderFailed,
    ProviderRejected,
    RecordMissing,
)


class StoreDown(Exception):
    """The database went away at this call: nothing of it was written."""


class Clock:
    """Time that moves only when told."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class _Tables:
    accounts: dict[int, Account]
    values: dict[int, TxtValue]
    audit: list[AuditEvent]


class MemoryStore:
    """``ChallengeStore``, ``AccountStore`` and ``ReconcileStore`` in memory."""

    def __init__(self) -> None:
        self.tables = _Tables({}, {}, [])
        self._ids = itertools.count(1)
        self._locks: dict[str, asyncio.Lock] = {}
        self._reconciling = asyncio.Lock()

    def _call(self, method: str) -> None:
        """Every operation passes here first (``FailingStore`` fails some)."""

    # units

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[MemoryUnit]:
        unit = MemoryUnit(self)
        try:
            yield unit
        except DomainError:
            await unit.commit()  # an answer: its audit row is kept, as SqlStore does
            raise
        except BaseException:
            unit.rollback()
            raise
        await unit.commit()

    # accounts

    async def add_account(self, account: NewAccount) -> Account:
        self._call("add_account")
        taken = any((a.name == account.name and a.revoked_at is None)
                    or a.username == account.username
                    for a in self.tables.accounts.values())
        if taken:
            raise NameInUse(f"an active account is already bound to {account.name}")
        added = Account(id=next(self._ids), last_used_at=None, revoked_at=None,
                        **{f.name: getattr(account, f.name) for f in fields(account)})
        self.tables.accounts[added.id] = added
        return added

    def _by_username(self, username: str) -> Account | None:
        return next((a for a in self.tables.accounts.values() if a.username == username),
                    None)

    async def get_account(self, username: str) -> Account | None:
        self._call("get_account")
        return self._by_username(username)

    async def list_accounts(self, where: AccountFilter) -> list[Account]:
        self._call("list_accounts")

        def wanted(a: Account) -> bool:
            stale = where.stale_before
            text = where.search.lower() if where.search else None
            return ((where.include_revoked or a.revoked_at is None)
                    and (where.mode is None or a.mode is where.mode)
                    and (where.domain is None or a.domain == where.domain)
                    and (stale is None or (a.last_used_at or a.created_at) < stale)
                    and (where.expires_before is None or (
                        a.expires_at is not None and a.expires_at < where.expires_before))
                    and (text is None or any(text in (f or "").lower() for f in (
                        a.username, a.name, a.domain, a.note))))

        found = sorted((a for a in self.tables.accounts.values() if wanted(a)),
                       key=lambda a: a.id)
        return found[where.offset:where.offset + where.limit]

    async def count_accounts(self) -> int:
        self._call("count_accounts")
        return sum(1 for a in self.tables.accounts.values() if a.revoked_at is None)

    async def accounts_by_id(self, ids: Sequence[int]) -> dict[int, Account]:
        self._call("accounts_by_id")
        return {i: self.tables.accounts[i] for i in set(ids) if i in self.tables.accounts}

    async def update_account(self, username: str, changes: AccountChanges) -> Account | None:
        self._call("update_account")
        account = self._by_username(username)
        if account is None:
            return None
        if changes.allowfrom is not None:
            account = replace(account, allowfrom=changes.allowfrom)
        if changes.note is not None or changes.clear_note:
            account = replace(account, note=changes.note)
        if changes.expires_at is not None or changes.clear_expiry:
            account = replace(account, expires_at=changes.expires_at)
        self.tables.accounts[account.id] = account
        return account

    def _set_key_hash(self, username: str, key_hash: str, expected: str | None) -> bool:
        account = self._by_username(username)
        if account is None or (expected is not None and account.key_hash != expected):
            return False
        self.tables.accounts[account.id] = replace(account, key_hash=key_hash)
        return True

    async def set_key_hash(self, username: str, key_hash: str) -> bool:
        self._call("set_key_hash")
        return self._set_key_hash(username, key_hash, None)

    async def delete_account(self, username: str) -> bool:
        self._call("delete_account")
        account = self._by_username(username)
        if account is None:
            return False
        del self.tables.accounts[account.id]
        for value in list(self.tables.values.values()):  # ON DELETE SET NULL
            if value.account_id == account.id:
                self.tables.values[value.id] = replace(value, account_id=None)
        return True

    async def set_revoked(self, username: str, at: datetime) -> Account | None:
        self._call("set_revoked")
        account = self._by_username(username)
        if account is None:
            return None
        if account.revoked_at is None:
            account = replace(account, revoked_at=at)
            self.tables.accounts[account.id] = account
        return account

    # values

    @asynccontextmanager
    async def name_lock(self, name: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            yield

    @asynccontextmanager
    async def reconcile_lock(self) -> AsyncIterator[bool]:
        if self._reconciling.locked():
            yield False
            return
        async with self._reconciling:
            yield True

    async def owned_names(self) -> dict[str, set[str]]:
        self._call("owned_names")
        owned: dict[str, set[str]] = {}
        for zone, name in [*((a.zone, a.name) for a in self.tables.accounts.values()),
                           *((v.zone, v.name) for v in self.tables.values.values())]:
            owned.setdefault(zone, set()).add(name)
        return owned

    async def names_with_values(self) -> set[str]:
        self._call("names_with_values")
        return {v.name for v in self.tables.values.values()}

    def _ordered(self, wanted: Callable[[TxtValue], bool]) -> list[TxtValue]:
        return sorted((v for v in self.tables.values.values() if wanted(v)),
                      key=lambda v: (v.updated_at, v.id))

    async def values_at(self, name: str) -> list[TxtValue]:
        self._call("values_at")
        return self._ordered(lambda v: v.name == name)

    async def values_of_account(self, account_id: int) -> list[TxtValue]:
        self._call("values_of_account")
        return self._ordered(lambda v: v.account_id == account_id)

    async def add_value(
        self, *, name: str, zone: str, value: str, account_id: int, at: datetime,
        record_id: int | None = None,
    ) -> TxtValue:
        self._call("add_value")
        added = TxtValue(id=next(self._ids), name=name, zone=zone, value=value,
                         state=ValueState.PENDING, record_id=record_id,
                         account_id=account_id, created_at=at, updated_at=at)
        self.tables.values[added.id] = added
        return added

    def _change(self, value_id: int, **fields: Any) -> None:
        if value_id in self.tables.values:
            self.tables.values[value_id] = replace(self.tables.values[value_id], **fields)

    async def replace_value(self, old_id: int, new_id: int, record_id: int, at: datetime
                            ) -> None:
        self._call("replace_value")
        self.tables.values.pop(old_id, None)
        self._change(new_id, state=ValueState.LIVE, record_id=record_id, updated_at=at)

    async def bump_value(self, value_id: int, at: datetime) -> None:
        self._call("bump_value")
        self._change(value_id, state=ValueState.LIVE, updated_at=at)

    async def set_state(self, value_ids: Sequence[int], state: ValueState) -> None:
        self._call("set_state")
        for value_id in value_ids:
            self._change(value_id, state=state)

    async def set_record_id(self, value_id: int, record_id: int) -> None:
        self._call("set_record_id")
        self._change(value_id, record_id=record_id)

    async def delete_values(self, value_ids: Sequence[int]) -> None:
        self._call("delete_values")
        for value_id in value_ids:
            self.tables.values.pop(value_id, None)

    # audit

    def _audit(self, event: AuditEvent) -> None:
        self.tables.audit.append(event)

    def _audit_repeated(self, event: AuditEvent, window: timedelta) -> None:
        same = next((i for i in reversed(range(len(self.tables.audit)))
                     if _same_refusal(self.tables.audit[i], event, event.at - window)), None)
        if same is None:
            self.tables.audit.append(event)
        else:
            seen = self.tables.audit[same]
            self.tables.audit[same] = replace(seen, count=seen.count + 1, last_at=event.at)

    async def audit(self, event: AuditEvent) -> None:
        self._call("audit")
        self._audit(event)

    async def audit_repeated(self, event: AuditEvent, window: timedelta) -> None:
        async with self.unit() as unit:
            await unit.audit_repeated(event, window)

    async def audit_events(self, where: AuditQuery) -> list[AuditEvent]:
        self._call("audit_events")
        found = [e for e in reversed(self.tables.audit)
                 if (where.since is None or e.at >= where.since)
                 and (where.username is None or e.username == where.username)
                 and (where.event is None or e.event == where.event)]
        return found[:where.limit]

    # what a test reads

    def live(self, name: str) -> list[str]:
        return sorted(v.value for v in self.tables.values.values()
                      if v.name == name and v.state is ValueState.LIVE)

    def outcomes(self, event: str | None = None) -> list[str]:
        return [e.outcome for e in self.tables.audit if event is None or e.event == event]


def _same_refusal(seen: AuditEvent, event: AuditEvent, since: datetime) -> bool:
    return ((seen.event, seen.outcome, seen.client, seen.username, seen.name)
            == (event.event, event.outcome, event.client, event.username, event.name)
            and seen.at >= since)


class MemoryUnit:
    """A unit of work: reads see the store; writes wait for the commit, all together."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._writes: list[Callable[[], object]] = []
        self._held: list[asyncio.Lock] = []
        self._open = True

    def _check(self, method: str) -> None:
        if not self._open:
            raise RuntimeError("this unit of work has ended")
        self._store._call(f"unit.{method}")

    async def account(self, username: str) -> Account | None:
        self._check("account")
        return self._store._by_username(username)

    async def record_repeat(self, name: str, value: str, at: datetime, *, account_id: int,
                            event: AuditEvent) -> bool:
        self._check("record_repeat")
        lock = self._store._locks.setdefault(name, asyncio.Lock())
        if lock.locked():
            return False
        await lock.acquire()
        self._held.append(lock)
        ids = [v.id for v in self._store.tables.values.values()
               if v.name == name and v.value == value and v.state is ValueState.LIVE]
        if not ids:
            return False
        accounts = self._store.tables.accounts

        def write() -> None:
            for value_id in ids:
                self._store._change(value_id, updated_at=at)
            if account_id in accounts:
                accounts[account_id] = replace(accounts[account_id], last_used_at=at)
            self._store._audit(event)

        self._writes.append(write)
        return True

    async def touch_account(self, account_id: int, at: datetime) -> None:
        self._check("touch_account")
        accounts = self._store.tables.accounts

        def touch() -> None:
            if account_id in accounts:
                accounts[account_id] = replace(accounts[account_id], last_used_at=at)

        self._writes.append(touch)

    async def set_key_hash(self, username: str, key_hash: str, *, expected: str) -> bool:
        self._check("set_key_hash")
        account = self._store._by_username(username)
        if account is None or account.key_hash != expected:
            return False
        self._writes.append(lambda: self._store._set_key_hash(username, key_hash, expected))
        return True

    async def settle(self, value_id: int, record_id: int, at: datetime, *,
                     replaces: int | None = None) -> None:
        self._check("settle")

        def write() -> None:
            if replaces is not None:
                self._store.tables.values.pop(replaces, None)
            self._store._change(value_id, state=ValueState.LIVE, record_id=record_id,
                                updated_at=at)

        self._writes.append(write)

    async def audit(self, event: AuditEvent) -> None:
        self._check("audit")
        self._writes.append(lambda: self._store._audit(event))

    async def audit_repeated(self, event: AuditEvent, window: timedelta) -> None:
        self._check("audit_repeated")
        self._writes.append(lambda: self._store._audit_repeated(event, window))

    async def commit(self) -> None:
        if not self._open:
            return
        try:
            self._store._call("unit.commit")
        except BaseException:
            self.rollback()
            raise
        for write in self._writes:
            write()
        self._end()

    def rollback(self) -> None:
        if self._open:
            self._end()

    def _end(self) -> None:
        self._open = False
        self._writes.clear()
        while self._held:
            self._held.pop().release()


class FailingStore(MemoryStore):
    """A ``MemoryStore`` whose chosen calls raise ``StoreDown`` (the n-th call of a method,
    ``"unit.<method>"`` for a unit's), as a database that went away at that moment."""

    def __init__(self) -> None:
        super().__init__()
        self._failing: dict[str, int] = {}
        self.calls: list[str] = []

    def fail(self, method: str, *, nth: int = 1) -> None:
        self._failing[method] = nth

    def heal(self) -> None:
        self._failing.clear()

    def _call(self, method: str) -> None:
        self.calls.append(method)
        if method in self._failing:
            self._failing[method] -= 1
            if self._failing[method] == 0:
                del self._failing[method]
                raise StoreDown(method)


@dataclass(frozen=True, slots=True)
class Record:
    id: int
    name: str  # relative to its zone, "@" for the apex
    data: str
    zone: str


class MemoryDns:
    """``DnsProvider`` in memory. ``fail(method)`` makes the next call of ``method`` raise:
    refused (nothing changed), or with ``lost=True`` the change is made and the answer
    lost (an ambiguous ``ProviderFailed``)."""

    def __init__(self, zones: Sequence[str] = ("example.com", "example.org")) -> None:
        self.zones = list(zones)
        self.records: dict[int, Record] = {}
        self._ids = itertools.count(1000)
        self._faults: dict[str, list[tuple[ProviderError, bool]]] = {}
        self.calls: list[str] = []

    def fail(self, method: str, error: ProviderError | None = None, *,
             lost: bool = False) -> None:
        error = error or ProviderFailed(f"{method} failed", ambiguous=lost)
        self._faults.setdefault(method, []).append((error, lost))

    def _fault(self, method: str) -> tuple[ProviderError, bool] | None:
        self.calls.append(method)
        faults = self._faults.get(method)
        return faults.pop(0) if faults else None

    def txt_at(self, name: str) -> list[str]:
        return sorted(r.data for r in self.records.values() if self._fqdn(r) == name)

    @staticmethod
    def _fqdn(record: Record) -> str:
        return record.zone if record.name == "@" else f"{record.name}.{record.zone}"

    def _check(self, zone: str, name: str) -> None:
        if not is_within(name, zone):
            raise ProviderRejected("refusing a name outside its zone")

    async def list_zones(self) -> list[str]:
        if fault := self._fault("list_zones"):
            raise fault[0]
        return list(self.zones)

    async def list_txt(self, zone: str) -> list[Record]:
        if fault := self._fault("list_txt"):
            raise fault[0]
        return [r for r in self.records.values() if r.zone == zone]

    async def find_txt(self, zone: str, name: str) -> list[Record]:
        if fault := self._fault("find_txt"):
            raise fault[0]
        return [r for r in self.records.values() if r.zone == zone and self._fqdn(r) == name]

    async def create_txt(self, zone: str, name: str, value: str, ttl: int) -> Record:
        self._check(zone, name)
        fault = self._fault("create_txt")
        if fault and not fault[1]:
            raise fault[0]
        record = Record(next(self._ids), relative_name(name, zone), value, zone)
        self.records[record.id] = record
        if fault:
            raise fault[0]
        return record

    async def update_txt(self, zone: str, name: str, record_id: int, value: str) -> Record:
        self._check(zone, name)
        fault = self._fault("update_txt")
        if fault and not fault[1]:
            raise fault[0]
        if record_id not in self.records:
            raise RecordMissing("the record is gone")
        record = replace(self.records[record_id], data=value)
        self.records[record_id] = record
        if fault:
            raise fault[0]
        return record

    async def get_record(self, zone: str, record_id: int) -> Record | None:
        if fault := self._fault("get_record"):
            raise fault[0]
        return self.records.get(record_id)

    async def delete_record(self, zone: str, record_id: int) -> None:
        fault = self._fault("delete_record")
        if fault and not fault[1]:
            raise fault[0]
        self.records.pop(record_id, None)
        if fault:
            raise fault[0]



def _conforms(store: MemoryStore, dns: MemoryDns
              ) -> tuple[ChallengeStore, AccountStore, ReconcileStore, DnsProvider]:
    """Never called: mypy holds the fakes to the ports here."""
    return store, store, store, dns


def txt(n: int) -> str:
    """A distinct, well-formed 43-character DNS-01 value."""
    digest = hashlib.sha256(f"value-{n}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Core:
    """The core's services wired to the fakes, as ``app.wiring`` wires them to the real
    store and provider (no throttle, no budget: those have tests of their own)."""

    store: MemoryStore
    dns: MemoryDns
    clock: Clock
    challenges: ChallengeService
    accounts: AccountService
    reconciler: Reconciler

    @classmethod
    def build(cls, store: MemoryStore | None = None, *, max_values: int = 2,
              lifetime: int = 3600, registration: Registration = Registration.OPEN,
              max_registered: int | None = None) -> Core:
        store = store if store is not None else MemoryStore()
        dns, clock = MemoryDns(), Clock()
        challenges = ChallengeService(store, dns, ttl=30, max_values=max_values, clock=clock)
        accounts = AccountService(store, ZoneResolver(dns), challenges,
                                  delegation_domain="acme.example.org",
                                  registration=registration, max_registered=max_registered,
                                  clock=clock)
        reconciler = Reconciler(store, dns, challenges, lifetime=lifetime, ttl=30,
                                clock=clock, verify_every=0)
        return cls(store, dns, clock, challenges, accounts, reconciler)

    async def account(self, domain: str = "www.example.com") -> Account:
        return (await self.accounts.create(domain=domain, delegated=False)).account

    async def update(self, account: Account, value: str) -> str:
        """What ``/update`` does once the gate let the request through."""
        async with self.store.unit() as unit:
            return await self.challenges.update(Authorized(account, unit, "192.0.2.1"), value)

    async def cleanup(self, account: Account, value: str) -> bool:
        async with self.store.unit() as unit:
            return await self.challenges.cleanup(Authorized(account, unit, "192.0.2.1"),
                                                 value)

    def consistent(self, name: str) -> None:
        """DNS holds exactly the store's live values at ``name``, by record id."""
        rows = [v for v in self.store.tables.values.values() if v.name == name]
        assert all(v.state is ValueState.LIVE for v in rows), rows
        assert ({(r.id, r.data) for r in self.dns.records.values()
                 if self.dns._fqdn(r) == name}
                == {(v.record_id, v.value) for v in rows})
