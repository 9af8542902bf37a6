"""Does a credential's binding work end to end? ``accounts check`` and
``GET /admin/accounts/{username}/check``.

Three things make a DNS-01 validation through acme-delegate succeed, and each is the
usual answer to "why does validation fail?":

1. the zone that holds the credential's name is delegated to DigitalOcean's nameservers
   (else the records the service writes are served by nobody the CA asks);
2. for a delegated credential, ``_acme-challenge.<domain>`` is a CNAME to the bound name
   (missing or pointing elsewhere, the CA never reaches the name);
3. the values live at the name are served by the authoritative nameservers.

Each finding says what to change. The DNS questions go to ``nameserver`` when given
(one server that answers for every zone involved, such as the stand-in), else: NS and
CNAME through the system's resolver, TXT to DigitalOcean's nameservers directly.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.rdatatype
import dns.resolver

from app.core.models import Account, Mode, ValueState
from app.propagation import (
    DIGITALOCEAN_NAMESERVERS,
    Nameserver,
    PropagationChecker,
    parse_nameserver,
    udp_then_tcp,
)

if TYPE_CHECKING:
    from app.wiring import Services

TIMEOUT = 3.0
DIGITALOCEAN_NS = frozenset(ns.host for ns in DIGITALOCEAN_NAMESERVERS)


@dataclass(frozen=True)
class Finding:
    check: str  # account | zone_delegated | cname | values_served
    ok: bool
    detail: str
    fix: str | None = None


@dataclass
class BindingReport:
    username: str
    fulldomain: str
    domain: str | None
    mode: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def as_json(self) -> dict[str, Any]:
        return {"username": self.username, "fulldomain": self.fulldomain,
                "domain": self.domain, "mode": self.mode, "ok": self.ok,
                "findings": [asdict(f) for f in self.findings]}


class _Dns:
    """NS and CNAME questions: to one nameserver (recursion off) or the system resolver."""

    def __init__(self, nameserver: Nameserver | None) -> None:
        self.nameserver = nameserver

    async def records(self, name: str, rdtype: str) -> list[str] | None:
        """The targets of the ``rdtype`` records at ``name`` (lower case, no final dot);
        [] when there are none; None when nobody answered (the error in ``self.error``)."""
        self.error = ""
        try:
            if self.nameserver is None:
                resolver = dns.asyncresolver.Resolver()
                resolver.lifetime = TIMEOUT
                try:
                    answer = await resolver.resolve(name, rdtype)
                except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                    return []
                rrsets = [answer.rrset] if answer.rrset is not None else []
            else:
                loop = asyncio.get_running_loop()
                infos = await loop.getaddrinfo(self.nameserver.host, self.nameserver.port)
                query = dns.message.make_query(name, rdtype)
                query.flags &= ~dns.flags.RD
                response = await udp_then_tcp(query, str(infos[0][4][0]),
                                              self.nameserver.port, TIMEOUT)
                wanted = dns.rdatatype.from_text(rdtype)
                rrsets = [r for r in response.answer if r.rdtype == wanted]
        except (dns.exception.DNSException, OSError) as exc:
            self.error = type(exc).__name__
            return None
        return [rdata.target.to_text().rstrip(".").lower()
                for rrset in rrsets for rdata in rrset]


def _account_finding(account: Account, now: Any) -> Finding:
    if account.revoked_at is not None:
        return Finding("account", False, "the credential is revoked",
                       "issue a new one: acme-delegate accounts create …")
    if not account.usable_at(now):
        return Finding("account", False, f"the credential expired at {account.expires_at}",
                       f"acme-delegate accounts set {account.username} --expires 90d")
    return Finding("account", True, "active")


async def _zone_finding(lookup: _Dns, zone: str) -> Finding:
    servers = await lookup.records(zone, "NS")
    expected = ", ".join(sorted(DIGITALOCEAN_NS))
    fix = f"at {zone}'s registrar, set its nameservers to {expected} (and only those)"
    if servers is None:
        return Finding("zone_delegated", False,
                       f"no answer for the NS records of {zone} ({lookup.error})",
                       "check that DNS is reachable from here, or give --nameserver")
    if not servers:
        return Finding("zone_delegated", False, f"{zone} has no NS records", fix)
    if set(servers) != DIGITALOCEAN_NS:
        return Finding("zone_delegated", False,
                       f"{zone} is served by {', '.join(sorted(servers))}", fix)
    return Finding("zone_delegated", True, f"{zone} is served by DigitalOcean ({expected})")


async def _cname_finding(lookup: _Dns, account: Account) -> Finding:
    if account.domain is None:
        return Finding("cname", True,
                       "the credential names no domain (issued by /register): no CNAME "
                       "to check; the client's own docs say where to point it")
    source = f"_acme-challenge.{account.domain}"
    fix = (f"create this record where {account.domain} is hosted: "
           f"{source}. CNAME {account.name}.")
    targets = await lookup.records(source, "CNAME")
    if targets is None:
        return Finding("cname", False, f"no answer for {source} ({lookup.error})",
                       "check that DNS is reachable from here, or give --nameserver")
    if not targets:
        return Finding("cname", False, f"{source} has no CNAME", fix)
    if targets != [account.name]:
        return Finding("cname", False, f"{source} points at {', '.join(targets)}",
                       f"change it to point at {account.name}: {source}. CNAME "
                       f"{account.name}.")
    return Finding("cname", True, f"{source} points at {account.name}")


async def _values_finding(services: Services, account: Account,
                          nameservers: list[Nameserver]) -> Finding:
    live = sorted(v.value for v in await services.store.values_at(account.name)
                  if v.state is ValueState.LIVE)
    if not live:
        return Finding("values_served", True,
                       f"no value is live at {account.name} now; nothing to compare (check "
                       "again while a client validates to test the whole path)")
    checker = PropagationChecker(nameservers, timeout=TIMEOUT)
    try:
        answers = await checker.answers(account.name)
    finally:
        await checker.close()
    silent = [f"{a.nameserver} ({a.error})" for a in answers if not a.answered]
    missing = [str(a.nameserver) for a in answers if a.answered and not a.serves(live)]
    if silent or missing:
        detail = "; ".join(part for part in (
            f"{len(live)} live value(s) not served by {', '.join(missing)}" if missing else "",
            f"no answer from {', '.join(silent)}" if silent else "") if part)
        return Finding("values_served", False, detail,
                       f"wait a TXT_TTL for the nameservers to catch up; if it persists, run "
                       f"`acme-delegate reconcile` and check DigitalOcean's records at "
                       f"{account.name}")
    servers = ", ".join(str(a.nameserver) for a in answers)
    return Finding("values_served", True, f"{len(live)} live value(s) served by {servers}")


async def check_binding(services: Services, username: str, *, nameserver: str | None
                        ) -> BindingReport:
    """Check the account's binding end to end; DomainError if there is no such account,
    ValueError for a malformed ``nameserver``."""
    where = parse_nameserver(nameserver) if nameserver else None
    account = await services.accounts.get(username)
    report = BindingReport(account.username, account.name, account.domain,
                           account.mode.value)
    report.findings.append(_account_finding(account, services.accounts.now()))
    lookup = _Dns(where)
    report.findings.append(await _zone_finding(lookup, account.zone))
    if account.mode is Mode.DELEGATED:
        report.findings.append(await _cname_finding(lookup, account))
    report.findings.append(await _values_finding(
        services, account, [where] if where else list(DIGITALOCEAN_NAMESERVERS)))
    return report
