"""Spending DigitalOcean's rate budget like money.

The account has 250 requests a minute and 5,000 an hour for *everything*. Every
request to DigitalOcean first takes a slot here; a deployment of several replicas
shares one window through the database (``app.db.budget``), one process keeps it in
memory.

Who goes next is a fair queue, not first come first served: lanes first (revocations,
then clients' writes, then housekeeping: see ``app.pacing.terms``), and within a lane
the credential that spent least in the last hour before one that spent much, arrival
order breaking ties. Housekeeping takes a slot only while a fifth of the window is free
(``SPARE``): it never delays a client.

A request that cannot have its turn within its bounded wait is refused at once with the
estimated wait (from the window's own timestamps and the queue ahead) as ``retry_after``,
so the client hears "503, come back in N seconds" instead of DigitalOcean ever saying
429, and N is when its turn would have come, not a constant.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.errors import ProviderError
from app.pacing.terms import Lane, current_spender

# Windows a little longer than DigitalOcean's: a slot is taken a moment before the
# request arrives there, and arrival times bunch up more than taking times.
MINUTE = 61.0
HOUR = 3601.0
# The share of the window housekeeping leaves alone: it spends only what is spare.
SPARE = 0.2


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

    async def ages(self) -> list[float]:
        """Seconds since each slot of the last hour was taken, youngest first."""
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

    async def ages(self) -> list[float]:
        now = self._clock()
        return [now - t for t in reversed(self._taken) if t > now - HOUR]


def time_until_slot(ages: Sequence[float], ahead: int, per_minute: int, per_hour: int
                    ) -> float:
    """Seconds until the slot of the request with ``ahead`` requests before it frees up,
    if every one of them takes the first slot it can: each taken slot frees again a
    MINUTE (and an HOUR) after it was taken."""
    minute = [MINUTE - a for a in ages if a < MINUTE]  # when each frees, from now
    hour = [HOUR - a for a in ages if a < HOUR]
    heapq.heapify(minute)
    heapq.heapify(hour)
    at = 0.0
    for _ in range(ahead + 1):
        while True:
            while minute and minute[0] <= at:
                heapq.heappop(minute)
            while hour and hour[0] <= at:
                heapq.heappop(hour)
            full = [h[0] for h, limit in ((minute, per_minute), (hour, per_hour))
                    if len(h) >= limit]
            if not full:
                break
            at = max(at, min(full))
        heapq.heappush(minute, at + MINUTE)
        heapq.heappush(hour, at + HOUR)
    return at


@dataclass(order=True)
class _Ticket:
    order: tuple[int, int, int]  # lane, slots its credential took this hour, arrival
    key: str = field(compare=False)
    lane: Lane = field(compare=False)
    turn: asyncio.Event = field(compare=False, default_factory=asyncio.Event)


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
        self._window: SharedWindow = window or LocalWindow(clock)
        self._clock = clock
        self._sleep = sleep
        self._queue: list[_Ticket] = []  # sorted: the head is served next
        self._arrivals = itertools.count()
        self._blocked_until = 0.0  # DigitalOcean said the token's budget is spent
        self._recent: deque[float] = deque()
        self._spent: dict[str, deque[float]] = {}
        self._ages: tuple[float, list[float]] | None = None  # (read at, ages then)
        self.taken = 0
        self.refused = 0

    def limits(self, lane: Lane) -> tuple[int, int]:
        """The window as ``lane`` sees it: housekeeping leaves SPARE of it alone."""
        if lane is Lane.HOUSEKEEPING:
            return (max(1, math.floor(self.per_minute * (1 - SPARE))),
                    max(1, math.floor(self.per_hour * (1 - SPARE))))
        return self.per_minute, self.per_hour

    async def acquire(self, max_wait: float) -> None:
        """Take one request slot for the current spender (``app.pacing.terms.spending``),
        waiting at most ``max_wait`` seconds for its turn, or BudgetExhausted."""
        spender = current_spender()
        ticket = _Ticket((int(spender.lane), self._spent_by(spender.key),
                          next(self._arrivals)), spender.key, spender.lane)
        bisect.insort(self._queue, ticket)
        deadline = self._clock() + max_wait
        try:
            ahead = self._queue.index(ticket)
            if ahead:
                # Not next: refuse at once, truthfully, if its turn cannot come in time.
                estimate = await self._estimate(ticket)
                if estimate > max_wait:
                    raise self._refuse(estimate)
            while True:
                if self._queue[0] is ticket:
                    wait = max(self._blocked_until - self._clock(), 0.0)
                    if wait == 0.0:
                        wait = await self._window.try_take(*self.limits(ticket.lane))
                        if wait == 0.0:
                            self._took(ticket.key)
                            return
                    if self._clock() + wait > deadline:
                        raise self._refuse(max(wait, await self._estimate(ticket)))
                    await self._sleep(wait)
                    continue
                ticket.turn.clear()
                try:
                    async with asyncio.timeout(max(deadline - self._clock(), 0.001)):
                        await ticket.turn.wait()
                except TimeoutError:
                    raise self._refuse(await self._estimate(ticket)) from None
        finally:
            was_head = self._queue and self._queue[0] is ticket
            self._queue.remove(ticket)
            if was_head and self._queue:
                self._queue[0].turn.set()

    async def backlog(self) -> float:
        """Seconds until a client's write arriving now would get its slot, behind every
        request already waiting: the truthful hint for one turned away before it could
        even queue (the service is at its in-flight limit)."""
        return await self._wait_behind(len(self._queue), Lane.CLIENT)

    def _refuse(self, estimate: float) -> BudgetExhausted:
        self.refused += 1
        return BudgetExhausted(math.ceil(estimate))

    async def _estimate(self, ticket: _Ticket) -> float:
        """Seconds until ``ticket``'s turn: the window's timestamps, the queue ahead."""
        ahead = self._queue.index(ticket) if ticket in self._queue else len(self._queue)
        return await self._wait_behind(ahead, ticket.lane)

    async def _wait_behind(self, ahead: int, lane: Lane) -> float:
        """Seconds until a slot comes for a request of ``lane`` with ``ahead`` before it."""
        held = max(self._blocked_until - self._clock(), 0.0)
        return held + time_until_slot(await self._recent_ages(), ahead, *self.limits(lane))

    async def _recent_ages(self) -> list[float]:
        """The window's ages, read at most once a second: a burst of arrivals must not
        queue one database read each (a hint rounded up to whole seconds loses nothing)."""
        now = self._clock()
        if self._ages is None or now - self._ages[0] >= 1.0:
            self._ages = (now, await self._window.ages())
            return self._ages[1]
        read_at, ages = self._ages
        return [a + (now - read_at) for a in ages]

    def _took(self, key: str) -> None:
        now = self._clock()
        self.taken += 1
        self._recent.append(now)
        spent = self._spent.setdefault(key, deque())
        spent.append(now)

    def _spent_by(self, key: str) -> int:
        spent = self._spent.get(key)
        if spent is None:
            return 0
        now = self._clock()
        while spent and spent[0] <= now - HOUR:
            spent.popleft()
        if not spent:
            del self._spent[key]
            return 0
        return len(spent)

    @property
    def waiting(self) -> int:
        return len(self._queue)

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
