"""A request turned away at the in-flight limit hears when to come back, truthfully."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
from starlette.types import Receive, Scope, Send

from app.api.guards import InFlightLimit
from app.main import _backlog
from app.pacing.budget import MINUTE, LocalWindow, RateBudget


def held_app() -> tuple[InFlightLimit, asyncio.Event, asyncio.Event]:
    """An app whose requests stay in flight until ``release`` is set."""
    entered, release = asyncio.Event(), asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def hint(scope: Scope) -> float:
        return 37.2

    return InFlightLimit(app, limit=1, retry_after=hint), entered, release


async def test_a_full_house_answers_the_estimated_wait() -> None:
    guard, entered, release = held_app()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard),
                                 base_url="http://t") as client:
        first = asyncio.create_task(client.get("/"))
        await entered.wait()
        refused = await client.get("/")
        release.set()
        assert (await first).status_code == 200
    assert refused.status_code == 503
    assert refused.json() == {"error": "overloaded"}
    assert refused.headers["retry-after"] == "38"  # rounded up, never early


async def test_the_service_estimates_from_the_budget_backlog() -> None:
    window = LocalWindow()
    await window.take(lambda _: ["cli"])  # the minute's one slot, taken by another process
    budget = RateBudget(per_minute=1, per_hour=10, window=window)
    services = SimpleNamespace(budget=budget, settings=SimpleNamespace(max_in_flight=2))
    app = SimpleNamespace(state=SimpleNamespace(services=services))
    # The two requests in flight may each want a slot first: this one's is the third
    # from now, a minute apart; and whoever asks next is told the minute after that.
    assert 3 * MINUTE - 5 < await _backlog({"app": app}) <= 3 * MINUTE
    assert 4 * MINUTE - 5 < await _backlog({"app": app}) <= 4 * MINUTE
    # Before the lifespan has built the services: a second.
    assert await _backlog({"app": SimpleNamespace(state=SimpleNamespace())}) == 1.0
