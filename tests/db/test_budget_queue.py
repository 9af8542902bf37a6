"""The deployment's one fair queue for DigitalOcean slots, in PostgreSQL: replicas (here two
budgets, each with its own engine, owner and pump, as two processes have) wait in one
queue, a refused client keeps its place on any replica, a killed replica's tickets
vanish, and the window is never exceeded while slots are taken a batch per round."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.budget import DatabaseBoard
from app.db.engine import create_engine
from app.errors import BudgetExhausted
from app.pacing.budget import RateBudget
from app.pacing.terms import Lane, spending
from app.providers.digitalocean import DigitalOceanClient

pytestmark = pytest.mark.postgres


@asynccontextmanager
async def replicas(url: str, count: int, **budget: Any
                   ) -> AsyncIterator[tuple[AsyncEngine, list[RateBudget]]]:
    engines = [create_engine(url) for _ in range(count + 1)]
    budgets = [RateBudget(board=DatabaseBoard(e), **budget) for e in engines[1:]]
    try:
        yield engines[0], budgets
    finally:
        for b in budgets:
            await b.close()
        for e in engines:
            await e.dispose()


async def age_oldest_slot(engine: AsyncEngine) -> None:
    """One slot of the minute frees, as if its minute had passed (database time)."""
    async with engine.begin() as conn:
        await conn.execute(text(
            "UPDATE do_requests SET at = at - interval '62 seconds' WHERE id = ("
            "SELECT min(id) FROM do_requests WHERE at > clock_timestamp() - interval '61 s')"))


async def tickets(engine: AsyncEngine) -> list[tuple[str, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT spender, owner FROM budget_tickets ORDER BY lane, spent, id"))
        return [(r[0], r[1]) for r in rows]


async def until(condition: Callable[[], Any], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():  # noqa: ASYNC110 - the condition is in the database
            await asyncio.sleep(0.02)


async def take(budget: RateBudget, key: str, max_wait: float) -> None:
    with spending(Lane.CLIENT, key):
        await budget.acquire(max_wait)


async def test_a_light_credential_on_one_replica_goes_before_a_heavy_one_on_another(
        postgres_url: str) -> None:
    async with replicas(postgres_url, 2, per_minute=2, per_hour=100) as (db, (a, b)):
        for _ in range(2):  # heavy spends the whole minute on replica A
            await take(a, "heavy", 0)
        heavy = [asyncio.create_task(take(a, "heavy", 200)) for _ in range(2)]
        await until(lambda: _count(db, 2))
        light = asyncio.create_task(take(b, "light", 200))
        await until(lambda: _count(db, 3))
        # One queue for both replicas, in fair order: the credential that spent nothing
        # first, though it came last and waits on the other replica.
        assert [s for s, _ in await tickets(db)] == ["light", "heavy", "heavy"]
        await age_oldest_slot(db)
        await asyncio.wait_for(light, 10)
        await asyncio.sleep(1.0)  # both pumps have looked several times meanwhile
        assert not any(t.done() for t in heavy)
        await age_oldest_slot(db)
        await age_oldest_slot(db)
        await asyncio.wait_for(asyncio.gather(*heavy), 10)
        assert a.taken == 4 and b.taken == 1
        assert await tickets(db) == []


async def _count(engine: AsyncEngine, n: int) -> bool:
    return len(await tickets(engine)) == n


async def test_a_refused_client_keeps_its_place_on_any_replica(postgres_url: str) -> None:
    async with replicas(postgres_url, 2, per_minute=1, per_hour=100) as (db, (a, b)):
        await take(a, "first", 0)
        with pytest.raises(BudgetExhausted) as refused:
            await take(a, "returning", 5)
        # Told when its turn comes; its ticket stays as a reservation, nobody's waiting.
        assert 55 <= (refused.value.retry_after or 0) <= 62
        await until(lambda: _reservations(db, 1))
        newcomer = asyncio.create_task(take(b, "newcomer", 200))
        await until(lambda: _count(db, 2))
        # Back early, on the other replica: it takes its old place, ahead of the newcomer.
        back = asyncio.create_task(take(b, "returning", 200))
        await until(lambda: _reservations(db, 0))
        assert [s for s, _ in await tickets(db)] == ["returning", "newcomer"]
        await age_oldest_slot(db)
        await asyncio.wait_for(back, 10)
        assert not newcomer.done()
        await age_oldest_slot(db)
        await asyncio.wait_for(newcomer, 10)


async def _reservations(engine: AsyncEngine, n: int) -> bool:
    return sum(1 for _, owner in await tickets(engine) if owner is None) == n


async def test_a_killed_replicas_tickets_vanish(postgres_url: str) -> None:
    async with replicas(postgres_url, 1, per_minute=1, per_hour=100) as (db, (b,)):
        await take(b, "first", 0)
        # What a replica killed while its request waited leaves behind: its ticket, ahead
        # of everyone, kept alive by nobody (a live pump renews its own every few seconds).
        async with db.begin() as conn:
            await conn.execute(text(
                "INSERT INTO budget_tickets (lane, spent, spender, owner, expires_at) "
                "VALUES (1, 0, 'dead', 'killed-replica', clock_timestamp() + interval '10 s')"))
        alive = asyncio.create_task(take(b, "alive", 200))
        await until(lambda: _count(db, 2))
        async with db.connect() as conn:
            lease = (await conn.execute(text(
                "SELECT EXTRACT(EPOCH FROM expires_at - clock_timestamp()) "
                "FROM budget_tickets WHERE spender = 'alive'"))).scalar_one()
        assert 0 < lease <= 10.5
        await age_oldest_slot(db)
        await asyncio.sleep(1.0)
        assert not alive.done()  # the dead ticket holds its place while it may be alive
        async with db.begin() as conn:  # ... until it expires (rewound here, not waited)
            await conn.execute(text(
                "UPDATE budget_tickets SET expires_at = clock_timestamp() - interval '1 s' "
                "WHERE spender = 'dead'"))
        await asyncio.wait_for(alive, 10)
        assert await tickets(db) == []


async def test_two_replicas_never_exceed_the_window_and_share_rounds(postgres_url: str
                                                                     ) -> None:
    """80 creates at once over two replicas, a window of 30: DigitalOcean (respx) sees 30,
    the other 50 are refused with a Retry-After, and the slots are taken a batch per round
    (budget transactions per call, printed for the README)."""
    async with replicas(postgres_url, 2, per_minute=30, per_hour=1000) as (db, budgets):
        with respx.mock(assert_all_called=False) as do:
            created = do.post("https://do.test/v2/domains/example.com/records").mock(
                return_value=httpx.Response(201, json={"domain_record": {
                    "id": 1, "type": "TXT", "name": "_acme-challenge", "data": "v",
                    "ttl": 30}}))
            async with httpx.AsyncClient() as http:
                clients = [DigitalOceanClient(http=http, token="t", base_url="https://do.test",
                                              budget=budget, max_wait=1.0)
                           for budget in budgets]

                async def create(n: int) -> str:
                    client = clients[n % 2]
                    with spending(Lane.CLIENT, f"c{n}"):
                        try:
                            await client.create_txt("example.com",
                                                    "_acme-challenge.example.com", "v", 30)
                        except BudgetExhausted as exc:
                            assert exc.retry_after is not None and exc.retry_after >= 50
                            return "refused"
                    return "created"

                outcomes = await asyncio.gather(*(create(n) for n in range(80)))
        assert created.call_count == 30 == outcomes.count("created")
        async with db.connect() as conn:
            in_window = (await conn.execute(text(
                "SELECT count(*) FROM do_requests WHERE at > clock_timestamp() - interval '61 s'"
            ))).scalar_one()
        assert in_window == 30
    rounds = sum(b.rounds for b in budgets)
    calls = sum(b.taken for b in budgets)
    print(f"\nbudget rounds (transactions) {rounds} for {calls} calls and 50 refusals")
    # One transaction per call was the rule before: now a round serves every request
    # waiting on its replica.
    assert rounds < calls
