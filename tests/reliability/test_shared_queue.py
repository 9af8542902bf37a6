"""Two app instances on one PostgreSQL database wait in one fair queue for DigitalOcean:
a credential that spent nothing, on replica B, is served before a heavy credential's
request that queued earlier on replica A."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import Harness, challenge_value

SETTINGS = {"do_rate_per_minute": 2, "do_max_wait": 120, "wait_for_dns": 0,
            "new_values_per_hour": 100, "updates_per_minute": 1000}


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while True:
            result = condition()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.02)


async def age_oldest_slot(h: Harness) -> None:
    """One slot of the minute frees, as if its minute had passed (database time)."""
    async with h.services.engine.begin() as conn:
        await conn.execute(text(
            "UPDATE do_requests SET at = at - interval '62 seconds' WHERE id = ("
            "SELECT min(id) FROM do_requests WHERE at > clock_timestamp() - interval '61 s')"))


async def queued(h: Harness, n: int) -> bool:
    async with h.services.engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM budget_tickets"))
                    ).scalar_one()) == n


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_light_credential_on_replica_b_goes_before_a_heavy_one_on_replica_a(
        harness_factory: Any) -> None:
    async with harness_factory(**SETTINGS) as a, harness_factory(**SETTINGS) as b:
        heavy = await a.create_account(domain="heavy.example.com")
        light = await b.create_account(domain="light.example.com")
        async with a.services.engine.begin() as conn:  # setting up spent nobody's budget
            await conn.execute(text("DELETE FROM do_requests"))
        for n in range(2):  # heavy spends the whole minute, through replica A
            assert (await a.update(heavy, challenge_value(n))).status_code == 200
        a.do.clear_requests()
        heavy_third = asyncio.create_task(a.update(heavy, challenge_value(2), timeout=60))
        await until(lambda: queued(a, 1))
        light_first = asyncio.create_task(b.update(light, challenge_value(3), timeout=60))
        await until(lambda: queued(a, 2))

        await age_oldest_slot(a)
        assert (await asyncio.wait_for(light_first, 10)).status_code == 200
        await asyncio.sleep(1.0)  # both replicas have looked at the queue several times
        assert not heavy_third.done()
        await age_oldest_slot(a)
        assert (await asyncio.wait_for(heavy_third, 10)).status_code == 200

        # At the stand-in: light's create first, then heavy's in-place overwrite.
        writes = [e.method for e in a.do.requests() if e.method in ("POST", "PUT")]
        assert writes == ["POST", "PUT"]
        assert a.services.budget.taken >= 1 and b.services.budget.taken >= 1
