"""Frugal when idle: an hour of reconcile passes over live values in several zones, with
no client asking, spends at most 2 % of the hourly DigitalOcean budget.

The reconciler runs every RECONCILE_INTERVAL (300 s) on a clock the test moves; every
DigitalOcean request of that hour is counted from the stand-in's log. Deletions of values
whose RECORD_LIFETIME ran out are the deferred housekeeping of earlier client work, not
idle cost: they are counted apart (and limited to what there was to delete).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from app.config import Settings
from app.core.reconcile import Reconciler
from tests.conftest import Harness, challenge_value

HOUR = 3600


async def test_an_idle_hour_costs_at_most_two_percent_of_the_hourly_budget(
    harness: Harness,
) -> None:
    defaults = Settings()
    h = harness
    h.do.add_zone("example.net")
    accounts: list[dict[str, Any]] = [
        await h.create_account(domain="www.example.com"),
        await h.create_account(domain="mail.example.com"),
        await h.create_account(domain="www.example.net"),
        await h.create_account(domain="shop.customer.test", delegated=True),  # example.org
    ]
    for n, account in enumerate(accounts):
        await h.update(account, challenge_value(2 * n))
        await h.update(account, challenge_value(2 * n + 1))
    zones = {r.zone for a in accounts for r in h.do.find_records(a["fulldomain"], "TXT")}
    assert zones == {"example.com", "example.net", "example.org"}

    started = datetime.now(UTC)
    now = [started]
    s = h.services
    reconciler = Reconciler(s.store, s.provider, s.challenges, lifetime=defaults.record_lifetime,
                            ttl=defaults.txt_ttl, clock=lambda: now[0])
    await reconciler.run_once()  # the start-up pass: lists each zone once
    h.do.clear_requests()
    passes = HOUR // defaults.reconcile_interval
    for n in range(1, passes + 1):
        now[0] = started + timedelta(seconds=n * defaults.reconcile_interval)
        await reconciler.run_once()
    calls = [(e.method, e.path) for e in h.do.requests() if e.path.startswith("/v2/")]
    deletions = [c for c in calls if c[0] == "DELETE"]
    idle = [c for c in calls if c[0] != "DELETE"]
    budget = defaults.do_rate_per_hour
    # Listings: each zone once more when the hour is up (a value lives RECORD_LIFETIME:
    # looking more often for one deleted behind our back buys nothing); nothing else.
    assert all(method == "GET" for method, _ in idle)
    assert len(idle) <= 0.02 * budget, idle
    assert len(idle) <= len(zones)
    # The values' lifetime ran out within the hour: their deletion is housekeeping.
    assert len(deletions) <= 2 * len(accounts)
    print(f"\nidle hour: {len(idle)} listing requests = {len(idle) / budget:.2%} of "
          f"{budget}/h; deferred deletions of expired values: {len(deletions)}")
