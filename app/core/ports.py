"""What the core needs from the outside world, as protocols.

The store is described by aggregate (``Accounts``, ``Values``, ``AuditTrail``, ``Units``)
and each service asks for just what it uses (``ChallengeStore``, ``AccountStore``,
``ReconcileStore``; the gate only an ``AuditLog``). ``app.db.store.SqlStore``
implements them all; ``tests/core/fakes.py`` has an in-memory one and a failing one.
``app.providers.digitalocean`` implements ``DnsProvider`` (its failures are
``app.errors.ProviderError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Protocol

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
from app.pacing.terms import Limit

__all__ = ["Limit"]  # re-exported: the core's callers name limits through the ports


class Throttle(Protocol):
    async def blocked(self, limit: Limit, key: str) -> float | None: ...
    async def take(self, limit: Limit, key: str) -> float | None: ...


class ProviderRecord(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...  # relative to its zone, "@" for the apex
    @property
    def data(self) -> str: ...


class DnsProvider(Protocol):
    async def list_zones(self) -> list[str]: ...
    async def list_txt(self, zone: str) -> Sequence[ProviderRecord]: ...
    async def find_txt(self, zone: str, name: str) -> Sequence[ProviderRecord]: ...
    async def create_txt(self, zone: str, name: str, value: str, ttl: int) -> ProviderRecord: ...
    async def update_txt(self, zone: str, name: str, record_id: int, value: str
                         ) -> ProviderRecord: ...
    async def get_record(self, zone: str, record_id: int) -> ProviderRecord | None: ...
    async def delete_record(self, zone: str, record_id: int) -> None: ...


class Unit(Protocol):
    """One request's work on the database. What is atomic, exactly:
    - everything it writes from its first write to ``commit`` is one transaction,
      committed together or not at all;
    - except a ``record_repeat`` that comes before any other write: the store may make it
      a transaction apart from the unit's, committed before it returns True (the SQL
      store does: one shared with the repeats of other units that came at the same time,
      ``app.db.batches``), so a unit that fails after it keeps it. A repeat is a whole
      request: nothing is meant to follow it but ``commit``;
    - each ``record_repeat`` on its own is all or nothing;
    - reads (``account``) see committed data and need not be in the transaction (they
      may come before it begins).
    A ``DomainError`` leaving it is an answer, not a failure: its writes (the audit row of
    a refusal) are committed. Never held across a call to DigitalOcean: ``commit`` ends
    it early, before such a call."""

    async def account(self, username: str) -> Account | None: ...
    # A repeat in one call: if nobody else works on ``name`` (not waiting; in this process
    # the name stays this unit's until it ends) and ``value`` is LIVE there, mark it the
    # newest at ``at``, set the account's last-used to ``at`` and write the audit row
    # ``event``: True. Otherwise nothing is written: False.
    async def record_repeat(self, name: str, value: str, at: datetime, *, account_id: int,
                            event: AuditEvent) -> bool: ...
    async def touch_account(self, account_id: int, at: datetime) -> None: ...
    async def set_key_hash(self, username: str, key_hash: str, *, expected: str) -> bool: ...
    # DigitalOcean has the new value ``value_id`` at ``record_id``: LIVE there (``replaces``:
    # the row whose record it overwrote in place goes), with the request's last-used and
    # audit row in the same transaction.
    async def settle(self, value_id: int, record_id: int, at: datetime, *,
                     replaces: int | None = None) -> None: ...
    async def audit(self, event: AuditEvent) -> None: ...
    # A refusal: counted on the row of the same refusal begun within ``window``, if any.
    async def audit_repeated(self, event: AuditEvent, window: timedelta) -> None: ...
    async def commit(self) -> None: ...  # ends the unit; nothing may follow in it


class AuditLog(Protocol):
    """Where an audit event is written: a ``Unit`` (with the request's work) or the store
    (a transaction of its own)."""

    async def audit(self, event: AuditEvent) -> None: ...
    # A refusal: counted on the row of the same refusal begun within ``window``, if any.
    async def audit_repeated(self, event: AuditEvent, window: timedelta) -> None: ...


# The store, by aggregate. Each method is a transaction of its own; ``Units`` gives the
# one transaction of a request's work.


class Units(Protocol):
    def unit(self) -> AbstractAsyncContextManager[Unit]: ...


class Accounts(Protocol):
    async def add_account(self, account: NewAccount) -> Account: ...  # or NameInUse
    async def get_account(self, username: str) -> Account | None: ...
    async def list_accounts(self, where: AccountFilter) -> list[Account]: ...
    async def count_accounts(self) -> int: ...  # active ones
    async def accounts_by_id(self, ids: Sequence[int]) -> dict[int, Account]: ...
    async def update_account(self, username: str, changes: AccountChanges) -> Account | None: ...
    async def set_key_hash(self, username: str, key_hash: str) -> bool: ...
    async def delete_account(self, username: str) -> bool: ...
    # Revoked at ``at`` unless revoked before (that time stays).
    async def set_revoked(self, username: str, at: datetime) -> Account | None: ...


class Values(Protocol):
    """Challenge values; a caller changing a name's values holds its ``name_lock``."""

    def name_lock(self, name: str) -> AbstractAsyncContextManager[None]: ...
    async def values_at(self, name: str) -> list[TxtValue]: ...  # oldest first
    async def values_of_account(self, account_id: int) -> list[TxtValue]: ...
    # A PENDING value; ``record_id``: the record it is about to overwrite in place.
    async def add_value(
        self, *, name: str, zone: str, value: str, account_id: int, at: datetime,
        record_id: int | None = None,
    ) -> TxtValue: ...
    # An overwrite landed: ``new_id`` LIVE at ``record_id``, ``old_id`` gone, at once.
    async def replace_value(self, old_id: int, new_id: int, record_id: int, at: datetime
                            ) -> None: ...
    async def bump_value(self, value_id: int, at: datetime) -> None: ...  # LIVE, newest
    async def set_state(self, value_ids: Sequence[int], state: ValueState) -> None: ...
    async def set_record_id(self, value_id: int, record_id: int) -> None: ...
    async def delete_values(self, value_ids: Sequence[int]) -> None: ...


class AuditTrail(AuditLog, Protocol):
    async def audit_events(self, where: AuditQuery) -> list[AuditEvent]: ...  # newest first


# What each service needs of the store.


class ChallengeStore(Values, Units, AuditLog, Protocol):
    """``ChallengeService``'s."""


class AccountStore(Accounts, AuditTrail, Protocol):
    """``AccountService``'s and the importer's."""


class ReconcileStore(Values, Protocol):
    """The reconciler's: the values, and what decides their fate."""

    # One reconciler at a time in the deployment: False when another holds it.
    def reconcile_lock(self) -> AbstractAsyncContextManager[bool]: ...
    # Every name bound or written, by zone: the reconciler's scope.
    async def owned_names(self) -> dict[str, set[str]]: ...
    async def names_with_values(self) -> set[str]: ...
    async def accounts_by_id(self, ids: Sequence[int]) -> dict[int, Account]: ...
