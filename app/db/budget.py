"""The DigitalOcean request window shared by every replica, in PostgreSQL.

One row per request sent in the last hour; a transaction-scoped advisory lock
makes "count, then take" atomic across replicas. Database time is the clock, so
replicas with skewed clocks still agree.
"""

from __future__ import annotations

import random

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.store import advisory_key

_LOCK = advisory_key("acme-delegate:digitalocean-budget")

_COUNT = text("""
    SELECT count(*) FILTER (WHERE at > clock_timestamp() - interval '60 seconds'),
           count(*),
           EXTRACT(EPOCH FROM clock_timestamp() - min(at) FILTER (
               WHERE at > clock_timestamp() - interval '60 seconds')),
           EXTRACT(EPOCH FROM clock_timestamp() - min(at))
    FROM do_requests
    WHERE at > clock_timestamp() - interval '1 hour'
""")


class PostgresWindow:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def try_take(self, per_minute: int, per_hour: int) -> float:
        async with self._engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
            row = (await conn.execute(_COUNT)).one()
            minute, hour = int(row[0]), int(row[1])
            waits = []
            # Waiting for the oldest to leave the window is a lower bound when over by more
            # than one; the caller simply asks again after the wait.
            if minute >= per_minute:
                waits.append(60.0 - float(row[2] or 0))
            if hour >= per_hour:
                waits.append(3600.0 - float(row[3] or 0))
            if waits:
                return max(max(waits), 0.01)
            await conn.execute(text("INSERT INTO do_requests (at) VALUES (clock_timestamp())"))
            if random.random() < 0.01:  # noqa: S311 - housekeeping now and then
                await conn.execute(text(
                    "DELETE FROM do_requests WHERE at < clock_timestamp() - interval '1 hour'"))
            return 0.0
