"""The propagation checker against real DNS servers on loopback (the stand-in's), and
with an injected query function where a nameserver must misbehave in a precise way."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import dns.message
import pytest

from app.propagation import (
    ConfirmedValues,
    Nameserver,
    PropagationChecker,
    WaitOutcome,
    parse_nameserver,
    parse_nameservers,
    udp_then_tcp,
)
from app.standin import StandinState
from app.standin.dns import DNSServer
from tests.conftest import challenge_value

NAME = "_acme-challenge.www.example.com"


@pytest.fixture
def zone_state() -> StandinState:
    state = StandinState()
    state.add_zone("example.com")
    return state


@pytest.fixture
async def nameserver(zone_state: StandinState) -> AsyncIterator[Nameserver]:
    server = DNSServer(zone_state)
    host, port = await server.start()
    yield Nameserver(host, port)
    await server.close()


@pytest.fixture
def silent() -> Iterator[Nameserver]:
    """A loopback UDP port that receives queries and never answers them."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield Nameserver("127.0.0.1", sock.getsockname()[1])


def put(state: StandinState, value: str, name: str = "_acme-challenge.www") -> None:
    state.add_record("example.com", "TXT", name, value, ttl=30)


def test_parse_nameservers() -> None:
    assert parse_nameservers("127.0.0.1:5353, [::1]:53 ns1.example.net") == [
        Nameserver("127.0.0.1", 5353), Nameserver("::1", 53), Nameserver("ns1.example.net")]
    assert str(parse_nameserver("[::1]:5353")) == "[::1]:5353"
    assert str(parse_nameserver("ns1.example.net")) == "ns1.example.net:53"
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_nameserver("[::1]x")


async def test_answers_and_serving(zone_state: StandinState, nameserver: Nameserver) -> None:
    a, b = challenge_value(1), challenge_value(2)
    put(zone_state, a)
    checker = PropagationChecker([nameserver])
    (answer,) = await checker.answers(NAME)
    assert answer.answered and answer.rcode == "NOERROR" and answer.values == {a}
    assert await checker.serving(NAME, [a]) == {nameserver: True}
    assert await checker.serving(NAME, [a, b]) == {nameserver: False}
    (absent,) = await checker.answers("_acme-challenge.nothing.example.com")
    assert absent.answered and absent.rcode == "NXDOMAIN" and not absent.values


async def test_a_served_value_costs_one_round_trip(zone_state: StandinState,
                                                   nameserver: Nameserver) -> None:
    value = challenge_value(1)
    put(zone_state, value)
    checker = PropagationChecker([nameserver], interval=5, max_interval=5)
    result = await checker.wait(NAME, {value}, timeout=10)
    assert result.outcome is WaitOutcome.SEEN and result.everywhere
    assert result.seconds < 1  # no interval slept: the first round saw it
    await checker.close()


async def test_wait_returns_once_the_value_appears(zone_state: StandinState,
                                                   nameserver: Nameserver) -> None:
    value = challenge_value(1)
    checker = PropagationChecker([nameserver], interval=0.05, max_interval=0.1)
    waiting = asyncio.create_task(checker.wait(NAME, {value}, timeout=10))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    put(zone_state, value)
    result = await asyncio.wait_for(waiting, 2)
    assert result.outcome is WaitOutcome.SEEN and result.pending == ()
    await checker.close()


async def test_wait_ends_at_its_bound_naming_the_late_nameserver(
        zone_state: StandinState, nameserver: Nameserver) -> None:
    other_state = StandinState()
    other_state.add_zone("example.com")
    late = DNSServer(other_state)
    late_ns = Nameserver(*await late.start())
    value = challenge_value(1)
    put(zone_state, value)  # served by the first nameserver only
    checker = PropagationChecker([nameserver, late_ns], interval=0.05, max_interval=0.2)
    started = time.monotonic()
    result = await checker.wait(NAME, {value}, timeout=1.0)
    assert result.outcome is WaitOutcome.TIMEOUT
    assert 1.0 <= time.monotonic() - started < 1.5
    assert result.pending == (late_ns,) and not result.everywhere
    await checker.close()
    await late.close()


async def test_unreachable_nameservers_make_nobody_wait(silent: Nameserver) -> None:
    seen: list[tuple[Nameserver, bool]] = []
    checker = PropagationChecker([silent], timeout=0.3,
                                 on_reachability=lambda ns, up: seen.append((ns, up)))
    (answer,) = await checker.probe("example.com")
    assert answer.error == "timeout" and not answer.answered
    assert checker.unreachable() == (silent,) and seen == [(silent, False)]
    started = time.monotonic()
    result = await checker.wait(NAME, {challenge_value(1)}, timeout=10)
    assert result.outcome is WaitOutcome.UNCHECKED
    assert time.monotonic() - started < 0.1
    await checker.close()


