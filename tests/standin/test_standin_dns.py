"""The authoritative DNS server, queried over real UDP and TCP on loopback."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from app.standin import DNSServer, StandinState, resolve
from app.standin.state import SOA_NEGATIVE_TTL


@pytest.fixture
def zones() -> StandinState:
    state = StandinState()
    state.add_zone("example.com")
    state.add_zone("acme.example.org")
    state.add_record("example.com", "TXT", "_acme-challenge.www", "first", ttl=60)
    state.add_record("example.com", "TXT", "_acme-challenge.www", "second", ttl=30)
    state.add_record("example.com", "A", "www", "192.0.2.10", ttl=300)
    state.add_record("example.com", "AAAA", "www", "2001:db8::10", ttl=300)
    state.add_record("example.com", "CNAME", "_acme-challenge.api", "_acme-challenge.app", ttl=60)
    state.add_record("example.com", "CNAME", "_acme-challenge.app", "d1.acme.example.org.", ttl=120)
    state.add_record("acme.example.org", "TXT", "d1", "delegated", ttl=30)
    state.add_record("example.com", "CNAME", "outside", "target.example.net.", ttl=60)
    state.add_record("example.com", "CNAME", "loop1", "loop2", ttl=60)
    state.add_record("example.com", "CNAME", "loop2", "loop1", ttl=60)
    state.add_record("example.com", "TXT", "a.b.deep", "x", ttl=60)
    state.add_record("example.com", "TXT", "*.wild", "wildcard", ttl=60)
    state.add_record("example.com", "NS", "sub", "ns1.sub.example.com.", ttl=60)
    state.add_record("example.com", "A", "ns1.sub", "192.0.2.53", ttl=60)
    return state


@pytest.fixture
async def server(zones: StandinState) -> AsyncIterator[DNSServer]:
    server = DNSServer(zones, host="127.0.0.1", port=0)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def udp(
    server: DNSServer,
    name: str,
    rdtype: str,
    *,
    use_edns: int | bool | None = None,
    payload: int = 1232,
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=use_edns, payload=payload)
    host, port = server.address
    return await dns.asyncquery.udp(query, host, port=port, timeout=2)


async def tcp(server: DNSServer, name: str, rdtype: str) -> dns.message.Message:
    host, port = server.address
    return await dns.asyncquery.tcp(
        dns.message.make_query(name, rdtype), host, port=port, timeout=2
    )


def rrset(response: dns.message.Message, name: str, rdtype: str) -> dns.rrset.RRset:
    return response.find_rrset(
        response.answer,
        dns.name.from_text(name),
        dns.rdataclass.IN,
        dns.rdatatype.from_text(rdtype),
    )


def txt_values(rrset: dns.rrset.RRset) -> set[bytes]:
    return {b"".join(r.strings) for r in rrset}


async def test_binds_a_free_port_for_udp_and_tcp(server: DNSServer) -> None:
    host, port = server.address
    assert host == "127.0.0.1" and port > 0
    assert (await tcp(server, "example.com", "SOA")).rcode() == dns.rcode.NOERROR


async def test_txt_values_form_one_rrset(server: DNSServer) -> None:
    response = await udp(server, "_acme-challenge.www.example.com", "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.RA
    assert len(response.answer) == 1
    answer = rrset(response, "_acme-challenge.www.example.com", "TXT")
    assert txt_values(answer) == {b"first", b"second"}
    assert answer.ttl == 30


async def test_names_are_case_insensitive(server: DNSServer) -> None:
    response = await udp(server, "_ACME-Challenge.WWW.Example.Com", "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer[0].name.to_text() == "_ACME-Challenge.WWW.Example.Com."
    assert txt_values(response.answer[0]) == {b"first", b"second"}


async def test_address_records(server: DNSServer) -> None:
    a = await udp(server, "www.example.com", "A")
    assert [r.to_text() for r in a.answer[0]] == ["192.0.2.10"]
    aaaa = await udp(server, "www.example.com", "AAAA")
    assert [r.to_text() for r in aaaa.answer[0]] == ["2001:db8::10"]


async def test_cname_chain_is_followed_across_served_zones(server: DNSServer) -> None:
    response = await udp(server, "_acme-challenge.api.example.com", "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype)) for r in response.answer] == [
        ("_acme-challenge.api.example.com.", "CNAME"),
        ("_acme-challenge.app.example.com.", "CNAME"),
        ("d1.acme.example.org.", "TXT"),
    ]
    assert txt_values(response.answer[2]) == {b"delegated"}


async def test_cname_query_returns_only_the_cname(server: DNSServer) -> None:
    response = await udp(server, "_acme-challenge.api.example.com", "CNAME")
    assert len(response.answer) == 1
    assert response.answer[0][0].to_text() == "_acme-challenge.app.example.com."


async def test_cname_out_of_our_zones_stops(server: DNSServer) -> None:
    response = await udp(server, "outside.example.com", "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert [r.rdtype for r in response.answer] == [dns.rdatatype.CNAME]
    assert response.authority == []


async def test_cname_loop_terminates(server: DNSServer) -> None:
    response = await udp(server, "loop1.example.com", "A")
    assert [r.name.to_text() for r in response.answer] == [
        "loop1.example.com.",
        "loop2.example.com.",
    ]


async def test_cname_to_missing_name_is_nxdomain(zones: StandinState, server: DNSServer) -> None:
    zones.add_record("example.com", "CNAME", "dangling", "gone.acme.example.org.")
    response = await udp(server, "dangling.example.com", "TXT")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.answer[0].rdtype == dns.rdatatype.CNAME
    assert response.authority[0].name.to_text() == "acme.example.org."


async def test_nxdomain_carries_soa_with_negative_ttl(server: DNSServer) -> None:
    response = await udp(server, "_acme-challenge.nope.example.com", "TXT")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.answer == []
    (soa,) = response.authority
    assert soa.rdtype == dns.rdatatype.SOA
    assert soa.name.to_text() == "example.com."
    assert soa.ttl == SOA_NEGATIVE_TTL
    assert soa[0].minimum == SOA_NEGATIVE_TTL
    assert soa[0].mname.to_text() == "ns1.digitalocean.com."


async def test_nodata_is_noerror_with_soa(server: DNSServer) -> None:
    response = await udp(server, "www.example.com", "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert response.authority[0].rdtype == dns.rdatatype.SOA


async def test_empty_non_terminal_is_nodata(server: DNSServer) -> None:
    response = await udp(server, "b.deep.example.com", "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert (await udp(server, "c.deep.example.com", "TXT")).rcode() == dns.rcode.NXDOMAIN


async def test_apex_soa_and_ns(server: DNSServer) -> None:
    soa = await udp(server, "example.com", "SOA")
    record = rrset(soa, "example.com", "SOA")[0]
    assert record.rname.to_text() == "hostmaster.example.com."
    ns = await udp(server, "example.com", "NS")
    assert {r.to_text() for r in ns.answer[0]} == {
        "ns1.digitalocean.com.",
        "ns2.digitalocean.com.",
        "ns3.digitalocean.com.",
    }


async def test_soa_walk_finds_the_zone_cut_like_lego(server: DNSServer) -> None:
    found = None
    for name in ("_acme-challenge.www.example.com", "www.example.com", "example.com"):
        response = await udp(server, name, "SOA")
        assert response.rcode() == dns.rcode.NOERROR
        if any(r.rdtype == dns.rdatatype.SOA for r in response.answer):
            found = name
            break
        assert response.authority[0].rdtype == dns.rdatatype.SOA
    assert found == "example.com"


async def test_outside_our_zones_is_refused(server: DNSServer) -> None:
    for name in ("example.net", "com", "org", "example.org"):
        response = await udp(server, name, "SOA")
        assert response.rcode() == dns.rcode.REFUSED
        assert not response.flags & dns.flags.AA
        assert response.answer == []


async def test_wildcard(server: DNSServer) -> None:
    response = await udp(server, "anything.wild.example.com", "TXT")
    assert response.answer[0].name.to_text() == "anything.wild.example.com."
    assert txt_values(response.answer[0]) == {b"wildcard"}


async def test_delegation_is_a_referral(server: DNSServer) -> None:
    response = await udp(server, "_acme-challenge.sub.example.com", "TXT")
    assert response.rcode() == dns.rcode.NOERROR
    assert not response.flags & dns.flags.AA
    assert response.answer == []
    assert response.authority[0].rdtype == dns.rdatatype.NS
    assert response.additional[0].to_text() == "ns1.sub.example.com. 60 IN A 192.0.2.53"


async def test_dotless_fqdn_record_lives_at_the_doubled_name(
    zones: StandinState, server: DNSServer
) -> None:
    zones.add_record("example.com", "TXT", "_acme-challenge.x.example.com", "oops")
    doubled = await udp(server, "_acme-challenge.x.example.com.example.com", "TXT")
    assert txt_values(doubled.answer[0]) == {b"oops"}
    intended = await udp(server, "_acme-challenge.x.example.com", "TXT")
    assert intended.rcode() == dns.rcode.NXDOMAIN


async def test_changes_are_live(zones: StandinState, server: DNSServer) -> None:
    record = zones.add_record("example.com", "TXT", "_acme-challenge.new", "v")
    assert (await udp(server, "_acme-challenge.new.example.com", "TXT")).answer
    zones.delete_record("example.com", record.id)
    gone = await udp(server, "_acme-challenge.new.example.com", "TXT")
    assert gone.rcode() == dns.rcode.NXDOMAIN


async def test_long_txt_is_split_into_strings(zones: StandinState, server: DNSServer) -> None:
    zones.add_record("example.com", "TXT", "long", "x" * 600)
    response = await tcp(server, "long.example.com", "TXT")
    strings = response.answer[0][0].strings
    assert [len(s) for s in strings] == [255, 255, 90]


async def test_big_udp_answer_is_truncated_and_tcp_has_it_all(
    zones: StandinState, server: DNSServer
) -> None:
    for i in range(20):
        zones.add_record("example.com", "TXT", "big", f"{i:02}" + "v" * 60, ttl=30)
    truncated = await udp(server, "big.example.com", "TXT", use_edns=False)
    assert truncated.flags & dns.flags.TC
    edns = await udp(server, "big.example.com", "TXT", use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC
    full = await tcp(server, "big.example.com", "TXT")
    assert len(full.answer[0]) == 20


async def test_tcp_serves_several_queries_on_one_connection(server: DNSServer) -> None:
    host, port = server.address
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for name in ("www.example.com", "_acme-challenge.www.example.com"):
            wire = dns.message.make_query(name, "TXT").to_wire()
            writer.write(struct.pack("!H", len(wire)) + wire)
        await writer.drain()
        rcodes = []
        for _ in range(2):
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            rcodes.append(dns.message.from_wire(await reader.readexactly(length)).rcode())
        assert rcodes == [dns.rcode.NOERROR, dns.rcode.NOERROR]
    finally:
        writer.close()
        await writer.wait_closed()


async def test_close_drops_open_tcp_connections(zones: StandinState) -> None:
    server = DNSServer(zones, port=0)
    host, port = await server.start()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await server.close()
        assert await asyncio.wait_for(reader.read(), 2) == b""
    finally:
        writer.close()
        await writer.wait_closed()


async def test_garbage_gets_formerr(server: DNSServer) -> None:
    host, port = server.address
    reader, writer = await asyncio.open_connection(host, port)
    try:
        garbage = b"\x12\x34" + b"\xff" * 20
        writer.write(struct.pack("!H", len(garbage)) + garbage)
        await writer.drain()
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        answer = dns.message.from_wire(await reader.readexactly(length))
        assert answer.id == 0x1234
        assert answer.rcode() == dns.rcode.FORMERR
    finally:
        writer.close()
        await writer.wait_closed()


def test_resolve_stops_a_cname_loop_after_one_turn(zones: StandinState) -> None:
    response = resolve(zones, dns.message.make_query("loop1.example.com", "TXT"))
    assert len(response.answer) == 2


def test_resolve_answers_any_with_every_rrset(zones: StandinState) -> None:
    response = resolve(zones, dns.message.make_query("www.example.com", "ANY"))
    assert {r.rdtype for r in response.answer} == {dns.rdatatype.A, dns.rdatatype.AAAA}


def test_resolve_refuses_other_opcodes(zones: StandinState) -> None:
    query = dns.message.make_query("example.com", "SOA")
    query.set_opcode(dns.opcode.NOTIFY)
    assert resolve(zones, query).rcode() == dns.rcode.NOTIMP


def test_zone_without_default_records_still_has_ns(zones: StandinState) -> None:
    zones.add_zone("bare.test", default_records=False)
    response = resolve(zones, dns.message.make_query("bare.test", "NS"))
    assert len(response.answer[0]) == 3


def test_a_query_builds_only_the_names_it_touches(zones: StandinState,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """DigitalOcean's nameservers answer as fast in a zone of a thousand records as in
    one of ten; the stand-in's must too, or a burst benchmark measures its DNS server:
    building every record of the zone for every query cost about 0.2 s a query at a
    thousand records. A query parses the records of the names it touches, once."""
    import app.standin.dns as standin_dns

    for n in range(500):
        zones.add_record("example.com", "TXT", f"_acme-challenge.h{n}", f"value-{n}", ttl=30)
    parsed: list[str] = []
    original = standin_dns.record_rdata

    def counting(record: object) -> object:
        parsed.append(getattr(record, "name", ""))
        return original(record)  # type: ignore[arg-type]

    monkeypatch.setattr(standin_dns, "record_rdata", counting)
    query = dns.message.make_query("_acme-challenge.h7.example.com", "TXT")
    for _ in range(3):
        response = dns.message.from_wire(resolve(zones, query).to_wire())
        assert txt_values(rrset(response, "_acme-challenge.h7.example.com", "TXT")) == {
            b"value-7"}
    assert parsed == ["_acme-challenge.h7"]
    zones.add_record("example.com", "TXT", "_acme-challenge.h7", "another", ttl=30)
    # A new version of the zone: the new record is served.
    response = dns.message.from_wire(resolve(zones, query).to_wire())
    assert txt_values(rrset(response, "_acme-challenge.h7.example.com", "TXT")) == {
        b"value-7", b"another"}
