"""Authoritative DNS server answering from the stand-in's state, over UDP and TCP."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import struct
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CAA
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rrset

from app.standin.state import SOA_NEGATIVE_TTL, Record, StandinState, Zone

log = logging.getLogger(__name__)

IN = dns.rdataclass.IN
SERVED_TYPES = ("A", "AAAA", "CNAME", "TXT", "NS", "MX", "CAA", "SRV")
MAX_CNAME_HOPS = 16
TCP_IDLE_TIMEOUT = 30.0
# DigitalOcean's SOA timers: refresh, retry, expire, minimum (the negative TTL).
SOA_TIMERS = (10800, 3600, 604800, SOA_NEGATIVE_TTL)

RRsets = dict[dns.rdatatype.RdataType, dns.rrset.RRset]


def record_rdata(record: Record) -> dns.rdata.Rdata:
    """Convert a DigitalOcean record into DNS rdata; ValueError if its data does not fit."""
    rdtype = dns.rdatatype.from_text(record.type)
    origin = dns.name.from_text(record.zone)
    try:
        if record.type == "TXT":
            raw = record.data.encode()
            # One TXT string holds 255 bytes; DigitalOcean splits longer values.
            chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
            return dns.rdtypes.ANY.TXT.TXT(IN, rdtype, chunks)
        if record.type in ("A", "AAAA"):
            return dns.rdata.from_text(IN, rdtype, record.data)
        # DigitalOcean hostnames: "@" is the apex, a trailing dot is absolute, else relative.
        target = dns.name.from_text(record.data, origin=origin)
        if record.type in ("CNAME", "NS"):
            return dns.rdata.from_text(IN, rdtype, target.to_text())
        if record.type == "MX":
            return dns.rdata.from_text(IN, rdtype, f"{_required(record.priority)} {target}")
        if record.type == "SRV":
            numbers = (record.priority, record.weight, record.port)
            text = " ".join(str(_required(n)) for n in numbers)
            return dns.rdata.from_text(IN, rdtype, f"{text} {target}")
    except dns.exception.DNSException as exc:
        raise ValueError(f"{record.type} data {record.data!r} is invalid: {exc}") from exc
    if record.type == "CAA":
        if record.tag is None:
            raise ValueError("CAA needs a tag")
        try:
            # The constructor takes the raw value, sparing us zone-file quoting rules.
            caa = cast(Callable[..., dns.rdata.Rdata], dns.rdtypes.ANY.CAA.CAA)
            return caa(
                IN, rdtype, _required(record.flags), record.tag.encode(), record.data.encode()
            )
        except dns.exception.DNSException as exc:
            raise ValueError(f"CAA record is invalid: {exc}") from exc
    raise ValueError(f"type {record.type} is not served")


def _required(value: int | None) -> int:
    if value is None:
        raise ValueError("a numeric field this type needs is missing")
    return value


@functools.lru_cache(maxsize=1 << 16)
def _owner(fqdn: str) -> tuple[dns.name.Name, str]:
    """A record's owner name and its canonical text (the key names compare by)."""
    name = dns.name.from_text(fqdn)
    return name, name.canonicalize().to_text()


@functools.lru_cache(maxsize=1 << 16)
def _parsed(record: Record) -> dns.rdata.Rdata:
    """``record_rdata``, once per record (records are immutable values)."""
    return record_rdata(record)


def _key(name: dns.name.Name) -> str:
    return name.canonicalize().to_text()


