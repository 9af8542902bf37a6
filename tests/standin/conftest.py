"""Fixtures for the DigitalOcean stand-in tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.standin import RateLimits, StandinState, create_standin_app

from .support import BASE, TOKEN, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(clock: FakeClock) -> StandinState:
    state = StandinState(clock=clock, rate_limits=RateLimits(per_minute=1000, per_hour=10000))
    state.add_zone("example.com")
    return state


@pytest.fixture
async def client(state: StandinState) -> AsyncIterator[httpx.AsyncClient]:
    app = create_standin_app(state, token=TOKEN)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=BASE,
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as client:
        yield client
