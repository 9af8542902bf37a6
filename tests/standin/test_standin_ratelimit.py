"""Per-token sliding-window rate limits, headers and 429 answers."""

from __future__ import annotations

import httpx

from app.standin import RateLimits, StandinState

from .support import FakeClock


async def test_headers_on_every_response(
    client: httpx.AsyncClient, state: StandinState, clock: FakeClock
) -> None:
    state.set_rate_limits(RateLimits(per_minute=100, per_hour=50))
    first = await client.get("/v2/domains")
    assert first.headers["ratelimit-limit"] == "50"
    assert first.headers["ratelimit-remaining"] == "49"
    assert first.headers["ratelimit-reset"] == str(int(clock.wall) + 3600)
    assert "retry-after" not in first.headers
    clock.advance(10)
    missing = await client.get("/v2/domains/nowhere.test/records")
    assert missing.status_code == 404
    assert missing.headers["ratelimit-remaining"] == "48"
    # Reset is when the oldest counted request expires, not the newest.
    assert missing.headers["ratelimit-reset"] == str(int(clock.wall) - 10 + 3600)


async def test_per_minute_limit_answers_429_with_retry_after(
    client: httpx.AsyncClient, state: StandinState, clock: FakeClock
) -> None:
    state.set_rate_limits(RateLimits(per_minute=3, per_hour=100))
    for _ in range(3):
        assert (await client.get("/v2/domains")).status_code == 200
        clock.advance(5)
    refused = await client.get("/v2/domains")
    assert refused.status_code == 429
    assert refused.json()["id"] == "too_many_requests"
    assert refused.json()["message"] == "API Rate limit exceeded."
    assert refused.headers["retry-after"] == "45"  # the first request ages out at t=60
    assert refused.headers["ratelimit-remaining"] == "97"
    clock.advance(44)
    assert (await client.get("/v2/domains")).headers["retry-after"] == "1"
    clock.advance(1)
    assert (await client.get("/v2/domains")).status_code == 200


async def test_refused_requests_do_not_extend_the_lockout(
    client: httpx.AsyncClient, state: StandinState, clock: FakeClock
) -> None:
    state.set_rate_limits(RateLimits(per_minute=2, per_hour=100))
    await client.get("/v2/domains")
    await client.get("/v2/domains")
    for _ in range(50):  # a client hammering through its 429s
        clock.advance(1)
        assert (await client.get("/v2/domains")).status_code == 429
    clock.advance(10)
    ok = await client.get("/v2/domains")
    assert ok.status_code == 200
    assert ok.headers["ratelimit-remaining"] == "97"
    statuses = [e.status for e in state.requests()]
    assert statuses.count(429) == 50


async def test_hourly_limit_has_no_retry_after(
    client: httpx.AsyncClient, state: StandinState, clock: FakeClock
) -> None:
    state.set_rate_limits(RateLimits(per_minute=100, per_hour=5))
    for _ in range(5):
        assert (await client.get("/v2/domains")).status_code == 200
        clock.advance(120)
    refused = await client.get("/v2/domains")
    assert refused.status_code == 429
    assert "retry-after" not in refused.headers
    assert refused.headers["ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit-reset"] == str(int(clock.wall) - 600 + 3600)
    clock.advance(3000)  # first request was 3600 s ago now
    assert (await client.get("/v2/domains")).status_code == 200


async def test_unauthenticated_requests_are_not_counted(
    client: httpx.AsyncClient, state: StandinState
) -> None:
    state.set_rate_limits(RateLimits(per_minute=1, per_hour=10))
    for _ in range(3):
        response = await client.get("/v2/domains", headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401
        assert "ratelimit-limit" not in response.headers
    assert (await client.get("/v2/domains")).status_code == 200
