"""Abuse limits (failed authentications per address, updates per credential, new values
per credential an hour, registrations per address) as moving windows: the ``limits``
library's rate items, and its storages for shared counters.

Counters live in this process by default (``memory://``, kept by ``_InProcess``): each
replica counts alone, which still bounds abuse per replica.
``LIMITS_STORAGE=async+redis://host:6379`` shares them across replicas.
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import Callable

from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute, WindowStats
from limits.aio import strategies as aio_strategies
from limits.storage import storage_from_string

from app.pacing.terms import Limit


class _InProcess:
    """A moving window per key in this process's memory, behind the async limiter's API.

    Not ``limits``' own memory storage: both of its flavours expire entries from a
    helper, the synchronous one in a new thread every 10 ms of activity (the event loop
    waits for each thread to start: 0.8 ms per request measured in ``bench.profile``'s
    setting), the asynchronous one by handing every key to a worker thread on every hit.
    Here a key's expired entries go when the key is next used, and keys nobody used for
    a whole window are swept now and then, so memory stays bounded by recent traffic."""

    SWEEP_EVERY = 1024  # hits between sweeps of idle keys

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Windows are keyed by (id(item), identifiers): ``item.key_for`` builds a string
        # from five parts on every call, and an item hashes and compares in Python. Each
        # item is kept here with its window's length, so its id stays its own.
        self._events: dict[tuple[int, tuple[str, ...]], deque[float]] = {}
        self._items: dict[int, tuple[RateLimitItem, int]] = {}
        self._hits = 0

    def _window(self, item: RateLimitItem, identifiers: tuple[str, ...]
                ) -> tuple[deque[float], float]:
        known = self._items.get(id(item))
        if known is None:
            known = self._items[id(item)] = (item, item.get_expiry())
        key = (id(item), identifiers)
        now = self._clock()
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = deque()
        horizon = now - known[1]
        while events and events[0] <= horizon:
            events.popleft()
        return events, now

    async def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        self._hits += 1
        if self._hits % self.SWEEP_EVERY == 0:
            self._sweep()
        events, now = self._window(item, identifiers)
        if len(events) >= item.amount:
            return False
        events.append(now)
        return True

    async def test(self, item: RateLimitItem, *identifiers: str) -> bool:
        events, _ = self._window(item, identifiers)
        return len(events) < item.amount

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str
                               ) -> WindowStats:
        events, now = self._window(item, identifiers)
        reset_in = events[0] + item.get_expiry() - now if events else 0.0
        return WindowStats(time.time() + reset_in, max(0, item.amount - len(events)))

    def _sweep(self) -> None:
        """Forget keys with nothing left in the longest window (an hour)."""
        horizon = self._clock() - 3600
        for key in [k for k, v in self._events.items() if not v or v[-1] <= horizon]:
            del self._events[key]


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

    async def close(self) -> None:
        """At shutdown: close a shared storage's connections (Redis); memory has none.
        ``limits`` has no close of its own, so this reaches its client's pool."""
        storage = getattr(self._limiter, "storage", None)
        client = getattr(getattr(storage, "bridge", None), "storage", None)
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            result = pool.disconnect()
            if inspect.isawaitable(result):
                await result

    async def _retry_after(self, item: RateLimitItem, limit: Limit, key: str) -> float:
        stats = await self._limiter.get_window_stats(item, limit.value, key)
        return max(1.0, stats.reset_time - time.time())
