"""Abuse limits (failed authentications per address, updates per credential, new values
per credential an hour, registrations per address) over the ``limits`` library's moving windows.

Counters live in this process by default (``memory://``): each replica counts alone,
which still bounds abuse per replica. ``LIMITS_STORAGE=async+redis://host:6379`` shares
them across replicas.
"""

from __future__ import annotations

import time

from limits import (
    RateLimitItem,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    WindowStats,
    strategies,
)
from limits.aio import strategies as aio_strategies
from limits.storage import MemoryStorage, storage_from_string

from app.pacing.terms import Limit


class _InProcess:
    """The limiter over ``limits``' synchronous memory storage, behind the async API.

    Its async twin starts a task on every hit that hands each key's expiry to a worker
    thread: several thread hand-offs per request, for work that takes microseconds in
    this thread. This one never waits (its locks are held for a list operation)."""

    def __init__(self) -> None:
        self._sync = strategies.MovingWindowRateLimiter(MemoryStorage())

    async def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        return self._sync.hit(item, *identifiers)

    async def test(self, item: RateLimitItem, *identifiers: str) -> bool:
        return self._sync.test(item, *identifiers)

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str
                               ) -> WindowStats:
        return self._sync.get_window_stats(item, *identifiers)


class Throttle:
    def __init__(self, *, storage: str, auth_failures_per_minute: int, updates_per_minute: int,
                 registrations_per_hour: int, new_values_per_hour: int = 30) -> None:
        self._limiter: _InProcess | aio_strategies.MovingWindowRateLimiter
        if storage.removeprefix("async+").startswith("memory://"):
            self._limiter = _InProcess()
        else:
            # The async strategies need the async flavour of a storage ("async+redis://…").
            uri = storage if storage.startswith("async+") else f"async+{storage}"
            self._limiter = aio_strategies.MovingWindowRateLimiter(storage_from_string(uri))
        self._items: dict[Limit, RateLimitItem] = {
            Limit.AUTH_FAILURES: RateLimitItemPerMinute(auth_failures_per_minute),
            Limit.UPDATES: RateLimitItemPerMinute(updates_per_minute),
            Limit.REGISTRATIONS: RateLimitItemPerHour(registrations_per_hour),
            Limit.NEW_VALUES: RateLimitItemPerHour(new_values_per_hour),
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