async def test_a_nameserver_that_stops_answering_mid_wait_is_left_out(
        zone_state: StandinState, nameserver: Nameserver, silent: Nameserver) -> None:
    value = challenge_value(1)
    put(zone_state, value)
    checker = PropagationChecker([nameserver, silent], timeout=0.2, interval=0.05,
                                 max_interval=0.1)
    result = await checker.wait(NAME, {value}, timeout=5)
    # Two unanswered queries in a row (DOWN_AFTER) and the silent one no longer counts.
    assert result.outcome is WaitOutcome.SEEN and result.pending == (silent,)
    assert not result.everywhere  # not a value to stop asking about
    assert result.seconds < 2
    assert checker.reachable() == (nameserver,)
    await checker.close()


async def test_waiters_share_the_polling(zone_state: StandinState,
                                         nameserver: Nameserver) -> None:
    """Fifty waiters on five names: each round asks each name once, however many wait."""
    asked: Counter[str] = Counter()

    async def counting(query: dns.message.Message, address: str, port: int,
                       timeout: float) -> dns.message.Message:
        asked[query.question[0].name.to_text()] += 1
        return await udp_then_tcp(query, address, port, timeout)

    names = [f"_acme-challenge.n{i}" for i in range(5)]
    values = [challenge_value(i) for i in range(50)]
    checker = PropagationChecker([nameserver], interval=0.1, max_interval=0.1,
                                 query=counting)
    waits = [asyncio.create_task(checker.wait(f"{names[i % 5]}.example.com", {v},
                                              timeout=10))
             for i, v in enumerate(values)]
    await asyncio.sleep(0.5)
    for i, v in enumerate(values):
        put(zone_state, v, names[i % 5])
    results = await asyncio.gather(*waits)
    assert {r.outcome for r in results} == {WaitOutcome.SEEN}
    # About 0.6 s at one round per 0.1 s: some ten rounds per name, not 10 per waiter.
    assert set(asked) == {f"{n}.example.com." for n in names}
    assert max(asked.values()) <= 15, asked
    await checker.close()


async def test_too_many_waiters_are_not_started(zone_state: StandinState,
                                                nameserver: Nameserver) -> None:
    checker = PropagationChecker([nameserver], max_waiters=2, interval=0.05)
    first = [asyncio.create_task(checker.wait(NAME, {challenge_value(i)}, timeout=1))
             for i in range(2)]
    await asyncio.sleep(0)
    third = await checker.wait(NAME, {challenge_value(3)}, timeout=1)
    assert third.outcome is WaitOutcome.BUSY and third.seconds == 0
    assert {r.outcome for r in await asyncio.gather(*first)} == {WaitOutcome.TIMEOUT}
    await checker.close()


def test_a_confirmed_value_is_known_until_its_name_changes() -> None:
    confirmed = ConfirmedValues()
    value, other = challenge_value(1), challenge_value(2)
    assert confirmed.confirm(NAME, value, confirmed.ticket())
    assert confirmed.known(NAME + ".", value) and confirmed.known(NAME.upper(), value)
    assert not confirmed.known(NAME, other)
    assert not confirmed.known("_acme-challenge.other.example.com", value)
    confirmed.forget(NAME)
    assert not confirmed.known(NAME, value)


def test_a_wait_the_name_changed_under_is_not_confirmed() -> None:
    """Seen before the change reached the nameservers: not to be kept."""
    confirmed = ConfirmedValues()
    value = challenge_value(1)
    ticket = confirmed.ticket()  # the wait starts
    confirmed.forget(NAME)  # another request writes to the name meanwhile
    assert not confirmed.confirm(NAME, value, ticket)
    assert not confirmed.known(NAME, value)
    # Other names' changes do not matter; a wait begun after the change does count.
    ticket = confirmed.ticket()
    confirmed.forget("_acme-challenge.other.example.com")
    assert confirmed.confirm(NAME, value, ticket) and confirmed.known(NAME, value)


def test_confirmed_values_are_bounded_and_careful_when_full() -> None:
    confirmed = ConfirmedValues(size=2)
    names = [f"_acme-challenge.n{i}.example.com" for i in range(3)]
    value = challenge_value(1)
    for name in names:
        assert confirmed.confirm(name, value, confirmed.ticket())
    # The least recently used name went.
    assert [confirmed.known(n, value) for n in names] == [False, True, True]
    # Changes beyond the bound: a wait begun before the oldest forgotten change is
    # refused even for a name whose own change record was dropped.
    ticket = confirmed.ticket()
    for name in names:
        confirmed.forget(name)
    assert not confirmed.confirm(names[0], value, ticket)
    assert confirmed.confirm(names[0], value, confirmed.ticket())
