"""PostgreSQL's pool: a connection is pinged before it is handed out only after sitting
idle (a ping is three round trips on asyncpg), and a dead idle one is replaced unseen."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from app.db.engine import create_engine

pytestmark = pytest.mark.postgres

IDLE = 0.3


async def backend_pid(engine: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_busy_connection_is_not_pinged_an_idle_one_is(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = create_engine(postgres_url, pool_size=1, ping_idle=IDLE)
    pings: list[object] = []
    real = engine.sync_engine.dialect.do_ping

    def counted(connection: Any) -> bool:
        pings.append(connection)
        return bool(real(connection))

    monkeypatch.setattr(engine.sync_engine.dialect, "do_ping", counted)
    try:
        first = await backend_pid(engine)
        for _ in range(5):
            assert await backend_pid(engine) == first
        assert pings == []  # back from work a moment ago each time: no ping
        await asyncio.sleep(IDLE * 1.5)
        assert await backend_pid(engine) == first
        assert len(pings) == 1
    finally:
        await engine.dispose()


async def test_a_connection_dropped_while_idle_is_replaced_unseen(postgres_url: str) -> None:
    engine = create_engine(postgres_url, pool_size=1, ping_idle=IDLE)
    other = create_engine(postgres_url, pool=False)
    try:
        dropped = await backend_pid(engine)
        async with other.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped})
        await asyncio.sleep(IDLE * 1.5)
        # The pooled connection is dead; the request that takes it never sees that.
        assert await backend_pid(engine) != dropped
    finally:
        await engine.dispose()
        await other.dispose()
