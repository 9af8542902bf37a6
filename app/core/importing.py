"""Moving accounts off acme-dns without re-issuing any client's secret.

Each acme-dns account becomes a delegated account at ``<subdomain>.<DELEGATION_DOMAIN>``
with its own username, its bcrypt hash (verified as it is, replaced by the native hash on
its first successful use) and its allowfrom: the cert-manager secrets and the CNAMEs made
for acme-dns keep working once the delegation zone lives on DigitalOcean. Re-running is
safe: accounts already here are left alone.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from app.core.audit import Auditor
from app.core.keys import bcrypt_hash
from app.core.models import Mode, NewAccount
from app.core.names import a_label, delegated_name, looks_like_username, parse_allowfrom
from app.core.ports import AccountStore
from app.core.zones import ZoneResolver
from app.errors import InvalidAllowfrom, InvalidDomain, NameInUse, NotConfigured


class Outcome(enum.StrEnum):
    IMPORTED = "imported"
    WOULD_IMPORT = "would import"  # dry run
    EXISTS = "already here"
    INVALID = "invalid"
    CONFLICT = "name in use"


@dataclass(frozen=True, slots=True)
class SourceAccount:
    username: str
    password_hash: str
    subdomain: str
    allowfrom: list[str] | None


@dataclass
class ImportReport:
    results: list[tuple[str, Outcome, str]] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for _, o, _ in self.results if o is outcome)

    def summary(self) -> str:
        parts = [f"{self.count(o)} {o.value}" for o in Outcome if self.count(o)]
        return f"{len(self.results)} acme-dns accounts: " + (", ".join(parts) or "none")


class Importer:
    def __init__(self, store: AccountStore, zones: ZoneResolver, *, delegation_domain: str | None,
                 clock: Callable[[], datetime]) -> None:
        self._store = store
        self._zones = zones
        self._delegation_domain = delegation_domain
        self._clock = clock
        self._audit = Auditor(store, clock)

    async def run(self, accounts: Sequence[SourceAccount], *, dry_run: bool) -> ImportReport:
        if not self._delegation_domain:
            raise NotConfigured("importing acme-dns accounts needs DELEGATION_DOMAIN: the "
                                "domain acme-dns served, now a name in a DigitalOcean zone")
        zone = await self._zones.zone_for(self._delegation_domain)
        report = ImportReport()
        for source in accounts:
            outcome, detail = await self._one(source, zone, dry_run)
            report.results.append((source.username, outcome, detail))
        return report

    async def _one(self, source: SourceAccount, zone: str, dry_run: bool
                   ) -> tuple[Outcome, str]:
        assert self._delegation_domain is not None
        username = source.username.lower()
        if not looks_like_username(username):
            return Outcome.INVALID, "username is not a UUID"
        try:
            label = a_label(source.subdomain)
            name = delegated_name(label, self._delegation_domain)
            key_hash = bcrypt_hash(source.password_hash)
            if source.allowfrom is None:
                raise InvalidAllowfrom()
            allowfrom = tuple(parse_allowfrom(source.allowfrom))
        except InvalidDomain:
            return Outcome.INVALID, "subdomain is not a DNS label"
        except InvalidAllowfrom:
            return Outcome.INVALID, "allowfrom is not a list of CIDRs"
        except ValueError:
            return Outcome.INVALID, "password is not a bcrypt hash"
        if await self._store.get_account(username) is not None:
            return Outcome.EXISTS, name
        if dry_run:
            return Outcome.WOULD_IMPORT, name
        try:
            account = await self._store.add_account(NewAccount(
                username=username, key_hash=key_hash, label=label, name=name, zone=zone,
                mode=Mode.DELEGATED, domain=None, allowfrom=allowfrom,
                note="imported from acme-dns", created_at=self._clock(),
            ))
        except NameInUse:
            return Outcome.CONFLICT, name
        await self._audit("account.import", "ok", account=account, detail="acme-dns")
        return Outcome.IMPORTED, name