@dataclass
class _ZoneView:
    """One zone as DNS sees it at the moment of a query. The records are indexed by owner
    name only; a name's RRsets are built when a query touches it: a query costs the same
    in a zone of a thousand records as in one of ten (DigitalOcean's nameservers do not
    slow down with the zone's size; building every RRset for every query did, by about
    0.2 s a query at a thousand records)."""

    origin: dns.name.Name
    soa: dns.rrset.RRset
    default_ns: list[str]
    owners: dict[str, list[Record]] = field(default_factory=dict)
    built: dict[str, RRsets] = field(default_factory=dict)

    def node(self, name: dns.name.Name) -> RRsets | None:
        """The RRsets at ``name`` (no wildcard expansion); None if no record is there."""
        key = _key(name)
        if key in self.built:
            return self.built[key]
        records = self.owners.get(key)
        if records is None and name != self.origin:
            return None
        rrsets: RRsets = {}
        for record in records or ():
            try:
                rdata = _parsed(record)
            except ValueError as exc:
                log.warning("event=standin.dns.skip record=%s reason=%s", record.id, exc)
                continue
            rrset = rrsets.setdefault(rdata.rdtype, dns.rrset.RRset(name, IN, rdata.rdtype))
            # An RRset has one TTL; like DigitalOcean's harmonising, the lowest wins.
            rrset.add(rdata, record.ttl)
        if name == self.origin:
            rrsets[dns.rdatatype.SOA] = self.soa
            if dns.rdatatype.NS not in rrsets:
                rrsets[dns.rdatatype.NS] = dns.rrset.from_text_list(
                    self.origin, self.soa.ttl, IN, dns.rdatatype.NS, self.default_ns)
        if not rrsets:
            return None  # only records that are not served (or do not parse)
        self.built[key] = rrsets
        return rrsets

    def exists(self, name: dns.name.Name) -> bool:
        """A name with records, or an empty non-terminal: one with records below it."""
        if name == self.origin or self.node(name) is not None:
            return True
        suffix = "." + _key(name)
        return any(key.endswith(suffix) and self.node(_owner_name(records)) is not None
                   and _owner_name(records).is_subdomain(name)
                   for key, records in self.owners.items())

    def negative_soa(self) -> dns.rrset.RRset:
        """The SOA for the authority section, with the TTL resolvers cache the denial for."""
        soa = dns.rrset.RRset(self.origin, IN, dns.rdatatype.SOA)
        rdata = self.soa[0]
        assert isinstance(rdata, dns.rdtypes.ANY.SOA.SOA)
        soa.add(rdata, min(self.soa.ttl, rdata.minimum))
        return soa

    def delegation(self, qname: dns.name.Name) -> tuple[dns.name.Name, dns.rrset.RRset] | None:
        """The topmost zone cut (NS below the apex) at or above qname, if any."""
        labels = len(qname) - len(self.origin)
        for depth in range(1, labels + 1):
            cut = qname.split(len(self.origin) + depth)[1]
            ns = (self.node(cut) or {}).get(dns.rdatatype.NS)
            if ns is not None:
                return cut, ns
        return None

    def lookup(self, qname: dns.name.Name) -> RRsets | None:
        """RRsets at qname (wildcards expanded); {} for an empty non-terminal; None if absent."""
        rrsets = self.node(qname)
        if rrsets is not None:
            return rrsets
        if self.exists(qname):
            return {}
        encloser = qname.parent()
        while not self.exists(encloser) and encloser != self.origin:
            encloser = encloser.parent()
        wildcard = self.node(dns.name.Name((b"*", *encloser.labels)))
        if wildcard is None:
            return None
        return {t: dns.rrset.from_rdata_list(qname, r.ttl, list(r)) for t, r in wildcard.items()}


def _owner_name(records: list[Record]) -> dns.name.Name:
    return _owner(records[0].fqdn)[0]


def _zone_view(state: StandinState, zone: Zone) -> _ZoneView:
    try:
        # As propagated: with a propagation delay, recent changes are not served yet.
        serial, records = state.served(zone.name)
    except KeyError:
        serial, records = zone.serial, []  # removed since the query found it
    origin = dns.name.from_text(zone.name)
    soa = dns.rrset.RRset(origin, IN, dns.rdatatype.SOA)
    mname = dns.name.from_text(state.nameservers[0] if state.nameservers else zone.name)
    rname = dns.name.from_text(f"hostmaster.{zone.name}")
    timers = " ".join(str(t) for t in SOA_TIMERS)
    soa.add(
        dns.rdata.from_text(IN, dns.rdatatype.SOA, f"{mname} {rname} {serial} {timers}"),
        zone.ttl,
    )
    return _ZoneView(origin=origin, soa=soa, default_ns=[f"{ns}." for ns in state.nameservers],
                     owners=_owners(state, zone.name, serial, records))


# The last index built for each zone of each state: every change bumps the zone's serial
# and record ids are never reused, so (serial, count, last id) names one version.
_Index = dict[str, list[Record]]
_INDEXES: weakref.WeakKeyDictionary[StandinState, dict[str, tuple[object, _Index]]] = (
    weakref.WeakKeyDictionary())


def _owners(state: StandinState, zone: str, serial: int, records: list[Record]
            ) -> dict[str, list[Record]]:
    """The served records of one version of a zone, by owner name (built once a version)."""
    version = (serial, len(records), records[-1].id if records else None)
    cached = _INDEXES.setdefault(state, {}).get(zone)
    if cached is not None and cached[0] == version:
        return cached[1]
    owners: dict[str, list[Record]] = {}
    for record in records:
        if record.type in SERVED_TYPES:
            owners.setdefault(_owner(record.fqdn)[1], []).append(record)
    _INDEXES[state][zone] = (version, owners)
    return owners


