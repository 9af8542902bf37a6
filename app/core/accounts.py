"""Accounts: issuing, authenticating and revoking credentials bound to one name.

There is one way to create a credential (``AccountService.create``); the
acme-dns ``/register`` route, the admin API and the CLI all go through it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from app.core.audit import Auditor
from app.core.challenges import ChallengeService, Removal, utcnow
from app.core.keys import hash_key, new_key, new_username
from app.core.models import (
    Account,
    AccountChanges,
    AccountFilter,
    AuditEvent,
    AuditQuery,
    IssuedAccount,
    Mode,
    NewAccount,
)
from app.core.names import (
    IPNetwork,
    challenge_name,
    delegated_name,
    looks_like_username,
    new_delegation_label,
    normalize_domain,
)
from app.core.ports import AccountStore, Limit, Throttle
from app.core.zones import ZoneResolver
from app.errors import (
    AccountNotFound,
    InvalidInput,
    NotConfigured,
    RegistrationClosed,
    TooManyRequests,
)
from app.logs import event

log = logging.getLogger("acme_delegate.accounts")

MAX_NOTE_LENGTH = 500
MAX_VALUES_LIMIT = 20


class Registration(enum.StrEnum):
    CLOSED = "closed"  # /register refuses everyone
    TOKEN = "token"  # noqa: S105  # /register needs the registration token
    OPEN = "open"  # anyone who reaches /register gets a delegated name


def check_note(note: str | None) -> str | None:
    if note is None:
        return None
    note = note.strip()
    if len(note) > MAX_NOTE_LENGTH or any(ord(c) < 32 and c not in "\t" for c in note):
        raise InvalidInput(f"note: at most {MAX_NOTE_LENGTH} printable characters")
    return note or None


class AccountService:
    def __init__(
        self,
        store: AccountStore,
        zones: ZoneResolver,
        challenges: ChallengeService,
        *,
        delegation_domain: str | None,
        registration: Registration,
        throttle: Throttle | None = None,
        max_registered: int | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._throttle = throttle
        self._max_registered = max_registered
        self._store = store
        self._zones = zones
        self._challenges = challenges
        self._delegation_domain = delegation_domain
        self._registration = registration
        self._clock = clock
        self._audit = Auditor(store, clock)

    async def create(
        self,
        *,
        domain: str | None,
        delegated: bool,
        allowfrom: Sequence[IPNetwork] = (),
        note: str | None = None,
        expires_at: datetime | None = None,
        max_values: int | None = None,
        client: str | None = None,
        via: str = "admin",
    ) -> IssuedAccount:
        """Issue a credential; the key is in the result and nowhere else, ever."""
        domain = normalize_domain(domain) if domain is not None else None
        note = check_note(note)
        self._check_expiry(expires_at)
        if max_values is not None and not 1 <= max_values <= MAX_VALUES_LIMIT:
            raise InvalidInput(f"max_values: 1 to {MAX_VALUES_LIMIT}")
        label = new_delegation_label()
        if delegated:
            if not self._delegation_domain:
                raise NotConfigured("delegated names need ACME_DELEGATE_DELEGATION_DOMAIN")
            name = delegated_name(label, self._delegation_domain)
            mode = Mode.DELEGATED
        else:
            if domain is None:
                raise InvalidInput("a direct account needs a domain")
            name = challenge_name(domain)
            mode = Mode.DIRECT
        zone = await self._zones.zone_for(name)
        key = new_key()
        account = await self._store.add_account(
            NewAccount(
                username=new_username(),
                key_hash=hash_key(key),
                label=label,
                name=name,
                zone=zone,
                mode=mode,
                domain=domain,
                allowfrom=tuple(allowfrom),
                note=note,
                created_at=self._clock(),
                expires_at=expires_at,
                max_values=max_values,
            )
        )
        event(log, "account.created", account=account.username, name=name, mode=mode, via=via)
        await self._audit("account.create", "ok", account=account, client=client, detail=via)
        return IssuedAccount(account=account, key=key)

    async def register(
        self, allowfrom: Sequence[IPNetwork], *, client: str | None, token_given: bool
    ) -> IssuedAccount:
        """acme-dns ``/register``: a delegated name, when the registration policy allows
        (``token``: when the caller showed the registration token).

        Every attempt counts against its address first, refused or not: nothing an
        anonymous caller sends reaches the database unthrottled, and repeated refusals
        share one audit row."""
        if self._throttle is not None:
            wait = await self._throttle.take(Limit.REGISTRATIONS, client or "unknown")
            if wait is not None:
                raise TooManyRequests("registrations from this address", retry_after=wait)
        if self._registration is Registration.CLOSED or (
            self._registration is Registration.TOKEN and not token_given
        ):
            await self._audit.refusal("register", RegistrationClosed.code, client=client)
            raise RegistrationClosed()
        if (self._max_registered is not None
                and await self._store.count_accounts() >= self._max_registered):
            await self._audit.refusal("register", "registration_full", client=client)
            raise RegistrationClosed("the service holds as many accounts as it may")
        return await self.create(
            domain=None, delegated=True, allowfrom=allowfrom, client=client, via="register"
        )

    async def get(self, username: str) -> Account:
        """The account of ``username`` in any letter case: usernames are canonical lower
        case on every path (authentication, admin lookups, audit filters)."""
        account = (await self._store.get_account(username.lower())
                   if looks_like_username(username) else None)
        if account is None:
            raise AccountNotFound()
        return account

    async def list_accounts(self, where: AccountFilter | None = None) -> list[Account]:
        return await self._store.list_accounts(where or AccountFilter())

    async def rotate(self, username: str, *, client: str | None = None) -> IssuedAccount:
        """A new key, shown once; the old one stops working with this one UPDATE.
        The account's name and its live values are untouched."""
        account = await self.get(username)
        if not account.active:
            raise AccountNotFound("a revoked account cannot be rotated")
        key = new_key()
        await self._store.set_key_hash(account.username, hash_key(key))
        event(log, "account.rotated", account=account.username)
        await self._audit("account.rotate", "ok", account=account, client=client)
        return IssuedAccount(account=account, key=key)

    async def change(
        self, username: str, changes: AccountChanges, *, client: str | None = None
    ) -> Account:
        """Edit allowfrom, note or expiry."""
        if changes.note is not None:
            changes = replace(changes, note=check_note(changes.note))
        self._check_expiry(changes.expires_at)
        account = await self.get(username)
        updated = await self._store.update_account(account.username, changes)
        if updated is None:
            raise AccountNotFound()
        await self._audit("account.change", "ok", account=updated, client=client)
        return updated

    async def delete(self, username: str, *, client: str | None = None) -> Removal:
        """Revoke (removing its values), then forget the account; the audit trail stays."""
        account, removed = await self.revoke(username, client=client)
        await self._store.delete_account(account.username)
        await self._audit("account.delete", "ok", account=account, client=client)
        return removed

    def now(self) -> datetime:
        return self._clock()

    async def record_read(self, what: str, *, client: str | None,
                          username: str | None = None) -> None:
        """Audit an admin read (a listing, an account, the trail itself)."""
        await self._audit("admin.read", "ok", client=client, username=username, detail=what)

    async def audit_trail(self, where: AuditQuery) -> list[AuditEvent]:
        return await self._store.audit_events(where)

    def _check_expiry(self, expires_at: datetime | None) -> None:
        if expires_at is None:
            return
        if expires_at.tzinfo is None:
            raise InvalidInput("expires_at needs a time zone")
        if expires_at <= self._clock():
            raise InvalidInput("expires_at is in the past")

    async def revoke(self, username: str, *, client: str | None = None
                     ) -> tuple[Account, Removal]:
        """Revoke at once, then remove its values; returns the account and what the removal
        did: values gone, and values still pending removal (DigitalOcean failed; the
        reconciler retries them)."""
        account = await self.get(username)
        revoked = account
        if account.active:
            revoked = await self._store.set_revoked(account.username, self._clock()) or account
        removed = await self._challenges.remove_all(account)
        event(log, "account.revoked", account=account.username, name=account.name,
              removed=removed.removed, pending=removed.pending)
        await self._audit("account.revoke", "ok", account=account, client=client)
        return revoked, removed
