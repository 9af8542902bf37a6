"""Fault injection: 5xx answers, ghost writes, forced 429s, latency."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from pydantic import ValidationError
from starlette.types import Message

from app.standin import Faults, StandinState, create_standin_app

from .support import TOKEN

RECORDS = "/v2/domains/example.com/records"
TXT = {"type": "TXT", "name": "_acme-challenge", "data": "v", "ttl": 30}


def txt_count(state: StandinState) -> int:
    return sum(1 for r in state.records("example.com") if r.type == "TXT")


async def test_fail_next_posts_only(client: httpx.AsyncClient, state: StandinState) -> None:
    state.set_faults(Faults(methods=["POST"], error_next=2))
    for _ in range(2):
        response = await client.post(RECORDS, json=TXT)
        assert response.status_code == 500
        assert response.json()["id"] == "server_error"
        assert "ratelimit-remaining" in response.headers
        assert (await client.get(RECORDS)).status_code == 200
    assert txt_count(state) == 0, "a plain 5xx must not write"
    assert (await client.post(RECORDS, json=TXT)).status_code == 201
    assert state.faults.error_next == 0


async def test_error_status_is_configurable(client: httpx.AsyncClient, state: StandinState) -> None:
    state.set_faults(Faults(error_next=1, error_status=503))
    response = await client.delete(f"{RECORDS}/1")
    assert response.status_code == 503
    assert response.json()["id"] == "server_error"


async def test_random_errors_are_seeded(client: httpx.AsyncClient, state: StandinState) -> None:
    async def pattern() -> list[int]:
        state.set_faults(Faults(error_probability=0.5, seed=42))
        return [(await client.get("/v2/domains")).status_code for _ in range(40)]

    first = await pattern()
    assert first == await pattern()
    assert set(first) == {200, 500}


async def test_probability_one_always_fails(client: httpx.AsyncClient, state: StandinState) -> None:
    state.set_faults(Faults(error_probability=1, methods=["DELETE"]))
    record = state.add_record("example.com", "TXT", "x", "v")
    for _ in range(5):
        assert (await client.delete(f"{RECORDS}/{record.id}")).status_code == 500
    assert state.get_record("example.com", record.id) is not None
    assert (await client.get("/v2/domains")).status_code == 200


async def test_ghost_write_creates_but_answers_500(
    client: httpx.AsyncClient, state: StandinState
) -> None:
    state.set_faults(Faults(ghost_next=1))
    response = await client.post(RECORDS, json=TXT)
    assert response.status_code == 500
    assert response.json()["id"] == "server_error"
    assert txt_count(state) == 1, "the write happened"
    listed = await client.get(
        RECORDS, params={"type": "TXT", "name": "_acme-challenge.example.com"}
    )
    assert len(listed.json()["domain_records"]) == 1
    assert (await client.post(RECORDS, json=TXT)).status_code == 201
    assert txt_count(state) == 2


async def test_ghost_ignores_non_create_requests(
    client: httpx.AsyncClient, state: StandinState
) -> None:
    state.set_faults(Faults(ghost_next=1))
    assert (await client.get(RECORDS)).status_code == 200
    assert (await client.post(RECORDS, json={"type": "TXT"})).status_code == 422
    assert state.faults.ghost_next == 1
    assert (await client.post(RECORDS, json=TXT)).status_code == 500


async def test_forced_429_is_not_counted(client: httpx.AsyncClient, state: StandinState) -> None:
    before = await client.get("/v2/domains")
    state.set_faults(Faults(throttle_next=2, throttle_retry_after=7, methods=["GET"]))
    for _ in range(2):
        refused = await client.get("/v2/domains")
        assert refused.status_code == 429
        assert refused.json()["id"] == "too_many_requests"
        assert refused.headers["retry-after"] == "7"
        assert refused.headers["ratelimit-remaining"] == before.headers["ratelimit-remaining"]
    after = await client.get("/v2/domains")
    assert after.status_code == 200
    remaining = int(before.headers["ratelimit-remaining"]) - 1
    assert after.headers["ratelimit-remaining"] == str(remaining)


async def test_latency_respects_method_filter(
    client: httpx.AsyncClient, state: StandinState
) -> None:
    state.set_faults(Faults(latency_ms=300, methods=["POST"]))
    started = time.perf_counter()
    await client.get("/v2/domains")
    assert time.perf_counter() - started < 0.25
    started = time.perf_counter()
    assert (await client.post(RECORDS, json=TXT)).status_code == 201
    assert time.perf_counter() - started >= 0.3


async def test_a_request_counts_as_stalled_only_once_it_has_arrived_whole(
        state: StandinState) -> None:
    """``stalled`` tells a test that a request is at the stand-in and will be applied
    whatever its client does now: not while its body is still on the way (a client
    killed then never sends it, and nothing is applied)."""
    state.set_faults(Faults(latency_ms=200, methods=["POST"]))
    app = create_standin_app(state, token=TOKEN)
    body = json.dumps(TXT).encode()
    body_sent = asyncio.Event()
    sent: list[Message] = []
    head = True

    async def receive() -> Message:
        nonlocal head
        if head:
            head = False
            await body_sent.wait()
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": RECORDS, "raw_path": RECORDS.encode(),
             "query_string": b"", "root_path": "", "server": ("127.0.0.1", 80),
             "client": ("127.0.0.1", 1234),
             "headers": [(b"host", b"api.digitalocean.com"),
                         (b"authorization", f"Bearer {TOKEN}".encode()),
                         (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    answering = asyncio.ensure_future(app(scope, receive, send))
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert state.stalled() == 0  # the head is in, the body is not
    body_sent.set()
    for _ in range(100):
        if state.stalled():
            break
        await asyncio.sleep(0.005)
    assert state.stalled() == 1 and not answering.done()
    await asyncio.wait_for(answering, 5)
    assert sent[0]["status"] == 201 and txt_count(state) == 1


def test_fault_settings_are_validated(state: StandinState) -> None:
    with pytest.raises(ValidationError):
        Faults(error_probability=2)
    with pytest.raises(ValidationError):
        state.update_faults(fail_next=1)  # a typo must not silently do nothing
    updated = state.update_faults(error_next=3)
    assert updated.error_next == 3
    assert state.update_faults(latency_ms=5).error_next == 3
