"""Asking authoritative nameservers whether a TXT value is visible (certbot's auth hook
returns only once it is), with dnspython."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

Nameserver = tuple[str, int]


def parse_nameserver(text: str) -> Nameserver:
    """``HOST:PORT``, ``HOST`` (port 53) or ``[v6]:PORT``."""
    text = text.strip()
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed:
            raise ValueError(f"not a nameserver address: {text!r} (HOST:PORT)")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, "53"
    if (not host or any(c in host for c in "[]/@ \t") or not (port.isascii() and port.isdigit())
            or not 0 < int(port) < 65536):
        raise ValueError(f"not a nameserver address: {text!r} (HOST:PORT)")
    return host, int(port)


async def txt_values(name: str, nameserver: Nameserver, *, timeout: float = 3.0) -> set[str]:
    """TXT strings at ``name`` as one nameserver answers (CNAMEs in the answer followed)."""
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    query.flags &= ~dns.flags.RD
    response, _ = await dns.asyncquery.udp_with_fallback(
        query, nameserver[0], port=nameserver[1], timeout=timeout)
    found: set[str] = set()
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            for rdata in rrset:
                found.add(b"".join(rdata.strings).decode("utf-8", "replace"))
    return found


async def authoritative_nameservers(name: str) -> list[Nameserver]:
    """The addresses of the nameservers of the zone that holds ``name``."""
    resolver = dns.asyncresolver.Resolver()
    zone = await dns.asyncresolver.zone_for_name(name, resolver=resolver)
    servers: list[Nameserver] = []
    for ns in await resolver.resolve(zone, "NS"):
        for rdtype in ("A", "AAAA"):
            try:
                answer = await resolver.resolve(ns.target, rdtype)
            except dns.resolver.NoAnswer:
                continue
            servers.extend((rdata.address, 53) for rdata in answer)
    return servers


async def wait_for_txt(
    name: str,
    value: str,
    nameservers: Sequence[Nameserver],
    *,
    timeout: float,
    interval: float = 2.0,
    progress: Callable[[str], None] = lambda _: None,
) -> bool:
    """True once every nameserver answers ``value`` at ``name``; False at the deadline."""
    deadline = time.monotonic() + timeout
    pending = list(nameservers)
    while True:
        still: list[Nameserver] = []
        for server in pending:
            try:
                seen = value in await txt_values(name, server)
            except (dns.exception.DNSException, OSError):
                seen = False
            if not seen:
                still.append(server)
        if not still:
            return True
        pending = still
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        waiting = ", ".join(f"{h}:{p}" for h, p in pending)
        progress(f"waiting for {name} TXT on {waiting} ({int(left)}s left)")
        await asyncio.sleep(min(interval, left))
