"""Authorization has one home (app.core.access): every write endpoint refuses the same
wrong credential, and the same reach for another's name, in the same way: the same
status and body, the same audit row, and one more count against the address's limit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.core.models import AuditQuery
from tests.conftest import Harness, challenge_value

V = challenge_value(3)
FAILURES_PER_MINUTE = 3

Send = Callable[[Harness, dict[str, Any], str], Awaitable[httpx.Response]]


async def acmedns_update(h: Harness, account: dict[str, Any], target: str) -> httpx.Response:
    return await h.client.post("/update", json={"subdomain": target, "txt": V}, headers={
        "X-Api-User": account["username"], "X-Api-Key": account["password"]})


def httpreq(path: str) -> Send:
    async def send(h: Harness, account: dict[str, Any], target: str) -> httpx.Response:
        return await h.client.post(path, json={"fqdn": target + ".", "value": V},
                                   auth=(account["username"], account["password"]))
    return send


ENDPOINTS: dict[str, Send] = {"/update": acmedns_update, "/present": httpreq("/present"),
                              "/cleanup": httpreq("/cleanup")}


def own_target(path: str, account: dict[str, Any]) -> str:
    """What the endpoint calls the account's own name."""
    return str(account["subdomain"] if path == "/update" else account["fulldomain"])


async def refusals(h: Harness) -> list[tuple[str | None, str, str | None, str | None, int]]:
    rows = await h.services.accounts.audit_trail(AuditQuery(event="auth.failed"))
    return [(r.username, r.outcome, r.client, r.name, r.count) for r in rows]


@pytest.mark.parametrize("path", list(ENDPOINTS))
async def test_a_wrong_key_is_refused_alike_everywhere(harness_factory: Any, path: str) -> None:
    async with harness_factory(auth_failures_per_minute=FAILURES_PER_MINUTE,
                               client_ip="198.51.100.7") as h:
        account = await h.create_account(domain="www.example.com")
        wrong = {**account, "password": "w" * 40}
        for n in range(1, FAILURES_PER_MINUTE + 1):
            response = await ENDPOINTS[path](h, wrong, own_target(path, account))
            assert (response.status_code, response.json()) == (401, {"error": "forbidden"})
            # One audit row counts them: the attempted username, the address, no name.
            assert await refusals(h) == [(account["username"], "forbidden", "198.51.100.7",
                                          None, n)]
        # Each counted against the address: now even the right key is held off.
        held = await ENDPOINTS[path](h, account, own_target(path, account))
        assert (held.status_code, held.json()) == (429, {"error": "too_many_requests"})
        assert [r[-1] for r in await refusals(h)] == [FAILURES_PER_MINUTE]  # held off: no write
        assert h.txt_at(account["fulldomain"]) == []


@pytest.mark.parametrize("path", list(ENDPOINTS))
async def test_another_name_is_refused_alike_everywhere(harness_factory: Any,
                                                        path: str) -> None:
    async with harness_factory(auth_failures_per_minute=FAILURES_PER_MINUTE,
                               client_ip="198.51.100.8") as h:
        account = await h.create_account(domain="www.example.com")
        other = await h.create_account(domain="mail.example.com")
        for n in range(1, FAILURES_PER_MINUTE + 1):
            response = await ENDPOINTS[path](h, account, own_target(path, other))
            assert (response.status_code, response.json()) == (401, {"error": "forbidden"})
            assert await refusals(h) == [(account["username"], "wrong_name", "198.51.100.8",
                                          account["fulldomain"], n)]
        held = await ENDPOINTS[path](h, account, own_target(path, account))
        assert (held.status_code, held.json()) == (429, {"error": "too_many_requests"})
        assert h.txt_at(other["fulldomain"]) == [] and h.txt_at(account["fulldomain"]) == []


@pytest.mark.parametrize("path", ["/update", "/present"])
async def test_a_repeat_is_one_unit_of_work(harness: Harness, path: str) -> None:
    """A value already live: the answer, last-used and the audit row, no DigitalOcean
    call; the request's work commits before the answer is sent."""
    account = await harness.create_account(domain="www.example.com")
    assert (await ENDPOINTS["/present"](harness, account, account["fulldomain"])
            ).status_code == 200
    calls = harness.do_calls()
    before = (await harness.services.accounts.get(account["username"])).last_used_at
    response = await ENDPOINTS[path](harness, account, own_target(path, account))
    assert response.status_code == 200
    assert harness.do_calls() == calls
    used = await harness.services.accounts.get(account["username"])
    after = used.last_used_at
    assert before is not None and after is not None and after > before
    # Only last-used moved (PostgreSQL sends it with the audit row: nothing else may ride).
    assert (used.username, used.name, used.label, used.key_hash) == (
        account["username"], account["fulldomain"], account["subdomain"],
        (await harness.services.accounts.get(account["username"])).key_hash)
    trail = await harness.services.accounts.audit_trail(AuditQuery(limit=1))
    assert (trail[0].event, trail[0].outcome) == (path.strip("/"), "ok")


@pytest.mark.parametrize("path", ["/update", "/present"])
async def test_the_unit_commits_before_the_answer_starts(harness: Harness, path: str) -> None:
    """The route's unit of work ends before its answer goes out (``UnitOfWorkRoute``):
    when the answer starts, the repeat's last-used and audit row are readable elsewhere.
    Were they committed after sending, PostgreSQL would not show them yet and SQLite's one
    connection would still be held (the reads below wait, then time out)."""
    account = await harness.create_account(domain="www.example.com")
    assert (await ENDPOINTS["/present"](harness, account, account["fulldomain"])
            ).status_code == 200
    accounts = harness.services.accounts
    before = (await accounts.get(account["username"])).last_used_at
    seen: list[tuple[bool, str, str]] = []

    async def watch(scope: Any, receive: Any, send: Any) -> None:
        async def send_after_looking(message: Any) -> None:
            if message["type"] == "http.response.start":
                async with asyncio.timeout(5):
                    used = (await accounts.get(account["username"])).last_used_at
                    trail = await accounts.audit_trail(AuditQuery(limit=1))
                assert before is not None and used is not None
                seen.append((used > before, trail[0].event, trail[0].outcome))
            await send(message)
        await harness.app(scope, receive, send_after_looking)

    transport = httpx.ASGITransport(app=watch, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://acme.test") as client:
        watched = Harness(client, harness.services, harness.do, harness.metrics)
        response = await ENDPOINTS[path](watched, account, own_target(path, account))
    assert response.status_code == 200
    assert seen == [(True, path.strip("/"), "ok")]
