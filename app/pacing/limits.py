"""Abuse limits (failed authentications per address, updates per credential,
registrations per address) over the ``limits`` library's moving windows.

Counters live in this process by default (``memory://``): each replica counts alone,
which still bounds abuse per replica. ``LIMITS_STORAGE=async+redis://host:6379`` shares
them across replicas.
"""

from __future__ import annotations

import time

from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from app.core.ports import Limit


class Throttle:
    def __init__(self, *, storage: str, auth_failures_per_minute: int, updates_per_minute: int,
                 registrations_per_hour: int) -> None:
        # The async strategies need the async flavour of a storage ("async+redis://…").
        uri = storage if storage.startswith("async+") else f"async+{storage}"
        self._limiter = MovingWindowRateLimiter(storage_from_string(uri))
        self._items: dict[Limit, RateLimitItem] = {
            Limit.AUTH_FAILURES: RateLimitItemPerMinute(auth_failures_per_minute),
            Limit.UPDATES: RateLimitItemPerMinute(updates_per_minute),
            Limit.REGISTRATIONS: RateLimitItemPerHour(registrations_per_hour),
        }

    async def blocked(self, limit: Limit, key: str) -> float | None:
        """Seconds until ``key`` may go again, or None; counts nothing."""
        item = self._items[limit]
        if await self._limiter.test(item, limit.value, key):
            return None
        return await self._retry_after(item, limit, key)

    async def take(self, limit: Limit, key: str) -> float | None:
        """Count one for ``key``; None if allowed, else seconds until it would be."""
        item = self._items[limit]
        if await self._limiter.hit(item, limit.value, key):
            return None
        return await self._retry_after(item, limit, key)

    async def _retry_after(self, item: RateLimitItem, limit: Limit, key: str) -> float:
        stats = await self._limiter.get_window_stats(item, limit.value, key)
        return max(1.0, stats.reset_time - time.time())
