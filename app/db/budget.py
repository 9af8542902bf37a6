"""The DigitalOcean request window and the deployment's fair queue, kept in the database.

The window: one row per request sent in the last hour, with who spent it. Every process
of a deployment (replicas on PostgreSQL; a server, its restart after a crash, and the CLI
on SQLite) spends from the same window. On PostgreSQL a transaction-scoped advisory lock
makes "count, then take" atomic across replicas and database time is the clock, so
skewed hosts still agree. SQLite has one writer at a time, and its server is one process.

The queue (PostgreSQL, ``DatabaseBoard``): one row per request waiting for a slot on any
replica, and per refused request's reservation. A round of one process is one
transaction under the same lock: its newcomers in, its refusals turned into
reservations, its waiting tickets kept alive (a killed replica's stop being kept alive
and vanish), then the queue read in its fair order and the slots its own tickets are
entitled to taken, for all of them at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.store import advisory_key
from app.db.tables import DoRequestRow
from app.pacing.budget import (
    GRACE,
    HOLD_EARLY,
    HOUR,
    MAX_RESERVATIONS,
    MINUTE,
    TICKET_TTL,
    Place,
    Round,
    Settled,
    Usage,
    plan,
)
from app.pacing.terms import Lane

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

_PG_AGES = text(
    "SELECT EXTRACT(EPOCH FROM clock_timestamp() - at) FROM do_requests "
    "WHERE at > clock_timestamp() - make_interval(secs => :hour) ORDER BY at DESC")


async def _pg_usage(conn: AsyncConnection) -> Usage:
    row = (await conn.execute(_PG_COUNT, {"minute": MINUTE, "hour": HOUR})).one()
    return Usage(int(row[0]), int(row[1]), float(row[2] or 0), float(row[3] or 0))


async def _pg_answered(conn: AsyncConnection, slots: Sequence[int]) -> None:
    """Stamp the slots of requests that are over with the moment now (see
    ``app.pacing.budget.MINUTE``)."""
    if slots:
        await conn.execute(text(
            "UPDATE do_requests SET at = clock_timestamp() "
            "WHERE id = ANY(CAST(:ids AS bigint[]))"), {"ids": list(slots)})


async def _pg_take(conn: AsyncConnection, spenders: list[str]) -> list[int]:
    slots: list[int] = []
    if spenders:
        rows = await conn.execute(text(
            "INSERT INTO do_requests (at, spender) "
            "SELECT clock_timestamp(), s FROM unnest(CAST(:spenders AS text[])) "
            "WITH ORDINALITY AS u(s, n) ORDER BY n RETURNING id"),
            {"spenders": spenders})
        # Ids come from one sequence in the INSERT's order: sorted, they match spenders.
        slots = sorted(int(r[0]) for r in rows)
    if random.random() < 0.01:  # noqa: S311 - housekeeping now and then
        await conn.execute(text(
            "DELETE FROM do_requests WHERE at < clock_timestamp() - make_interval(secs => :h)"),
            {"h": HOUR})
    return slots


class DatabaseWindow:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    async def take(self, decide: Callable[[Usage], list[str]],
                   answered: Sequence[int] = ()) -> tuple[Usage, list[int]]:
        async with self._engine.connect() as conn:
            if self._postgres:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
                await _pg_answered(conn, answered)
                usage = await _pg_usage(conn)
                slots = await _pg_take(conn, decide(usage))
            else:
                # Take SQLite's write lock before counting: count-then-insert stays atomic
                # between processes (a deferred transaction would count a stale snapshot).
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
                now = datetime.now(UTC)
                if answered:
                    await conn.execute(update(DoRequestRow).where(
                        DoRequestRow.id.in_(list(answered))).values(at=now))
                usage = await self._sqlite_usage(conn)
                spenders = decide(usage)
                slots = []
                if spenders:
                    rows = await conn.execute(
                        insert(DoRequestRow).returning(DoRequestRow.id,
                                                       sort_by_parameter_order=True),
                        [{"at": now, "spender": s} for s in spenders])
                    slots = [int(r[0]) for r in rows]
                if random.random() < 0.01:  # noqa: S311 - housekeeping now and then
                    await conn.execute(delete(DoRequestRow).where(
                        DoRequestRow.at < now - timedelta(seconds=HOUR)))
            await conn.commit()
            return usage, slots

    async def ages(self) -> list[float]:
        """Seconds since each request of the last hour, youngest first (database time on
        PostgreSQL)."""
        async with self._engine.connect() as conn:
            if self._postgres:
                return [float(r[0]) for r in await conn.execute(_PG_AGES, {"hour": HOUR})]
            now = datetime.now(UTC)
            rows = await conn.execute(
                select(DoRequestRow.at).where(DoRequestRow.at > now - timedelta(seconds=HOUR))
                .order_by(DoRequestRow.at.desc()))
            return [(now - _aware(r[0])).total_seconds() for r in rows]

    @staticmethod
    async def _sqlite_usage(conn: AsyncConnection) -> Usage:
        now = datetime.now(UTC)
        in_minute = DoRequestRow.at > now - timedelta(seconds=MINUTE)
        in_hour = DoRequestRow.at > now - timedelta(seconds=HOUR)
        minute, oldest_minute = (await conn.execute(
            select(func.count(), func.min(DoRequestRow.at)).where(in_minute))).one()
        hour, oldest_hour = (await conn.execute(
            select(func.count(), func.min(DoRequestRow.at)).where(in_hour))).one()

        def age(at: object) -> float:
            return 0.0 if at is None else (now - _aware(at)).total_seconds()

        return Usage(int(minute), int(hour), age(oldest_minute), age(oldest_hour))


class DatabaseBoard:
    """The fair queue of every replica, in PostgreSQL (see the module's docstring)."""

    shared = True

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("the shared queue needs PostgreSQL; one SQLite process "
                             "keeps its queue in memory (LocalBoard)")
        self._engine = engine
        self._window = DatabaseWindow(engine)

    async def settle(self, work: Round) -> Settled:
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK})
            await conn.execute(text(
                "DELETE FROM budget_tickets WHERE expires_at < clock_timestamp()"))
            await self._apply(conn, work)
            tickets = await self._enqueue(conn, work)
            await _pg_answered(conn, work.answered)
            usage = await _pg_usage(conn)
            rows = (await conn.execute(text(
                "SELECT id, lane, spender, owner, owner IS NOT NULL "
                "OR due_at <= clock_timestamp() + make_interval(secs => :early) "
                "FROM budget_tickets ORDER BY lane, spent, id"), {"early": HOLD_EARLY})).all()
            queue = [Place(int(r[0]), Lane(int(r[1])), str(r[2]), r[3] == work.owner,
                           bool(r[4])) for r in rows]
            granted, ahead = plan(queue, usage, work.limits, work.held)
            slots = await _pg_take(conn, [p.spender for p in granted])
            if granted:
                await conn.execute(text(
                    "DELETE FROM budget_tickets WHERE id = ANY(CAST(:ids AS bigint[]))"),
                    {"ids": [p.id for p in granted]})
            await conn.commit()
        after = Usage(usage.minute + len(granted), usage.hour + len(granted),
                      usage.minute_oldest, usage.hour_oldest)
        depth = dict.fromkeys(Lane, 0)
        for place in queue:
            depth[place.lane] += 1
        for place in granted:
            depth[place.lane] -= 1
        return Settled(tickets, [p.id for p in granted],
                       dict(zip([p.id for p in granted], slots, strict=True)), ahead, usage,
                       after.wait(work.limits(Lane.CLIENT)), depth)

    async def _apply(self, conn: AsyncConnection, work: Round) -> None:
        if work.drop:
            await conn.execute(text(
                "DELETE FROM budget_tickets WHERE owner = :me "
                "AND id = ANY(CAST(:ids AS bigint[]))"), {"me": work.owner, "ids": work.drop})
        for reserve in work.reserve:
            # At most MAX_RESERVATIONS per credential: past them a refusal leaves nothing.
            await conn.execute(text(
                "UPDATE budget_tickets SET owner = NULL, "
                "due_at = clock_timestamp() + make_interval(secs => :due), "
                "expires_at = clock_timestamp() + make_interval(secs => :until) "
                "WHERE id = :id AND owner = :me AND ("
                "SELECT count(*) FROM budget_tickets WHERE owner IS NULL "
                "AND spender = :spender) < :most"),
                {"due": reserve.due_in, "until": reserve.due_in + GRACE, "id": reserve.ticket,
                 "me": work.owner, "spender": reserve.spender, "most": MAX_RESERVATIONS})
        if work.reserve:
            await conn.execute(text(
                "DELETE FROM budget_tickets WHERE owner = :me "
                "AND id = ANY(CAST(:ids AS bigint[]))"),
                {"me": work.owner, "ids": [r.ticket for r in work.reserve]})
        await conn.execute(text(
            "UPDATE budget_tickets SET "
            "expires_at = clock_timestamp() + make_interval(secs => :ttl) WHERE owner = :me"),
            {"me": work.owner, "ttl": TICKET_TTL})

    async def _enqueue(self, conn: AsyncConnection, work: Round) -> dict[int, int]:
        """Tickets for this round's newcomers: a credential's reservation in the lane when
        it has one (its place in the queue, kept since it was refused), else a new one."""
        tickets: dict[int, int] = {}
        if not work.new:
            return tickets
        spenders = sorted({w.spender for w in work.new if w.spender})
        reserved: dict[tuple[str, int], list[int]] = {}
        if spenders:
            rows = await conn.execute(text(
                "SELECT id, spender, lane FROM budget_tickets WHERE owner IS NULL "
                "AND spender = ANY(CAST(:s AS text[])) ORDER BY lane, spent, id"),
                {"s": spenders})
            for ticket_id, spender, lane in rows:
                reserved.setdefault((spender, int(lane)), []).append(int(ticket_id))
        fresh: list[Any] = []
        claimed: list[int] = []
        for want in work.new:
            mine = reserved.get((want.spender, int(want.lane)))
            if mine:
                tickets[want.ref] = mine.pop(0)
                claimed.append(tickets[want.ref])
            else:
                fresh.append(want)
        if claimed:
            await conn.execute(text(
                "UPDATE budget_tickets SET owner = :me, due_at = NULL, "
                "expires_at = clock_timestamp() + make_interval(secs => :ttl) "
                "WHERE id = ANY(CAST(:ids AS bigint[]))"),
                {"me": work.owner, "ttl": TICKET_TTL, "ids": claimed})
        if fresh:
            rows = await conn.execute(text(
                "INSERT INTO budget_tickets (lane, spent, spender, owner, expires_at) "
                "SELECT w.lane, (SELECT count(*) FROM do_requests d WHERE d.spender = w.s "
                "AND w.s <> '' AND d.at > clock_timestamp() - make_interval(secs => :hour)), "
                "w.s, :me, clock_timestamp() + make_interval(secs => :ttl) "
                "FROM unnest(CAST(:lanes AS int[]), CAST(:spenders AS text[]), "
                "CAST(:refs AS bigint[])) AS w(lane, s, ref) ORDER BY w.ref "
                "RETURNING id"),
                {"lanes": [int(w.lane) for w in fresh], "spenders": [w.spender for w in fresh],
                 "refs": [w.ref for w in fresh], "me": work.owner, "ttl": TICKET_TTL,
                 "hour": HOUR})
            # Ids come from one sequence in the INSERT's order (ORDER BY ref): sorted ids
            # match the newcomers in order.
            for want, ticket_id in zip(fresh, sorted(int(r[0]) for r in rows), strict=True):
                tickets[want.ref] = ticket_id
        return tickets

    async def ages(self) -> list[float]:
        return await self._window.ages()

    async def depth(self) -> dict[Lane, int]:
        depth = dict.fromkeys(Lane, 0)
        async with self._engine.connect() as conn:
            for lane, count in await conn.execute(text(
                    "SELECT lane, count(*) FROM budget_tickets "
                    "WHERE expires_at >= clock_timestamp() GROUP BY lane")):
                depth[Lane(int(lane))] = int(count)
        return depth


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

