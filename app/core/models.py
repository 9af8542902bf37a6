"""Plain data the core works with; the database layer maps rows to these."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from app.core.names import IPNetwork


class Mode(enum.StrEnum):
    DIRECT = "direct"  # the zone of the domain itself is on DigitalOcean
    DELEGATED = "delegated"  # a random name under DELEGATION_DOMAIN, reached by CNAME


class ValueState(enum.StrEnum):
    PENDING = "pending"  # written down before DigitalOcean is asked: a crash leaves a trace
    LIVE = "live"  # DigitalOcean confirmed it, record_id known
    DELETING = "deleting"  # to be removed; the reconciler finishes what failed
    # No longer wanted (cleaned up or past RECORD_LIFETIME), its record still in place: the
    # next new value at the name overwrites it (one call), else housekeeping deletes it
    # from spare budget.
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    username: str
    key_hash: str
    label: str  # the acme-dns "subdomain"
    name: str  # the one name this account may write TXT values at
    zone: str  # the DigitalOcean zone that holds ``name``
    mode: Mode
    domain: str | None  # the domain the certificate is for, when known
    allowfrom: tuple[IPNetwork, ...]
    note: str | None
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    expires_at: datetime | None = None
    max_values: int | None = None  # None: the service-wide MAX_VALUES_PER_NAME

    def usable_at(self, now: datetime) -> bool:
        """Not revoked and not expired."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class NewAccount:
    username: str
    key_hash: str
    label: str
    name: str
    zone: str
    mode: Mode
    domain: str | None
    allowfrom: tuple[IPNetwork, ...]
    note: str | None
    created_at: datetime
    expires_at: datetime | None = None
    max_values: int | None = None


@dataclass(frozen=True, slots=True)
class AccountFilter:
    """What ``list`` returns: all filters combine with AND."""

    include_revoked: bool = False
    mode: Mode | None = None
    domain: str | None = None
    stale_before: datetime | None = None  # not used since (or never used and created before)
    expires_before: datetime | None = None  # has an expiry, and it is before this
    search: str | None = None  # a substring of username, name, domain or note (any case)
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class AccountChanges:
    """An admin edit: ``None`` leaves a field as it is."""

    allowfrom: tuple[IPNetwork, ...] | None = None
    note: str | None = None
    clear_note: bool = False
    expires_at: datetime | None = None
    clear_expiry: bool = False


@dataclass(frozen=True, slots=True)
class IssuedAccount:
    """An account with its key in clear: exists only between creation and the response."""

    account: Account
    key: str = field(repr=False)

    def acme_dns_json(self) -> dict[str, object]:
        """The exact object acme-dns ``/register`` answers."""
        return {
            "username": self.account.username,
            "password": self.key,
            "fulldomain": self.account.name,
            "subdomain": self.account.label,
            "allowfrom": [str(net) for net in self.account.allowfrom],
        }


@dataclass(frozen=True, slots=True)
class TxtValue:
    id: int
    name: str
    zone: str
    value: str
    state: ValueState
    record_id: int | None
    account_id: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AuditQuery:
    since: datetime | None = None
    username: str | None = None
    event: str | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class AuditEvent:
    at: datetime
    event: str  # e.g. "update", "register", "auth.failed"
    outcome: str  # "ok" or an error code
    username: str | None = None
    client: str | None = None
    name: str | None = None
    value_fingerprint: str | None = None
    detail: str | None = None
    count: int = 1  # refusals repeated within a window share one event
    last_at: datetime | None = None  # the last of them, when count > 1
