"""200 means live: /update and /present answer once the nameservers serve the value, with
the stand-in's DNS lagging its API by a propagation delay, as DigitalOcean's does."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dns.asyncquery
import dns.message
import dns.rdatatype
import pytest

import app.standin.dns
from app.config import Settings
from app.propagation import DIGITALOCEAN_NAMESERVERS
from tests.api.test_metrics import scrape, value
from tests.conftest import ADMIN_TOKEN, DO_TOKEN, Harness, challenge_value

DELAY = 2.0  # the stand-in's propagation delay: "a few seconds", kept short for the suite
NEVER = 3600.0


async def served(h: Harness, name: str) -> set[str]:
    """The TXT values the harness's nameserver answers at ``name``, asked now."""
    (nameserver,) = h.services.settings.nameservers
    query = dns.message.make_query(name, "TXT")
    response = await dns.asyncquery.udp(query, nameserver.host, port=nameserver.port,
                                        timeout=2)
    return {b"".join(r.strings).decode() for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TXT for r in rrset}


async def timed(request: Any) -> tuple[Any, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


async def test_update_200_is_followed_at_once_by_dns_that_serves_it(
        harness_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    async with harness_factory(wait_for_dns=10) as h:
        h.do.set_propagation_delay(DELAY)
        account = await h.create_account(domain="www.example.com")
        txt = challenge_value(1)
        response, seconds = await timed(h.update(account, txt))
        assert response.status_code == 200 and response.json() == {"txt": txt}
        assert response.headers["acme-delegate-dns"] == "live"
        assert txt in await served(h, account["fulldomain"])
        assert seconds >= DELAY - 0.1  # it did wait for the lagging DNS
        samples = await scrape(h)
        assert value(samples, "acme_delegate_dns_waits_total", outcome="seen") == 1

        # A repeat of a value every nameserver was seen serving: no DigitalOcean call
        # and no nameserver asked: it answers at once.
        calls = h.do_calls()
        with counting_queries(monkeypatch) as asked:
            again, seconds = await timed(h.update(account, txt))
        assert again.status_code == 200 and again.headers["acme-delegate-dns"] == "live"
        assert h.do_calls() == calls and asked == []
        assert seconds < DELAY  # whatever the machine's load, less than any wait
        samples = await scrape(h)
        assert value(samples, "acme_delegate_dns_waits_total", outcome="known") == 1


@contextmanager
def counting_queries(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """The queries the stand-in's nameserver receives meanwhile."""
    asked: list[bytes] = []
    real_answer = app.standin.dns.answer_wire

    def counting(state: Any, wire: bytes, *, tcp: bool) -> bytes | None:
        asked.append(wire)
        return real_answer(state, wire, tcp=tcp)

    with monkeypatch.context() as patch:
        patch.setattr(app.standin.dns, "answer_wire", counting)
        yield asked


async def test_a_pending_value_is_asked_about_again(
        harness_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Answered ``pending`` (not seen served in time): its repeat waits again, and once
    the nameservers serve it the repeat says ``live``."""
    async with harness_factory(wait_for_dns=1) as h:
        h.do.set_propagation_delay(NEVER)
        account = await h.create_account(domain="www.example.com")
        txt = challenge_value(5)
        assert (await h.update(account, txt)).headers["acme-delegate-dns"] == "pending"
        with counting_queries(monkeypatch) as asked:
            again = await h.update(account, txt)
        assert again.headers["acme-delegate-dns"] == "pending" and len(asked) >= 1
        h.do.set_propagation_delay(0)
        with counting_queries(monkeypatch) as asked:
            seen = await h.update(account, txt)
        assert seen.headers["acme-delegate-dns"] == "live" and len(asked) >= 1
        with counting_queries(monkeypatch) as asked:
            known = await h.update(account, txt)
        assert known.headers["acme-delegate-dns"] == "live" and asked == []


async def test_a_write_to_the_name_forgets_what_was_confirmed_there(
        harness_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A new value at the name, and the values that stay there are asked about again
    (their records may be the ones it replaces); a replaced value is no repeat at all."""
    async with harness_factory(wait_for_dns=10, max_values_per_name=2) as h:
        account = await h.create_account(domain="www.example.com")
        name = account["fulldomain"]
        first, second, third = challenge_value(6), challenge_value(7), challenge_value(8)
        confirmed = h.services.propagation.confirmed
        for txt in (first, second):
            assert (await h.update(account, txt)).headers["acme-delegate-dns"] == "live"
        assert confirmed.known(name, second) and not confirmed.known(name, first)
        with counting_queries(monkeypatch) as asked:
            again = await h.update(account, second)
        assert again.headers["acme-delegate-dns"] == "live" and asked == []
        # The third value overwrites the oldest record (first's): second stays live in
        # the database but is no longer confirmed.
        assert (await h.update(account, third)).headers["acme-delegate-dns"] == "live"
        assert h.txt_at(name) == sorted([second, third])
        assert not confirmed.known(name, second)
        with counting_queries(monkeypatch) as asked:
            again = await h.update(account, second)
        assert again.headers["acme-delegate-dns"] == "live" and len(asked) >= 1
        # Removed (httpreq cleanup) or revoked: forgotten too.
        assert confirmed.known(name, second)
        cleaned = await h.client.post("/cleanup", json={"fqdn": name + ".", "value": second},
                                      auth=(account["username"], account["password"]))
        assert cleaned.status_code == 200, cleaned.text
        assert not confirmed.known(name, second)
        assert (await h.update(account, third)).headers["acme-delegate-dns"] == "live"
        assert confirmed.known(name, third)
        revoked = await h.client.delete(f"/admin/accounts/{account['username']}",
                                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert revoked.status_code == 200 and revoked.json()["removed_values"] >= 1
        assert not confirmed.known(name, third)


async def test_present_waits_too(harness_factory: Callable[..., Any]) -> None:
    async with harness_factory(wait_for_dns=10) as h:
        h.do.set_propagation_delay(DELAY)
        account = await h.create_account(domain="www.example.com")
        txt = challenge_value(2)
        response = await h.client.post(
            "/present", json={"fqdn": account["fulldomain"] + ".", "value": txt},
            auth=(account["username"], account["password"]))
        assert response.status_code == 200, response.text
        assert response.headers["acme-delegate-dns"] == "live"
        assert txt in await served(h, account["fulldomain"])


async def test_wait_for_dns_0_restores_the_immediate_answer(
        harness_factory: Callable[..., Any]) -> None:
    async with harness_factory(wait_for_dns=0) as h:
        h.do.set_propagation_delay(DELAY)
        account = await h.create_account(domain="www.example.com")
        txt = challenge_value(3)
        response, seconds = await timed(h.update(account, txt))
        assert response.status_code == 200 and response.headers["acme-delegate-dns"] == "off"
        assert seconds < DELAY
        # Answered before DNS caught up: exactly what WAIT_FOR_DNS=0 gives up.
        assert txt not in await served(h, account["fulldomain"])
        assert h.txt_at(account["fulldomain"]) == [txt]


async def test_the_bound_is_honoured_and_counted(harness_factory: Callable[..., Any]) -> None:
    """A DNS that never serves the value: 200 with ``pending`` within the bound + 1 s."""
    async with harness_factory(wait_for_dns=1.5) as h:
        h.do.set_propagation_delay(NEVER)
        account = await h.create_account(domain="www.example.com")
        txt = challenge_value(4)
        response, seconds = await timed(h.update(account, txt))
        assert response.status_code == 200 and response.json() == {"txt": txt}
        assert response.headers["acme-delegate-dns"] == "pending"
        assert 1.5 <= seconds < 2.5
        assert h.txt_at(account["fulldomain"]) == [txt]  # the record exists all the same
        samples = await scrape(h)
        assert value(samples, "acme_delegate_dns_waits_total", outcome="timeout") == 1
        assert value(samples, "acme_delegate_dns_wait_duration_seconds_count") == 1
        assert value(samples, "acme_delegate_dns_waiting") == 0


async def test_concurrent_waits_for_many_names_do_not_starve_other_requests(
        harness_factory: Callable[..., Any]) -> None:
    """Twenty requests wait on a DNS that never serves their values, with only four
    requests allowed in flight: the waiters hold no slot, so others still get in."""
    waiters, bound = 20, 8.0
    async with harness_factory(wait_for_dns=bound, max_in_flight=4) as h:
        h.do.set_propagation_delay(NEVER)
        accounts = [await h.create_account(domain=f"w{i}.example.com") for i in range(waiters)]
        tasks = []
        started = time.monotonic()
        for i, account in enumerate(accounts):
            tasks.append(asyncio.create_task(h.update(account, challenge_value(100 + i))))
            async with asyncio.timeout(5):  # each joins the waiters before the next starts
                while h.metrics.registry.get_sample_value("acme_delegate_dns_waiting") < i + 1:
                    if tasks[-1].done():
                        pytest.fail(f"update {i} was answered {tasks[-1].result().status_code} "
                                    "instead of waiting")
                    await asyncio.sleep(0.005)
        assert not any(t.done() for t in tasks)
        # Others are served at once: a health check, a read, a registration.
        health, seconds = await timed(h.client.get("/health"))
        assert health.status_code == 200 and seconds < 2
        listing = await h.client.get("/admin/accounts",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert listing.status_code == 200
        assert (await h.client.post("/register")).status_code == 201
        h.do.set_propagation_delay(0)  # publishes the twenty values too: let them finish
        results = await asyncio.gather(*tasks)
        assert {r.status_code for r in results} == {200}
        assert time.monotonic() - started < bound + 1
        # Every waiter saw its value (set_propagation_delay(0) published them) well
        # before its bound: the poller kept polling all twenty names.
        assert {r.headers["acme-delegate-dns"] for r in results} == {"live"}


async def until_waiting(h: Harness, count: int, task: asyncio.Task[Any]) -> None:
    """Until ``count`` requests wait for DNS; fails if ``task`` was answered instead."""
    async with asyncio.timeout(5):
        while (h.metrics.registry.get_sample_value("acme_delegate_dns_waiting") or 0) < count:
            if task.done():
                pytest.fail(f"answered {task.result().status_code} instead of waiting")
            await asyncio.sleep(0.005)


async def test_a_waiting_request_holds_no_lock_and_no_transaction(
        harness_factory: Callable[..., Any]) -> None:
    """A repeat of a value DNS does not serve yet waits after its unit of work ended (the
    repeat's unit holds the name's lock and a write transaction): the same name takes a
    new value, and the database other writes, while it waits."""
    async with harness_factory(wait_for_dns=3) as h:
        h.do.set_propagation_delay(NEVER)
        account = await h.create_account(domain="www.example.com")
        first, second = challenge_value(30), challenge_value(31)
        assert (await h.update(account, first)).headers["acme-delegate-dns"] == "pending"
        repeat = asyncio.create_task(h.update(account, first))
        await until_waiting(h, 1, repeat)
        other = asyncio.create_task(h.update(account, second))
        await until_waiting(h, 2, other)  # it got the name's lock and wrote meanwhile
        assert h.txt_at(account["fulldomain"]) == sorted([first, second])
        registered, seconds = await timed(h.client.post("/register"))
        assert registered.status_code == 201 and seconds < 2
        assert not repeat.done()
        assert {(await t).headers["acme-delegate-dns"] for t in (repeat, other)} == {"pending"}


@pytest.fixture
def silent_nameserver() -> Iterator[str]:
    """A loopback UDP port that never answers: DNS egress blocked, without egress."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


async def test_unreachable_nameservers_are_reported_once_and_nobody_waits(
        harness_factory: Callable[..., Any], silent_nameserver: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="acme_delegate")
    async with harness_factory(wait_for_dns=10, nameservers=silent_nameserver,
                               dns_timeout=0.3) as h:
        startup = [r for r in caplog.records if "startup.nameservers_unreachable" in r.message]
        assert len(startup) == 1 and startup[0].levelno == logging.WARNING
        account = await h.create_account(domain="www.example.com")
        for n in range(3):
            response, seconds = await timed(h.update(account, challenge_value(10 + n)))
            assert response.status_code == 200
            assert response.headers["acme-delegate-dns"] == "unchecked"
            assert seconds < 3  # far from the 10 s bound: nobody waits for nothing
        samples = await scrape(h)
        assert value(samples, "acme_delegate_nameserver_up", nameserver=silent_nameserver) == 0
        assert value(samples, "acme_delegate_dns_waits_total", outcome="unchecked") == 3
        # Said once, at start-up: not again on every request.
        said = [r for r in caplog.records if "nameservers_unreachable" in r.message
                or "nameserver_down" in r.message]
        assert said == startup


def test_the_default_nameservers_are_digitalocean_s() -> None:
    settings = Settings(do_token=DO_TOKEN, database_url="sqlite:///unused.sqlite3")
    assert settings.nameservers == list(DIGITALOCEAN_NAMESERVERS)
    assert settings.wait_for_dns > 0


async def test_the_default_nameservers_are_never_asked_from_tests(
        harness_factory: Callable[..., Any]) -> None:
    """With the defaults, start-up asks ns1-3.digitalocean.com; the suite's loopback guard
    refuses even the name lookup, so they count as unreachable and nothing leaves."""
    async with harness_factory(wait_for_dns=10, nameservers=",".join(
            map(str, DIGITALOCEAN_NAMESERVERS))) as h:
        assert h.services.propagation.reachable() == ()
        account = await h.create_account(domain="www.example.com")
        response = await h.update(account, challenge_value(20))
        assert response.headers["acme-delegate-dns"] == "unchecked"
    with pytest.raises(OSError, match="test guard"):
        socket.getaddrinfo("ns1.digitalocean.com", 53)
