"""The DigitalOcean request window, kept in the database.

One row per request sent in the last hour. Every process of a deployment (replicas on
PostgreSQL; a server, its restart after a crash, and the CLI on SQLite) spends from the
same window. On PostgreSQL a transaction-scoped advisory lock makes "count, then take"
atomic across replicas and database time is the clock, so skewed hosts still agree.
SQLite has one writer at a time, and its server is one process.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.store import advisory_key
from app.db.tables import DoRequestRow
from app.pacing.budget import HOUR, MINUTE

_LOCK = advisory_key("acme-delegate:digitalocean-budget")

_PG_COUNT = text("""
    SELECT count(*) FILTER (WHERE at > clock_timestamp() - make_interval(secs => :minute)),
           count(*),
           EXTRACT(EPOCH FROM clock_timestamp() - min(at) FILTER (
               WHERE at > clock_timestamp() - make_interval(secs => :minute))),
           EXTRACT(EPOCH FROM clock_timestamp() - min(at))
    FROM do_requests
    WHERE at > clock_timestamp() - make_interval(secs => :hour)
""")


class DatabaseWindow:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    async def try_take(self, per_minute: int, per_hour: int) -> float:
        async with self._engine.connect() as conn:
            if not self._postgres:
                # Take SQLite's write lock before counting: count-then-insert stays atomic
                # between processes (a deferred transaction would count a stale snapshot).
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            wait = await self._take(conn, per_minute, per_hour)
            await conn.commit()
            return wait

    async def ages(self) -> list[float]:
        """Seconds since each request of the last hour, youngest first (database time on
        PostgreSQL)."""
        async with self._engine.connect() as conn:
            if self._postgres:
                rows = await conn.execute(text(
                    "SELECT EXTRACT(EPOCH FROM clock_timestamp() - at) FROM do_requests "
                    "WHERE at > clock_timestamp() - make_interval(secs => :hour) "
                    "ORDER BY at DESC"), {"hour": HOUR})
                return [float(r[0]) for r in rows]
            now = datetime.now(UTC)
            rows = await conn.execute(
                select(DoRequestRow.at).where(DoRequestRow.at > now - timedelta(seconds=HOUR))
                .order_by(DoRequestRow.at.desc()))
            return [(now - _aware(r[0])).total_seconds() for r in rows]

    async def _take(self, conn: AsyncConnection, per_minute: int, per_hour: int) -> float:
        if self._postgres:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
            row = (await conn.execute(_PG_COUNT, {"minute": MINUTE, "hour": HOUR})).one()
            minute, hour = int(row[0]), int(row[1])
            minute_age, hour_age = float(row[2] or 0), float(row[3] or 0)
        else:
            minute, hour, minute_age, hour_age = await self._sqlite_count(conn)
        waits = []
        # Waiting for the oldest to leave is a lower bound when over by more than one;
        # the caller simply asks again after the wait.
        if minute >= per_minute:
            waits.append(MINUTE - minute_age)
        if hour >= per_hour:
            waits.append(HOUR - hour_age)
        if waits:
            return max(max(waits), 0.01)
        if self._postgres:
            await conn.execute(text("INSERT INTO do_requests (at) VALUES (clock_timestamp())"))
        else:
            await conn.execute(insert(DoRequestRow).values(at=datetime.now(UTC)))
        if random.random() < 0.01:  # noqa: S311 - housekeeping now and then
            await conn.execute(delete(DoRequestRow).where(
                DoRequestRow.at < datetime.now(UTC) - timedelta(seconds=HOUR)))
        return 0.0

    @staticmethod
    async def _sqlite_count(conn: AsyncConnection) -> tuple[int, int, float, float]:
        now = datetime.now(UTC)
        in_minute = DoRequestRow.at > now - timedelta(seconds=MINUTE)
        in_hour = DoRequestRow.at > now - timedelta(seconds=HOUR)
        minute, oldest_minute = (await conn.execute(
            select(func.count(), func.min(DoRequestRow.at)).where(in_minute))).one()
        hour, oldest_hour = (await conn.execute(
            select(func.count(), func.min(DoRequestRow.at)).where(in_hour))).one()

        def age(at: object) -> float:
            return 0.0 if at is None else (now - _aware(at)).total_seconds()

        return int(minute), int(hour), age(oldest_minute), age(oldest_hour)


async def window_usage(engine: AsyncEngine) -> tuple[int, int]:
    """DigitalOcean requests taken in the last minute and hour, by every process of the
    deployment (the same window ``DatabaseWindow`` fills); read-only."""
    now = datetime.now(UTC)
    counts = select(
        func.count().filter(DoRequestRow.at > now - timedelta(seconds=MINUTE)),
        func.count(),
    ).where(DoRequestRow.at > now - timedelta(seconds=HOUR))
    async with engine.connect() as conn:
        minute, hour = (await conn.execute(counts)).one()
    return int(minute), int(hour)


def _aware(at: object) -> datetime:
    when = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
    return when if when.tzinfo else when.replace(tzinfo=UTC)
