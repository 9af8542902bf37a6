"""Slow senders against a real server on loopback: they cannot occupy what well-behaved
clients need. Request heads and bodies each have a deadline (a stalled head is closed, a
stalled body is answered 408), bodies are read before a request takes an in-flight slot,
and each client address holds a bounded number of connections.

Loopback has a whole /8, so each flood comes from many source addresses (127.0.x.y), as
a distributed attacker's would, and the well-behaved client from one of its own."""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.server import ConnectionsPerAddress
from tests.conftest import ADMIN_TOKEN, challenge_value
from tests.security.test_hostile_inputs import Live, live_server, read_answer

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def open_from(live: Live, source: str) -> socket.socket:
    sock = socket.create_connection((live.host, live.port), timeout=5,
                                    source_address=(source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def slow_head() -> tuple[bytes, bytes]:
    """A request head that never ends: what is sent first, then one byte at a time."""
    return b"POST /update HTTP/1.1\r\nHost: acme\r\nX-Slow: a", b"a"


def slow_body(chunked: bool) -> tuple[bytes, bytes]:
    """A complete head, then a body that never ends (declared or chunked)."""
    if chunked:
        return (b"POST /register HTTP/1.1\r\nHost: acme\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n400\r\n{", b" ")
    return (b"POST /register HTTP/1.1\r\nHost: acme\r\nContent-Type: application/json\r\n"
            b"Content-Length: 16000\r\n\r\n{", b" ")


def _flood(host: str, port: int, starts: list[tuple[str, bytes, bytes]],
           stop: Any, counts: Any) -> None:
    """The flood itself, in a process of its own (so that its 1,200 sockets cost the
    well-behaved client's timing nothing in this one): connections that each send a start
    and then trickle one byte a second, reopened when the server closes them.
    ``counts``: [opened, refused, held now]."""
    live = Live("", host, port, str)
    socks: list[socket.socket | None] = [None] * len(starts)

    def open_one(i: int) -> None:
        source, first, _ = starts[i]
        try:
            sock = open_from(live, source)
            sock.sendall(first)
            sock.setblocking(False)
            socks[i] = sock
            counts[0] += 1
        except OSError:
            counts[1] += 1

    for i in range(len(starts)):
        open_one(i)
    counts[2] = sum(s is not None for s in socks)
    while not stop.wait(1.0):
        for i, sock in enumerate(socks):
            if sock is None:
                open_one(i)
                continue
            try:
                if sock.recv(65536) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                pass
            except OSError:
                sock.close()
                socks[i] = None
                continue
            try:
                sock.send(starts[i][2])
            except OSError:
                sock.close()
                socks[i] = None
        counts[2] = sum(s is not None for s in socks)
    for sock in socks:
        if sock is not None:
            sock.close()


class Flood:
    """``_flood`` in another process, for the length of a ``with``."""

    def __init__(self, live: Live, starts: list[tuple[str, bytes, bytes]]) -> None:
        context = multiprocessing.get_context("spawn")
        self.stop = context.Event()
        self.counts = context.Array("i", 3)
        self.total = len(starts)
        self.process = context.Process(
            target=_flood, args=(live.host, live.port, starts, self.stop, self.counts),
            daemon=True)

    def __enter__(self) -> Flood:
        self.process.start()
        deadline = time.monotonic() + 60
        while self.counts[0] + self.counts[1] < self.total and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # one round of trickling, and the held count, before we measure
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.process.join(20)
        if self.process.is_alive():
            self.process.kill()

    @property
    def held(self) -> int:
        return int(self.counts[2])


def flood_sources(base: str, count: int, per_address: int) -> list[str]:
    """``count`` source addresses under ``base`` (``127.0.N``), ``per_address`` each."""
    return [f"{base}.{1 + i // per_address}" for i in range(count)]


@contextmanager
def good_client(live: Live, source: str) -> Iterator[httpx.Client]:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=live.url, transport=transport, timeout=5.0) as client:
        yield client


def test_a_flood_of_slow_heads_and_slow_bodies_locks_nobody_out(tmp_path: Path,
                                                                  capsys: Any) -> None:
    """600 connections trickling request heads and 600 trickling bodies (half declared,
    half chunked), from 40 addresses with 30 connections each, against the default
    MAX_IN_FLIGHT of 500: a well-behaved client still gets /health and a real /update
    answered 200, each within 1 s, for the whole flood. (Were bodies read inside an
    in-flight slot, the 600 bodies would hold all 500 slots: 503 for everyone.)"""
    with live_server(tmp_path) as live:
        with good_client(live, "127.0.9.1") as good:
            account = good.post("/admin/accounts", json={"domain": "www.example.com"},
                                headers=ADMIN).json()
            heads = [(s, *slow_head()) for s in flood_sources("127.0.1", 600, 30)]
            bodies = [(s, *slow_body(chunked=n % 2 == 1))
                      for n, s in enumerate(flood_sources("127.0.2", 600, 30))]
            results: list[tuple[str, int, float]] = []
            with Flood(live, heads + bodies) as flood:
                held_at_start = flood.held
                deadline = time.monotonic() + 8.0
                n = 0
                while time.monotonic() < deadline:
                    for what in ("health", "update"):
                        started = time.monotonic()
                        try:
                            if what == "health":
                                status = good.get("/health").status_code
                            else:
                                n += 1
                                status = good.post("/update", headers={
                                    "X-Api-User": account["username"],
                                    "X-Api-Key": account["password"]}, json={
                                    "subdomain": account["subdomain"],
                                    "txt": challenge_value(n)}).status_code
                        except httpx.HTTPError as exc:
                            status = -1
                            what += f" {type(exc).__name__}"
                        results.append((what, status, time.monotonic() - started))
                    time.sleep(0.25)
                held_at_end = flood.held
            log = live.log()
    slowest = max(t for _, _, t in results)
    with capsys.disabled():
        print(f"\n[slow flood: 600 heads + 600 bodies] held open at start {held_at_start}, "
              f"at end {held_at_end}; {len(results)} good requests, slowest {slowest:.3f}s")
    assert held_at_start >= 1100, held_at_start  # the flood really was there
    bad = [(w, s, round(t, 3)) for w, s, t in results if s != 200 or t > 1.0]
    assert not bad, bad
    assert '"status": 5' not in log


def test_each_address_holds_a_bounded_number_of_connections(tmp_path: Path) -> None:
    """MAX_CONNECTIONS_PER_ADDRESS=20: the 21st connection from one address is answered
    429 ``too_many_connections`` and closed at once; another address is served; once the
    first address lets connections go, it may open new ones."""
    with live_server(tmp_path, max_connections_per_address="20") as live:
        held = [open_from(live, "127.0.5.1") for _ in range(20)]
        for sock in held:
            sock.sendall(slow_head()[0])
        try:
            extra = open_from(live, "127.0.5.1")
            answer, closed_after = read_answer(extra, 5.0)
            extra.close()
            assert answer.startswith(b"HTTP/1.1 429 "), answer[:200]
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {
                "error": "too_many_connections"}
            assert closed_after is not None and closed_after < 2.0
            with good_client(live, "127.0.5.2") as other:
                assert other.get("/health").status_code == 200
                metrics = other.get("/metrics").text
            assert "acme_delegate_connections_refused_total 1.0" in metrics
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 5
        while True:  # the server notices the closes
            with good_client(live, "127.0.5.1") as again:
                try:
                    if again.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            assert time.monotonic() < deadline, "the address stayed locked out"
            time.sleep(0.2)


@pytest.mark.parametrize("how", ["head", "body", "chunked-body"])
def test_stalled_requests_meet_their_deadline(tmp_path: Path, how: str) -> None:
    """HEAD_TIMEOUT=BODY_TIMEOUT=2: a head that stops arriving is closed, a body that
    stops arriving is answered 408 ``request_timeout``, both within the deadline (plus
    scheduling slack), never held open for long."""
    with live_server(tmp_path, head_timeout="2", body_timeout="2") as live:
        sock = open_from(live, "127.0.6.1")
        first, _ = slow_head() if how == "head" else slow_body(chunked=how == "chunked-body")
        started = time.monotonic()
        sock.sendall(first)
        answer, closed_after = read_answer(sock, 8.0)
        seconds = time.monotonic() - started
        sock.close()
    assert closed_after is not None, f"still open after {seconds:.1f}s"
    assert 1.5 <= seconds <= 4.0, seconds
    if how == "head":
        assert answer == b"", answer[:200]
    else:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"error": "request_timeout"}


def test_addresses_are_counted_as_hosts_and_proxies_are_exempt() -> None:
    """IPv6 counts per /64 (a host gets at least that many addresses), IPv4-mapped IPv6
    as its IPv4 address; a trusted proxy, which every client behind it shares, is exempt."""
    limit = ConnectionsPerAddress(2, exempt=[ipaddress.ip_network("10.0.0.0/8")])
    key = limit.key
    assert key(("2001:db8:1:2::1", 1, 0, 0)) == key(("2001:db8:1:2:ffff::9", 1, 0, 0))
    assert key(("2001:db8:1:2::1", 1, 0, 0)) != key(("2001:db8:1:3::1", 1, 0, 0))
    assert key(("::ffff:192.0.2.1", 1, 0, 0)) == key(("192.0.2.1", 1)) == "192.0.2.1"
    assert key("/run/socket") is None
    host = key(("2001:db8:1:2::1", 1, 0, 0))
    assert host is not None
    assert [limit.admit(host) for _ in range(3)] == [True, True, False]
    limit.release(host)
    assert limit.admit(host)
    assert all(limit.admit("10.1.2.3") for _ in range(10))