def resolve(state: StandinState, query: dns.message.Message) -> dns.message.Message:
    """Build the authoritative answer to one query."""
    response = dns.message.make_response(query)
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    question = query.question[0]
    if question.rdclass != IN or state.find_zone(question.name.to_text()) is None:
        response.set_rcode(dns.rcode.REFUSED)
        return response
    response.flags |= dns.flags.AA
    _answer(state, response, question.name, question.rdtype)
    return response


def _answer(
    state: StandinState,
    response: dns.message.Message,
    qname: dns.name.Name,
    qtype: dns.rdatatype.RdataType,
) -> None:
    seen: set[dns.name.Name] = set()
    for _ in range(MAX_CNAME_HOPS):
        zone = state.find_zone(qname.to_text())
        if zone is None:
            return  # a CNAME led outside our zones: the resolver takes it from here
        view = _zone_view(state, zone)
        cut = view.delegation(qname)
        if cut is not None and not (qtype == dns.rdatatype.DS and cut[0] == qname):
            _refer(view, response, *cut)
            return
        rrsets = view.lookup(qname)
        if rrsets is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(view.negative_soa())
            return
        cname = rrsets.get(dns.rdatatype.CNAME)
        if cname is not None and qtype not in (dns.rdatatype.CNAME, dns.rdatatype.ANY):
            response.answer.append(_owned(qname, cname))
            seen.add(qname)
            target = cname[0]
            assert isinstance(target, dns.rdtypes.ANY.CNAME.CNAME)
            qname = target.target
            if qname in seen:
                return  # a loop: hand back what we have, as BIND does
            continue
        wanted = list(rrsets.values()) if qtype == dns.rdatatype.ANY else [rrsets.get(qtype)]
        found = [_owned(qname, r) for r in wanted if r is not None]
        if found:
            response.answer.extend(found)
        else:
            response.authority.append(view.negative_soa())
        return


def _refer(
    view: _ZoneView, response: dns.message.Message, cut: dns.name.Name, ns: dns.rrset.RRset
) -> None:
    if not response.answer:
        response.flags &= ~dns.flags.AA
    response.authority.append(ns)
    for rdata in ns:
        assert isinstance(rdata, dns.rdtypes.ANY.NS.NS)
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            glue = (view.node(rdata.target) or {}).get(rdtype)
            if glue is not None:
                response.additional.append(glue)


def _owned(qname: dns.name.Name, rrset: dns.rrset.RRset) -> dns.rrset.RRset:
    # Echo the owner name with the query's spelling (names compare case-insensitively).
    return dns.rrset.from_rdata_list(qname, rrset.ttl, list(rrset))


def answer_wire(state: StandinState, wire: bytes, *, tcp: bool) -> bytes | None:
    """Answer a query in wire format; None when it is not worth answering."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        if len(wire) < 2:
            return None
        formerr = dns.message.Message(id=struct.unpack("!H", wire[:2])[0])
        formerr.flags = dns.flags.QR
        formerr.set_rcode(dns.rcode.FORMERR)
        return formerr.to_wire()
    if query.flags & dns.flags.QR:
        return None  # never answer answers
    response = resolve(state, query)
    # Without EDNS a UDP answer must fit in 512 bytes; TC sends the client to TCP.
    max_size = 65535 if tcp else (query.payload if query.edns >= 0 else 512)
    return response.to_wire(max_size=max_size, prefer_truncation=True)


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, state: StandinState) -> None:
        self._state = state
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport is not a registered DatagramTransport subclass.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        wire = answer_wire(self._state, data, tcp=False)
        if wire is not None and self._transport is not None:
            self._transport.sendto(wire, addr)


class DNSServer:
    """UDP and TCP listeners on one port, answering from a StandinState."""

    def __init__(self, state: StandinState, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state
        self.host = host
        self.port = port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on, both protocols."""
        return self.host, self.port

    async def start(self) -> tuple[str, int]:
        """Bind UDP and TCP on the same port (a free one when port is 0)."""
        loop = asyncio.get_running_loop()
        for _ in range(20):
            udp, _protocol = await loop.create_datagram_endpoint(
                lambda: _UDPProtocol(self.state), local_addr=(self.host, self.port)
            )
            port: int = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError as exc:
                udp.close()
                # Port 0 gave a UDP port whose TCP twin is taken: try another one.
                if self.port == 0 and exc.errno == errno.EADDRINUSE:
                    continue
                raise
            self._udp, self.port = udp, port
            return self.address
        raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP")

    async def close(self) -> None:
        """Stop listening and drop open TCP connections."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._tcp.wait_closed()
            self._tcp = None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    wire = await reader.readexactly(length)
                answer = answer_wire(self.state, wire, tcp=True)
                if answer is not None:
                    writer.write(struct.pack("!H", len(answer)) + answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # client went away or idled out
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
