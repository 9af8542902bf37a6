"""Fault injection: 5xx answers, ghost writes, forced 429s, latency."""

from __future__ import annotations

import time

import httpx
import pytest
from pydantic import ValidationError

from app.standin import Faults, StandinState

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


def test_fault_settings_are_validated(state: StandinState) -> None:
    with pytest.raises(ValidationError):
        Faults(error_probability=2)
    with pytest.raises(ValidationError):
        state.update_faults(fail_next=1)  # a typo must not silently do nothing
    updated = state.update_faults(error_next=3)
    assert updated.error_next == 3
    assert state.update_faults(latency_ms=5).error_next == 3
