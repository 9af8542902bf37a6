"""No tenant starves another: the run that once did, replayed on the default settings.

Two credentials write new values as fast as they can (past their per-credential limits:
60 requests a minute, 30 new values an hour); a third renews a certificate (apex + wildcard: two values at
once) now and then. Once, the greedy pair spent the whole DigitalOcean budget and the
third got ``503`` with ``Retry-After: 52``, then 47, 41, 36. Now the third is served every
time, quickly, and the greedy pair hear ``429`` with a ``Retry-After`` that says when
their hourly quota of new values really frees up.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import httpx
import pytest

from app.config import Settings
from tests.conftest import challenge_value

RUN_SECONDS = 20.0
RENEWALS = 6


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_greedy_credentials_do_not_starve_a_renewal(harness_factory: Any) -> None:
    defaults = Settings()
    async with harness_factory() as h:
        h.do.update_faults(latency_ms=5)
        greedy = [await h.create_account(domain=f"greedy{n}.example.com") for n in range(2)]
        modest = await h.create_account(domain="modest.example.com")
        values = (challenge_value(n) for n in itertools.count(100))
        started = time.monotonic()
        greedy_seen: list[tuple[float, httpx.Response]] = []
        renewal_latency: list[float] = []
        renewal_status: list[int] = []

        async def hog(account: dict[str, Any]) -> None:
            # As fast as it can, every request a new value, Retry-After or not (a hostile
            # tenant does not honour it).
            while time.monotonic() - started < RUN_SECONDS:
                sent = time.monotonic()
                greedy_seen.append((sent - started, await h.update(account, next(values))))
                await asyncio.sleep(0.02)

        async def renew() -> None:
            for _ in range(RENEWALS):
                await asyncio.sleep(RUN_SECONDS / (RENEWALS + 1))
                pair = [next(values), next(values)]

                async def put(value: str) -> None:
                    sent = time.monotonic()
                    response = await h.update(modest, value)
                    renewal_latency.append(time.monotonic() - sent)
                    renewal_status.append(response.status_code)

                await asyncio.gather(*(put(v) for v in pair))

        await asyncio.gather(renew(), *(hog(a) for a in greedy))

    assert renewal_status == [200] * (2 * RENEWALS), renewal_status
    renewal_latency.sort()
    p99 = renewal_latency[min(len(renewal_latency) - 1, int(0.99 * len(renewal_latency)))]
    assert p99 < 5.0, renewal_latency

    statuses = [r.status_code for _, r in greedy_seen]
    assert set(statuses) <= {200, 429}, set(statuses)
    refused = [(at, r) for at, r in greedy_seen if r.status_code == 429]
    assert refused, "the greedy pair were never refused"
    # Each greedy credential had its hourly quota of new values, no more.
    assert statuses.count(200) == 2 * defaults.new_values_per_hour
    kinds = set()
    for at, response in refused:
        assert response.json() == {"error": "too_many_requests"}
        retry_after = int(response.headers["retry-after"])
        # Truthful, not a constant: either the per-minute request limit (its oldest request,
        # sent right at the start, leaves the minute then) or the hourly quota of new values
        # (its oldest, also from the start, leaves the hour then).
        if retry_after <= 61:
            kinds.add("minute")
            assert 60 - at - 2 <= retry_after <= 61, (at, retry_after)
        else:
            kinds.add("hour")
            assert 3600 - at - 2 <= retry_after <= 3601, (at, retry_after)
    assert kinds == {"minute", "hour"}
