"""The DigitalOcean request window kept in the database, shared by every replica."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.budget import DatabaseWindow
from app.db.engine import create_engine
from app.pacing.budget import MINUTE


async def take_one(window: DatabaseWindow, per_minute: int, per_hour: int) -> float:
    """Take a slot if the window has one: 0, else the seconds until one frees."""
    limits = (per_minute, per_hour)
    usage = await window.take(lambda u: ["k"] if u.free(limits) else [])
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
