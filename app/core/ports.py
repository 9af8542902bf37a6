"""What the core needs from the outside world, as protocols.

``app.db.store`` implements ``Store``; ``app.providers.digitalocean``
implements ``DnsProvider``. Tests may swap in failing implementations.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
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


class ProviderError(Exception):
    """A DNS provider call failed.

    ``ambiguous`` is True when the change may have happened anyway (the
    request was sent and the answer lost or a 5xx came back), so the caller
    must look before it assumes either outcome.
    """

    def __init__(
        self, message: str, *, ambiguous: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous
        self.retry_after = retry_after


class ProviderRecord(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def data(self) -> str: ...


class DnsProvider(Protocol):
    async def list_zones(self) -> list[str]: ...
    async def find_txt(self, zone: str, name: str) -> Sequence[ProviderRecord]: ...
    async def create_txt(self, zone: str, name: str, value: str, ttl: int) -> ProviderRecord: ...
    async def delete_record(self, zone: str, record_id: int) -> None: ...


class Store(Protocol):
    async def ping(self) -> None: ...

    # accounts
    async def add_account(self, account: NewAccount) -> Account: ...
    async def get_account(self, username: str) -> Account | None: ...
    async def list_accounts(self, where: AccountFilter) -> list[Account]: ...
    async def update_account(self, username: str, changes: AccountChanges) -> Account | None: ...
    async def set_key_hash(
        self, username: str, key_hash: str, *, expected: str | None = None
    ) -> bool: ...
    async def delete_account(self, username: str) -> bool: ...
    async def set_revoked(self, username: str, at: datetime) -> Account | None: ...
    async def touch_account(self, account_id: int, at: datetime) -> None: ...

    # challenge values
    def name_lock(self, name: str) -> AbstractAsyncContextManager[None]: ...
    async def values_at(self, name: str) -> list[TxtValue]: ...
    async def values_of_account(self, account_id: int) -> list[TxtValue]: ...
    async def add_value(
        self, *, name: str, zone: str, value: str, account_id: int, at: datetime
    ) -> TxtValue: ...
    async def mark_live(self, value_id: int, record_id: int, at: datetime) -> None: ...
    async def bump_value(self, value_id: int, at: datetime) -> None: ...
    async def set_state(self, value_ids: Sequence[int], state: ValueState) -> None: ...
    async def delete_values(self, value_ids: Sequence[int]) -> None: ...

    # audit
    async def audit(self, event: AuditEvent) -> None: ...
    async def audit_events(self, where: AuditQuery) -> list[AuditEvent]: ...
