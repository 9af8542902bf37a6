"""Spending DigitalOcean's rate budget like money.

The account has 250 requests a minute and 5,000 an hour for *everything*. Every
request to DigitalOcean first takes a slot here; a deployment of several replicas
shares one window through the database (``SharedWindow``), one process keeps it in
memory. Waiters are served first come, first served; one that cannot get a slot
within its bounded wait fails at once with a ``retry_after`` hint, so the client
hears "503, come back in N seconds" instead of DigitalOcean ever saying 429.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from app.core.ports import ProviderError

# Windows a little longer than DigitalOcean's: a slot is taken a moment before the
# request arrives there, and arrival times bunch up more than taking times.
MINUTE = 61.0
HOUR = 3601.0


class BudgetExhausted(ProviderError):
    """No request slot within the allowed wait; nothing was sent."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("DigitalOcean request budget exhausted for now",
                         retry_after=max(1.0, retry_after))


class SharedWindow(Protocol):
    """A sliding window kept where every replica sees it."""

    async def try_take(self, per_minute: int, per_hour: int) -> float:
        """Take a slot and return 0, or return the seconds until one frees up."""
        ...


class LocalWindow:
    """The window in this process's memory (one process, e.g. SQLite deployments)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._taken: deque[float] = deque()

    async def try_take(self, per_minute: int, per_hour: int) -> float:
        now = self._clock()
        while self._taken and self._taken[0] <= now - HOUR:
            self._taken.popleft()
        in_minute = [t for t in self._taken if t > now - MINUTE]
        waits = []
        if len(in_minute) >= per_minute:
            waits.append(in_minute[len(in_minute) - per_minute] + MINUTE - now)
        if len(self._taken) >= per_hour:
            waits.append(self._taken[len(self._taken) - per_hour] + HOUR - now)
        if waits:
            return max(max(waits), 0.001)
        self._taken.append(now)
        return 0.0


class RateBudget:
    def __init__(
        self,
        *,
        per_minute: int,
        per_hour: int,
        window: SharedWindow | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.per_minute = per_minute
        self.per_hour = per_hour
        self._window = window or LocalWindow(clock)
        self._clock = clock
        self._sleep = sleep
        self._fifo = asyncio.Lock()  # asyncio.Lock wakes waiters in arrival order
        self._waiting = 0
        self._blocked_until = 0.0  # DigitalOcean said the token's budget is spent
        self._recent: deque[float] = deque()
        self.taken = 0

    async def acquire(self, max_wait: float) -> None:
        """Take one request slot, waiting at most ``max_wait`` seconds, or BudgetExhausted."""
        deadline = self._clock() + max_wait
        self._waiting += 1
        try:
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can lose a lock it acquired
                # just as the time ran out.
                async with asyncio.timeout(max(max_wait, 0.001)):
                    await self._fifo.acquire()
            except TimeoutError:
                raise BudgetExhausted(self._estimate()) from None
            try:
                while True:
                    wait = max(self._blocked_until - self._clock(), 0.0)
                    if wait == 0.0:
                        wait = await self._window.try_take(self.per_minute, self.per_hour)
                        if wait == 0.0:
                            self.taken += 1
                            self._recent.append(self._clock())
                            return
                    if self._clock() + wait > deadline:
                        raise BudgetExhausted(wait + self._estimate())
                    await self._sleep(wait)
            finally:
                self._fifo.release()
        finally:
            self._waiting -= 1

    def in_last_minute(self) -> int:
        """Slots this process took in the last minute (for the metrics)."""
        now = self._clock()
        while self._recent and self._recent[0] <= now - MINUTE:
            self._recent.popleft()
        return len(self._recent)

    def observe(self, remaining: str | None, reset: str | None) -> None:
        """DigitalOcean's own count: if the token has nothing left (other users of the
        token spend it too), hold every request until its reset time."""
        try:
            left = int(remaining) if remaining is not None else None
            reset_at = float(reset) if reset is not None else None
        except ValueError:
            return
        if left is not None and left <= 0 and reset_at is not None:
            self._blocked_until = self._clock() + max(0.0, reset_at - time.time())

    def _estimate(self) -> float:
        """Seconds until the waiters ahead are likely served: a Retry-After hint."""
        return math.ceil(self._waiting * MINUTE / self.per_minute)
