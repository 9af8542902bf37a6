"""The DigitalOcean request window kept in the database, shared by every replica."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.budget import DatabaseWindow
from app.db.engine import create_engine
from app.pacing.budget import MINUTE
from app.wiring import build_services
from tests.conftest import settings_maker


async def take_one(window: DatabaseWindow, per_minute: int, per_hour: int) -> float:
    """Take a slot if the window has one: 0, else the seconds until one frees."""
    limits = (per_minute, per_hour)
    usage, _ = await window.take(lambda u: ["k"] if u.free(limits) else [])
    return 0.0 if usage.free(limits) else usage.wait(limits)


async def test_processes_share_one_window_in_the_database(database_url: str) -> None:
    engines: list[AsyncEngine] = [create_engine(database_url) for _ in range(3)]
    try:
        windows = [DatabaseWindow(e) for e in engines]
        results = await asyncio.gather(*(take_one(w, 10, 100) for w in windows for _ in range(6)))
        assert sum(1 for r in results if r == 0.0) == 10
        assert all(MINUTE - 5 < r <= MINUTE for r in results if r)
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.mark.postgres
async def test_the_budget_does_not_queue_behind_the_request_path(postgres_url: str) -> None:
    """One budget round serves every waiting request of the process: on PostgreSQL it has
    connections of its own, so requests holding (or queued for) every connection of the
    service's pool do not hold the round, and with it every DigitalOcean call, behind
    their work. (SQLite keeps one connection: a second made the requests' transactions
    meet its busy handler.)"""
    async with (httpx.AsyncClient(transport=httpx.MockTransport(
                    lambda _: httpx.Response(404))) as http,
                build_services(settings_maker(postgres_url)(), http=http) as services):
        held: list[AsyncConnection] = []
        while True:  # every connection of the service's pool, as a burst's requests do
            try:
                async with asyncio.timeout(0.5):
                    held.append(await services.engine.connect())
            except TimeoutError:
                break
        try:
            async with asyncio.timeout(5):
                await services.budget.acquire(max_wait=0)
        finally:
            for conn in held:
                await conn.close()


async def test_an_answered_slot_is_stamped_again(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        window = DatabaseWindow(engine)
        _, slots = await window.take(lambda _: ["a", "b"])
        assert len(slots) == 2
        await asyncio.sleep(0.3)  # the requests go out and are answered
        await window.take(lambda _: [], answered=slots[:1])
        ages = await window.ages()
        assert ages[0] < 0.2 <= ages[1]  # the answered one is young again, the other not
    finally:
        await engine.dispose()
