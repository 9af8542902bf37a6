"""Who may write which name: the one home of authentication and authorization for the
write protocols (acme-dns ``/update``, httpreq ``/present`` and ``/cleanup``).

A request names its target its own way: acme-dns by the account's label, httpreq by the
challenge name (after lego followed CNAMEs) or, in RAW mode, by the certificate's
domain. ``may_write`` is the one rule that decides whether an account may write a
target; ``Gate.authorize`` checks the credential, applies that rule, and on a refusal
does all of what a refusal is, together: the audit row (in the request's own unit of
work), the count against the address's failure limit, and ``Forbidden``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from app.core.audit import Auditor
from app.core.keys import hash_key, needs_rehash, verify_key
from app.core.models import Account
from app.core.names import (
    IPAddress,
    address_allowed,
    challenge_name,
    looks_like_key,
    looks_like_username,
    normalize_domain,
    normalize_fqdn,
)
from app.core.ports import AuditLog, Limit, Throttle, Unit
from app.errors import Forbidden, InvalidDomain, TooManyRequests
from app.logs import event

log = logging.getLogger("acme_delegate.access")


@dataclass(frozen=True, slots=True)
class Label:
    """acme-dns ``subdomain``: the account's own label, in any case."""

    text: object


@dataclass(frozen=True, slots=True)
class ChallengeName:
    """httpreq ``fqdn``: the name the value goes to."""

    text: object


@dataclass(frozen=True, slots=True)
class CertificateDomain:
    """httpreq RAW ``domain``: the domain the certificate is for, before any CNAME."""

    text: object


Target = Label | ChallengeName | CertificateDomain


def may_write(account: Account, target: Target | None) -> bool:
    """The rule: ``account`` may write at ``target`` when it names the account's one name
    (``None``, a body that could not be read, names nothing)."""
    try:
        match target:
            case Label(text=str(label)):
                return label.lower() == account.label
            case ChallengeName(text=str(fqdn)):
                return normalize_fqdn(fqdn) == account.name
            case CertificateDomain(text=str(raw)) if raw:
                domain = normalize_domain(raw)
                return account.domain == domain or challenge_name(domain) == account.name
    except InvalidDomain:
        return False
    return False


@dataclass(frozen=True, slots=True)
class Caller:
    """The credential a request carries, and where it comes from."""

    username: object
    key: object
    address: IPAddress | None
    client: str | None  # the address as text, as the audit trail and the limits name it


@dataclass(frozen=True, slots=True)
class Authorized:
    """An account allowed to write its name, and the request's unit of work (still open:
    the rest of the request's database work goes into it)."""

    account: Account
    unit: Unit
    client: str | None


class Gate:
    def __init__(self, store: AuditLog, clock: Callable[[], datetime],
                 throttle: Throttle | None = None) -> None:
        self._throttle = throttle
        self._clock = clock
        self._audit = Auditor(store, clock)

    async def authorize(self, unit: Unit, caller: Caller, target: Target | None) -> Authorized:
        """The caller's account if its credential is good and ``may_write`` allows the
        target; otherwise the refusal (audited in ``unit``, counted) as ``Forbidden``."""
        account = await self.authenticate(unit, caller)
        if not may_write(account, target):
            await self._refuse(unit, caller, "wrong_name", account=account)
        return Authorized(account, unit, caller.client)

    async def authenticate(self, unit: Unit, caller: Caller) -> Account:
        """The active account for this credential from this address, or ``Forbidden``.

        An address with too many recent failures is refused before any check, so
        guessing costs the guesser time and the database nothing."""
        if self._throttle is not None:
            wait = await self._throttle.blocked(Limit.AUTH_FAILURES, caller.client or "unknown")
            if wait is not None:
                raise TooManyRequests("too many failed attempts", retry_after=wait)
        username, key = caller.username, caller.key
        account = None
        if looks_like_username(username):
            assert isinstance(username, str)
            account = await unit.account(username.lower())
        # Always verify, against a dummy hash for unknown users: a miss costs what a hit costs.
        key_ok = verify_key(key if isinstance(key, str) and looks_like_key(key) else "",
                            account.key_hash if account else None)
        if account is None or not key_ok:
            await self._refuse(unit, caller, Forbidden.code)
        assert account is not None
        if not account.usable_at(self._clock()):
            await self._refuse(unit, caller, "revoked" if account.revoked_at else "expired",
                               account=account)
        if not address_allowed(caller.address, account.allowfrom):
            await self._refuse(unit, caller, "address_not_allowed", account=account)
        if needs_rehash(account.key_hash):
            # An imported acme-dns bcrypt hash: swap in the native one now that we saw the key.
            assert isinstance(key, str)
            if await unit.set_key_hash(account.username, hash_key(key),
                                       expected=account.key_hash):
                event(log, "account.rehashed", account=account.username)
        return account

    async def _refuse(self, unit: Unit, caller: Caller, reason: str, *,
                      account: Account | None = None) -> None:
        """Everything a refusal is: audited, counted against the address, Forbidden."""
        if account is not None and reason == "wrong_name":
            event(log, "auth.refused", logging.WARNING, account=account.username,
                  reason=reason, client=caller.client)
        await self._audit.refusal("auth.failed", reason, account=account,
                                  client=caller.client, username=caller.username, unit=unit)
        if self._throttle is not None:
            await self._throttle.take(Limit.AUTH_FAILURES, caller.client or "unknown")
        raise Forbidden()
