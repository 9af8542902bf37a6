"""The stand-in's propagation delay: its DNS server serves a change only N seconds after
the API made it, the old data (or nothing) until then."""

from __future__ import annotations

import asyncio
import time

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import httpx
import pytest

from app.standin import StandinState, resolve
from app.standin.server import Standin

from .support import FakeClock

NAME = "_acme-challenge.www.example.com"


def txt(state: StandinState, name: str = NAME) -> set[str]:
    response = resolve(state, dns.message.make_query(name, "TXT"))
    return {b"".join(r.strings).decode() for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TXT for r in rrset}


def soa_serial(state: StandinState) -> int:
    response = resolve(state, dns.message.make_query("example.com", "SOA"))
    return int(response.answer[0][0].serial)


@pytest.fixture
def delayed(clock: FakeClock) -> StandinState:
    state = StandinState(clock=clock)
    state.add_zone("example.com")
    state.add_record("example.com", "TXT", "_acme-challenge.www", "old", ttl=30)
    state.set_propagation_delay(5)
    return state


def test_created_records_are_served_after_the_delay(delayed: StandinState,
                                                    clock: FakeClock) -> None:
    delayed.add_record("example.com", "TXT", "_acme-challenge.new", "v", ttl=30)
    assert delayed.find_records("_acme-challenge.new.example.com")  # the API has it at once
    response = resolve(delayed, dns.message.make_query("_acme-challenge.new.example.com", "TXT"))
    assert response.rcode() == dns.rcode.NXDOMAIN  # DNS: nothing yet
    clock.advance(4.9)
    assert txt(delayed, "_acme-challenge.new.example.com") == set()
    clock.advance(0.1)
    assert txt(delayed, "_acme-challenge.new.example.com") == {"v"}


def test_changes_and_deletions_serve_the_old_data_until_then(delayed: StandinState,
                                                             clock: FakeClock) -> None:
    old_serial = soa_serial(delayed)
    (old,) = delayed.find_records(NAME)
    delayed.add_record("example.com", "TXT", "_acme-challenge.www", "new", ttl=30)
    clock.advance(2)
    delayed.delete_record("example.com", old.id)
    assert txt(delayed) == {"old"} and soa_serial(delayed) == old_serial
    clock.advance(3)  # the create has propagated, the delete not yet
    assert txt(delayed) == {"old", "new"}
    clock.advance(2)
    assert txt(delayed) == {"new"} and soa_serial(delayed) > old_serial


def test_a_zone_made_under_a_delay_is_served_empty_until_then(delayed: StandinState,
                                                              clock: FakeClock) -> None:
    delayed.add_zone("later.test")
    delayed.add_record("later.test", "TXT", "@", "x")
    assert txt(delayed, "later.test") == set()
    clock.advance(5)
    assert txt(delayed, "later.test") == {"x"}


def test_delay_zero_publishes_everything_waiting(delayed: StandinState) -> None:
    delayed.add_record("example.com", "TXT", "_acme-challenge.www", "new", ttl=30)
    assert txt(delayed) == {"old"}
    delayed.set_propagation_delay(0)
    assert txt(delayed) == {"old", "new"}
    delayed.add_record("example.com", "TXT", "_acme-challenge.www", "newer", ttl=30)
    assert txt(delayed) == {"old", "new", "newer"}


def test_old_versions_are_dropped(delayed: StandinState, clock: FakeClock) -> None:
    for i in range(50):
        delayed.add_record("example.com", "TXT", f"r{i}", "v")
        clock.advance(1)
    # Only the versions of the last five seconds, and the one they replace, are kept.
    assert len(delayed._versions["example.com"]) <= 7


def test_delay_must_be_a_finite_positive_number() -> None:
    state = StandinState()
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="propagation delay"):
            state.set_propagation_delay(bad)


async def test_control_endpoint_sets_the_delay(client: httpx.AsyncClient,
                                               state: StandinState) -> None:
    assert (await client.get("/_standin/propagation")).json() == {"delay": 0.0}
    response = await client.put("/_standin/propagation", json={"delay": 2.5})
    assert response.json() == {"delay": 2.5} and state.propagation_delay == 2.5
    for bad in ({"delay": -1}, {"delay": "soon"}, {"delay": True}, {}):
        assert (await client.put("/_standin/propagation", json=bad)).status_code == 400
    assert state.propagation_delay == 2.5


async def test_real_dns_server_and_real_clock_honour_the_delay() -> None:
    """Over UDP on loopback with the system clock: what the end-to-end tests rely on."""
    async with Standin(zones=["example.com"], propagation_delay=1.0) as standin:
        host, port = standin.dns_address

        async def served() -> bool:
            query = dns.message.make_query(NAME, "TXT")
            response = await dns.asyncquery.udp(query, host, port=port, timeout=2)
            return bool(response.answer)

        standin.state.add_record("example.com", "TXT", "_acme-challenge.www", "v", ttl=30)
        created = time.monotonic()
        assert not await served()
        await asyncio.sleep(1.2)
        assert await served()
        assert time.monotonic() - created >= 1.0
