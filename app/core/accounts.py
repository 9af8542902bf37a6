"""Accounts: issuing, authenticating and revoking credentials bound to one name.

There is one way to create a credential (``AccountService.create``); the
acme-dns ``/register`` route, the admin API and the CLI all go through it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from app.core.audit import Auditor
from app.core.challenges import ChallengeService, utcnow
from app.core.errors import (
    AccountNotFound,
    Forbidden,
    InvalidInput,
    NotConfigured,
    RegistrationClosed,
)
from app.core.keys import hash_key, new_key, new_username, verify_key
from app.core.models import Account, IssuedAccount, Mode, NewAccount
from app.core.names import (
    IPAddress,
    IPNetwork,
    address_allowed,
    challenge_name,
    delegated_name,
    looks_like_key,
    looks_like_username,
    new_delegation_label,
    normalize_domain,
)
from app.core.ports import Store
from app.core.zones import ZoneResolver
from app.logs import event

log = logging.getLogger("acme_delegate.accounts")

MAX_NOTE_LENGTH = 500


class Registration(enum.StrEnum):
    CLOSED = "closed"  # /register refuses everyone
    TOKEN = "token"  # noqa: S105  # /register needs the admin token
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
        store: Store,
        zones: ZoneResolver,
        challenges: ChallengeService,
        *,
        delegation_domain: str | None,
        registration: Registration,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
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
        client: str | None = None,
        via: str = "admin",
    ) -> IssuedAccount:
        """Issue a credential; the key is in the result and nowhere else, ever."""
        domain = normalize_domain(domain) if domain is not None else None
        note = check_note(note)
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
            )
        )
        event(log, "account.created", account=account.username, name=name, mode=mode, via=via)
        await self._audit("account.create", "ok", account=account, client=client, detail=via)
        return IssuedAccount(account=account, key=key)

    async def register(
        self, allowfrom: Sequence[IPNetwork], *, client: str | None, admin_authorized: bool
    ) -> IssuedAccount:
        """acme-dns ``/register``: a delegated name, when the registration policy allows."""
        if self._registration is Registration.CLOSED or (
            self._registration is Registration.TOKEN and not admin_authorized
        ):
            await self._audit("register", RegistrationClosed.code, client=client)
            raise RegistrationClosed()
        return await self.create(
            domain=None, delegated=True, allowfrom=allowfrom, client=client, via="register"
        )

    async def authenticate(
        self, username: object, key: object, address: IPAddress | None, *, client: str | None
    ) -> Account:
        """The active account for these credentials from this address, or Forbidden."""
        account = None
        if looks_like_username(username):
            assert isinstance(username, str)
            account = await self._store.get_account(username.lower())
        # Always verify, against a dummy hash for unknown users: a miss costs what a hit costs.
        key_ok = verify_key(
            key if isinstance(key, str) and looks_like_key(key) else "",
            account.key_hash if account else None,
        )
        if account is None or not key_ok or not account.active:
            await self._audit("auth.failed", Forbidden.code, client=client, username=username)
            raise Forbidden()
        if not address_allowed(address, account.allowfrom):
            await self._audit("auth.failed", "address_not_allowed", account=account, client=client)
            raise Forbidden()
        return account

    @staticmethod
    def owns_label(account: Account, label: object) -> bool:
        """acme-dns ``subdomain`` must be the account's own label (case-insensitive)."""
        return isinstance(label, str) and label.lower() == account.label

    @staticmethod
    def owns_name(account: Account, name: str) -> bool:
        return name == account.name

    async def refuse(self, account: Account, *, client: str | None, reason: str) -> None:
        """Audit an authenticated caller reaching for something that is not its own."""
        event(log, "auth.refused", logging.WARNING, account=account.username, reason=reason,
              client=client)
        await self._audit("auth.failed", reason, account=account, client=client)

    async def get(self, username: str) -> Account:
        account = await self._store.get_account(username) if looks_like_username(username) else None
        if account is None:
            raise AccountNotFound()
        return account

    async def list(self, *, include_revoked: bool = False) -> list[Account]:
        return await self._store.list_accounts(include_revoked=include_revoked)

    async def revoke(self, username: str, *, client: str | None = None) -> tuple[Account, int]:
        """Revoke at once, then remove its values; returns the account and values removed."""
        account = await self.get(username)
        revoked = account
        if account.active:
            revoked = await self._store.set_revoked(account.username, self._clock()) or account
        removed = await self._challenges.remove_all(account)
        event(log, "account.revoked", account=account.username, name=account.name,
              removed=removed)
        await self._audit("account.revoke", "ok", account=account, client=client)
        return revoked, removed
