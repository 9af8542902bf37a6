"""Spending DigitalOcean's rate budget like money.

The account has 250 requests a minute and 5,000 an hour for *everything*. Every
request to DigitalOcean first takes a slot in one sliding window, kept in the database
(``app.db.budget``) so that replicas, restarts and the CLI spend from one.

Who goes next is a fair queue, not first come first served: lanes first (revocations,
then clients' writes, then housekeeping: see ``app.pacing.terms``), and within a lane
the credential that spent least in the last hour before one that spent much, arrival
order breaking ties. Housekeeping takes a slot only while a fifth of the window is free
(``SPARE``): it never delays a client.

The queue lives on a ``Board``: in this process's memory for one process (SQLite), in the
database for a deployment of replicas (PostgreSQL: ``app.db.budget.DatabaseBoard``), so a
light credential on one replica goes before a heavy credential's requests queued on
another. Each process has one pump that settles all of its waiting requests in one
*round* (one database transaction): a burst of calls costs a round per batch, not a
transaction per call.

A request that cannot have its turn within its bounded wait is refused at once with the
estimated wait (from the window's own timestamps and the queue ahead) as ``retry_after``,
and its ticket stays in the queue as a *reservation*: when its credential comes back at
that moment, it takes its old place and is served, so a client that honours Retry-After
asks at most twice. Retry-After is whole seconds: the hint is the whole second at or
before the moment the slot frees (``whole_seconds``), so the client is back in its place
and waiting when it frees, not up to a second after it while the slot sits held for it.
A reservation nobody claims vanishes ``GRACE`` seconds after its moment; a replica's
waiting tickets vanish ``TICKET_TTL`` seconds after it stops tending them (killed).
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

from app.errors import BudgetExhausted
from app.pacing.terms import Lane, current_spender

# DigitalOcean's own windows. A slot is taken before its request is sent, and the request
# may reach DigitalOcean seconds later (a loaded event loop, a slow connection): so once
# the request is answered its slot is stamped again with that moment (``answered``),
# which is after DigitalOcean counted it. The slot that replaces it is taken a full
# minute after that, however late the first one went out: two requests of one slot never
# fall in one of DigitalOcean's minutes. (A second of margin on the window, as before,
# covered a second of delay; a burst on a loaded machine showed seven, and 253 requests
# in DigitalOcean's minute.) The margin in count stays: 240 of 250 by default.
MINUTE = 60.0
HOUR = 3600.0
# The share of the window housekeeping leaves alone: it spends only what is spare.
SPARE = 0.2
# A waiting ticket not tended for this long belongs to a dead process and is dropped.
TICKET_TTL = 10.0
# A reservation holds its place until this long after the moment its client was told.
GRACE = 10.0
# A reservation starts holding a slot this long before its moment: the client comes back
# at the whole second it was told, which is up to a second after the estimate.
HOLD_EARLY = 1.0
# A request served a slot stays in flight a while after DigitalOcean answered it (its
# outcome written down): this long, an overload hint counts it as wanting no slot.
SETTLING = 10.0
# Reservations one credential may hold at once (apex + wildcard, and a retry or two):
# refusals past it leave no reservation, so a credential cannot fill the queue with them.
MAX_RESERVATIONS = 4


@dataclass(frozen=True, slots=True)
class Usage:
    """The window as one round saw it: slots taken in the last minute and hour, and how
    long ago the oldest of each was taken."""

    minute: int
    hour: int
    minute_oldest: float
    hour_oldest: float

    def free(self, limits: tuple[int, int]) -> int:
        return max(0, min(limits[0] - self.minute, limits[1] - self.hour))

    def wait(self, limits: tuple[int, int]) -> float:
        """Seconds until a slot frees (a lower bound when over by more than one)."""
        waits = []
        if self.minute >= limits[0]:
            waits.append(MINUTE - self.minute_oldest)
        if self.hour >= limits[1]:
            waits.append(HOUR - self.hour_oldest)
        return max(max(waits), 0.01) if waits else 0.0


class SharedWindow(Protocol):
    """A sliding window kept where every process sees it."""

    async def take(self, decide: Callable[[Usage], list[str]],
                   answered: Sequence[int] = ()) -> tuple[Usage, list[int]]:
        """Atomically: stamp the ``answered`` slots with the moment now, read the window,
        ask ``decide`` which spenders get a slot now, and take one slot for each. Returns
        the usage read (before the slots were taken) and the slots taken, in order."""
        ...

    async def ages(self) -> list[float]:
        """Seconds since each slot of the last hour was taken, youngest first."""
        ...


class LocalWindow:
    """The window in this process's memory (tests, and a process without a database)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._taken: deque[float] = deque()
        self._slots: deque[int] = deque()  # the id of each slot in _taken
        self._ids = itertools.count(1)

    async def take(self, decide: Callable[[Usage], list[str]],
                   answered: Sequence[int] = ()) -> tuple[Usage, list[int]]:
        now = self._clock()
        for slot in answered:
            if slot in self._slots:
                at = self._slots.index(slot)
                del self._taken[at], self._slots[at]
                self._taken.append(now)
                self._slots.append(slot)
        while self._taken and self._taken[0] <= now - HOUR:
            self._taken.popleft()
            self._slots.popleft()
        in_minute = [t for t in self._taken if t > now - MINUTE]
        usage = Usage(len(in_minute), len(self._taken),
                      now - in_minute[0] if in_minute else 0.0,
                      now - self._taken[0] if self._taken else 0.0)
        slots = [next(self._ids) for _ in decide(usage)]
        self._taken.extend(now for _ in slots)
        self._slots.extend(slots)
        return usage, slots

    async def ages(self) -> list[float]:
        now = self._clock()
        return [now - t for t in reversed(self._taken) if t > now - HOUR]


def slot_times(ages: Sequence[float], count: int, per_minute: int, per_hour: int
               ) -> list[float]:
    """Seconds from now until each of the next ``count`` requests gets its slot, if every
    one takes the first slot it can: each taken slot frees again a MINUTE (and an HOUR)
    after it was taken. One replay serves every position of a queue."""
    minute = [MINUTE - a for a in ages if a < MINUTE]  # when each frees, from now
    hour = [HOUR - a for a in ages if a < HOUR]
    heapq.heapify(minute)
    heapq.heapify(hour)
    at = 0.0
    times: list[float] = []
    for _ in range(count):
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
        times.append(at)
    return times


def time_until_slot(ages: Sequence[float], ahead: int, per_minute: int, per_hour: int
                    ) -> float:
    """Seconds until the slot of the request with ``ahead`` requests before it frees up."""
    return slot_times(ages, ahead + 1, per_minute, per_hour)[ahead]


def whole_seconds(estimate: float, patience: float) -> int:
    """The Retry-After for a turn ``estimate`` seconds away (HTTP takes whole seconds).

    A client that comes back waits up to ``patience`` seconds (``DO_MAX_WAIT``) for its
    slot. With a second or more of it, the hint is the whole second at or before the
    moment: the client is back in its place (its reservation, held from ``HOLD_EARLY``
    before) when the slot frees and is served in that round; rounded up it would come
    back up to a second after, the slot held for it idle meanwhile, and a burst's windows
    would drift by that second each. Without that patience, the whole second after."""
    whole = math.floor(estimate) if patience >= 1 else math.ceil(estimate)
    return max(1, whole)


def lane_limits(lane: Lane, per_minute: int, per_hour: int) -> tuple[int, int]:
    """The window as ``lane`` sees it: housekeeping leaves SPARE of it alone."""
    if lane is Lane.HOUSEKEEPING:
        return (max(1, math.floor(per_minute * (1 - SPARE))),
                max(1, math.floor(per_hour * (1 - SPARE))))
    return per_minute, per_hour


# The queue, as every board keeps it


@dataclass(frozen=True, slots=True)
class Place:
    """A ticket in the queue's order (lane, spent, arrival), as a round plans with it."""

    id: int
    lane: Lane
    spender: str
    mine: bool  # a request of the planning process waits on it
    holding: bool  # it will take the next slot it is entitled to: a request waits on it
    # somewhere, or it is a reservation whose moment has come


def plan(queue: Sequence[Place], usage: Usage, limits: Callable[[Lane], tuple[int, int]],
         held: bool) -> tuple[list[Place], dict[int, int]]:
    """Which of this process's tickets take a slot now, and how many tickets stand ahead
    of each (reservations included). A ticket goes when fewer tickets that hold a place
    stand before it than the window has free slots for its lane: the slots before it
    belong to those, wherever they wait."""
    granted: list[Place] = []
    ahead: dict[int, int] = {}
    holding = 0
    for position, place in enumerate(queue):
        if place.mine:
            # Those granted before it are in the window now, no longer ahead in the queue.
            ahead[place.id] = position - len(granted)
            if not held and holding < usage.free(limits(place.lane)):
                granted.append(place)
        if place.holding:
            holding += 1
    return granted, ahead


@dataclass(frozen=True, slots=True)
class Want:
    """A new request of this process, to become a ticket (or to claim its credential's
    reservation in that lane)."""

    ref: int
    lane: Lane
    spender: str


@dataclass(frozen=True, slots=True)
class Reserve:
    ticket: int
    spender: str
    due_in: float  # seconds until the moment its client was told


@dataclass
class Round:
    owner: str
    new: list[Want]
    reserve: list[Reserve]
    drop: list[int]
    held: bool  # DigitalOcean said the token's budget is spent: nobody goes
    limits: Callable[[Lane], tuple[int, int]]
    answered: list[int] = field(default_factory=list)  # slots to stamp with the moment now


@dataclass
class Settled:
    tickets: dict[int, int]  # Want.ref -> ticket id
    granted: list[int]
    slots: dict[int, int]  # granted ticket -> the slot it took (for ``answered``)
    ahead: dict[int, int]  # this process's ungranted tickets -> tickets ahead of each
    usage: Usage  # the window before this round's grants
    wait: float  # seconds until the window may have a client's slot again (0: it has one)
    depth: dict[Lane, int]  # tickets waiting or reserved, by lane (the whole board)


class Board(Protocol):
    """Where tickets wait: one process's memory, or the database for every replica."""

    async def settle(self, work: Round) -> Settled:
        """One round, atomic against every other process's rounds: new tickets in,
        reservations and dropped tickets applied, this process's tickets kept alive, and
        the slots granted taken from the window."""
        ...

    async def ages(self) -> list[float]:
        ...

    async def depth(self) -> dict[Lane, int]:
        ...

    # Whether other processes change the queue: their rounds are only seen by polling.
    shared: bool


@dataclass
class _Ticket:
    id: int
    lane: Lane
    spent: int
    spender: str
    arrival: int
    owner: str | None
    due: float = 0.0
    expires: float = math.inf

    def order(self) -> tuple[int, int, int]:
        return int(self.lane), self.spent, self.arrival


class LocalBoard:
    """The queue in this process's memory, over a shared window: one serving process
    (SQLite) needs no shared queue, and a round that cannot grant costs no database work.
    Spent is what this process saw each credential spend in the last hour."""

    shared = False

    def __init__(self, window: SharedWindow, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._window = window
        self._clock = clock
        self._tickets: dict[int, _Ticket] = {}
        self._ids = itertools.count(1)
        self._spent: dict[str, deque[float]] = {}
        self._full_until = 0.0  # the window said no slot frees before then
        # Tickets of the round under way: not in ``depth`` until it ends (see ``settle``).
        self._in_round: set[int] = set()

    async def settle(self, work: Round) -> Settled:
        now = self._clock()
        for gone in [t for t in self._tickets.values() if t.expires <= now]:
            del self._tickets[gone.id]
        for ticket_id in work.drop:
            self._tickets.pop(ticket_id, None)
        for reserve in work.reserve:
            ticket = self._tickets.get(reserve.ticket)
            if ticket is None:
                continue
            if self._reservations(reserve.spender) >= MAX_RESERVATIONS:
                del self._tickets[ticket.id]
                continue
            ticket.owner, ticket.due = None, now + reserve.due_in
            ticket.expires = ticket.due + GRACE
        tickets: dict[int, int] = {}
        for want in work.new:
            claimed = self._claim(want)
            if claimed is None:
                ticket_id = next(self._ids)
                claimed = self._tickets[ticket_id] = _Ticket(
                    ticket_id, want.lane, self._spent_by(want.spender), want.spender,
                    ticket_id, work.owner)
            claimed.owner, claimed.expires = work.owner, math.inf
            tickets[want.ref] = claimed.id
        queue = sorted(self._tickets.values(), key=_Ticket.order)
        places = [Place(t.id, t.lane, t.spender, t.owner is not None,
                        t.owner is not None or t.due - HOLD_EARLY <= now) for t in queue]
        granted: list[Place] = []
        ahead: dict[int, int] = {}

        def decide(usage: Usage) -> list[str]:
            nonlocal granted, ahead
            granted, ahead = plan(places, usage, work.limits, work.held)
            return [p.spender for p in granted]

        slots: list[int] = []
        if work.answered:
            self._full_until = 0.0  # stamped later: the window frees later than it said
        idle = work.held or not any(p.mine for p in places)
        if (now < self._full_until or idle) and not work.answered:
            # Nothing can go (the window said when it frees, and only this process fills
            # it, but for a rare CLI call): plan without asking the database.
            usage = Usage(0, 0, 0.0, 0.0)
            decide(Usage(1 << 30, 0, 0.0, 0.0))
            wait = max(self._full_until - now, 0.0)
        else:
            # While the window is taken (the round's one wait) its requests are the pump's
            # (``RateBudget``: neither waiting nor granted yet), and an overload hint
            # counts them as in flight: the depth it reads meanwhile must not count them
            # again (it did: a round of 155 newcomers, slow to take the window on a loaded
            # machine, told a burst's last clients 155 places too late, a whole window).
            self._in_round = set(tickets.values())
            try:
                usage, slots = await self._window.take(
                    (lambda _: []) if idle else decide, work.answered)
            finally:
                self._in_round = set()
            if idle:
                decide(Usage(1 << 30, 0, 0.0, 0.0))  # where each stands; nobody goes
            after = Usage(usage.minute + len(granted), usage.hour + len(granted),
                          usage.minute_oldest, usage.hour_oldest)
            wait = after.wait(work.limits(Lane.CLIENT))
            self._full_until = now + wait if wait else 0.0
        for place in granted:
            del self._tickets[place.id]
            self._spend(place.spender, now)
        return Settled(tickets, [p.id for p in granted],
                       dict(zip([p.id for p in granted], slots, strict=True)), ahead, usage,
                       wait, self._depth())

    async def ages(self) -> list[float]:
        return await self._window.ages()

    async def depth(self) -> dict[Lane, int]:
        return self._depth()

    def _depth(self) -> dict[Lane, int]:
        depth = dict.fromkeys(Lane, 0)
        for ticket in self._tickets.values():
            if ticket.id not in self._in_round:
                depth[ticket.lane] += 1
        return depth

    def _claim(self, want: Want) -> _Ticket | None:
        reserved = [t for t in self._tickets.values()
                    if t.owner is None and t.spender == want.spender and t.lane is want.lane]
        return min(reserved, key=_Ticket.order) if reserved else None

    def _reservations(self, spender: str) -> int:
        return sum(1 for t in self._tickets.values() if t.owner is None and t.spender == spender)

    def _spend(self, spender: str, now: float) -> None:
        self._spent.setdefault(spender, deque()).append(now)

    def _spent_by(self, spender: str) -> int:
        spent = self._spent.get(spender)
        if spent is None:
            return 0
        now = self._clock()
        while spent and spent[0] <= now - HOUR:
            spent.popleft()
        if not spent:
            del self._spent[spender]
            return 0
        return len(spent)


# The pump: one per process, settling every waiting request of the process in one round


@dataclass(eq=False)
class _Waiter:
    ref: int
    lane: Lane
    spender: str
    deadline: float
    patience: float  # its max_wait
    done: asyncio.Future[int | None]  # the slot it took
    ticket: int | None = None
    ahead: int = 0


class RateBudget:
    # How often a process re-reads a shared board while its requests wait: other
    # replicas' rounds free places ahead of them without telling it.
    POLL = 0.25

    def __init__(
        self,
        *,
        per_minute: int,
        per_hour: int,
        window: SharedWindow | None = None,
        board: Board | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        owner: str | None = None,
        patience: float = 0.0,
    ) -> None:
        self.per_minute = per_minute
        self.per_hour = per_hour
        # How long a client told to come back waits then (DO_MAX_WAIT): ``backlog`` rounds
        # its hint with it (``whole_seconds``).
        self.patience = patience
        self._board: Board = board or LocalBoard(window or LocalWindow(clock), clock)
        self._clock = clock
        self._sleep = sleep
        self._owner = owner or f"{time.time_ns():x}-{id(self):x}"
        self._refs = itertools.count()
        self._new: list[_Waiter] = []
        self._settling: list[_Waiter] = []  # in the round under way
        self._waiting: dict[int, _Waiter] = {}  # ticket id -> waiter
        self._reserve: list[Reserve] = []
        self._drop: list[int] = []
        self._answered: list[int] = []  # slots whose request is over: to stamp again
        # Slots granted to this process's requests, with when each stops counting: such a
        # request is in flight but needs no slot any more (its slot is in the window)
        # while it talks to DigitalOcean, and for a while after (``SETTLING``).
        self._sending: dict[int, float] = {}
        # When this process refused requests (their reservations are in the queue, and
        # they are in flight a while yet, answering 503): counted once, not again.
        self._refusing: deque[float] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._pump: asyncio.Task[None] | None = None
        self._blocked_until = 0.0  # DigitalOcean said the token's budget is spent
        self._recent: deque[float] = deque()
        self._promised: list[float] = []  # moments told by backlog(), sorted
        self._telling = 0  # backlog() calls under way, not yet in _promised
        self._reading = asyncio.Lock()  # one read of the board's depth or ages at a time
        self._ages: tuple[float, list[float]] | None = None  # (read at, ages then)
        self._depth: tuple[float, dict[Lane, int]] | None = None
        self._window_wait = 0.0
        self.taken = 0
        self.refused = 0
        self.rounds = 0  # board rounds (database transactions on a database board)

    def limits(self, lane: Lane) -> tuple[int, int]:
        return lane_limits(lane, self.per_minute, self.per_hour)

    async def acquire(self, max_wait: float) -> int | None:
        """Take one request slot for the current spender (``app.pacing.terms.spending``),
        waiting at most ``max_wait`` seconds for its turn, or BudgetExhausted. Returns the
        slot, to pass to ``answered`` once DigitalOcean has answered the request (or it
        failed)."""
        spender = current_spender()
        waiter = _Waiter(next(self._refs), spender.lane, spender.key,
                         self._clock() + max_wait, max_wait,
                         asyncio.get_running_loop().create_future())
        self._new.append(waiter)
        self._wake.set()
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run(), name="budget-pump")
        try:
            return await asyncio.shield(waiter.done)
        except asyncio.CancelledError:
            if not waiter.done.done():
                waiter.done.cancel()
                self._forget(waiter)
            elif not waiter.done.cancelled() and waiter.done.exception() is None:
                pass  # granted as it was cancelled: the slot is spent, as if sent
            raise

    def answered(self, slot: int | None) -> None:
        """The request sent in ``slot`` is over (answered, or failed): its slot is stamped
        again with the moment now, in the pump's next round, so that the slot replacing it
        is taken a full minute after DigitalOcean counted it, however long it took to go
        out (see ``MINUTE``)."""
        if slot is None:
            return
        if slot in self._sending:
            self._sending[slot] = self._clock() + SETTLING
        if self._closing:
            return
        self._answered.append(slot)
        self._wake.set()
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run(), name="budget-pump")

    async def close(self) -> None:
        """Stop the pump (at shutdown, once requests have drained): the round under way
        ends, waiting requests are refused and their tickets dropped."""
        self._closing = True
        self._wake.set()
        if self._pump is not None and not self._pump.done():
            await self._pump

    async def backlog(self, in_flight: int = 0) -> float:
        """Seconds until a client's write arriving now would get its slot, behind every
        ticket already waiting or reserved (every replica's, on a shared board), every
        client already told a moment, and the ``in_flight`` requests this process is
        working on that have not reached the queue yet (each may need a slot): the
        truthful hint for one turned away before it could even queue (the service is at
        its in-flight limit). Whole seconds, rounded as ``whole_seconds`` says for a
        client that waits ``patience`` when it comes back."""
        now = self._clock()
        del self._promised[:bisect.bisect_right(self._promised, now)]
        # Everyone already told a moment counts ahead: a thousand clients turned away at
        # once must hear a thousand successive moments, not the same one. Counted before
        # the first await: those being told concurrently count too (they all read the
        # window and the queue at once, and none had been told yet).
        told = len(self._promised) + self._telling
        self._telling += 1
        try:
            await self._refresh_depth()
            ages = await self._recent_ages()
        finally:
            self._telling -= 1
        # No await from here: the queue, the window and the requests in flight as they
        # are now, one view. (Counted before the window was read, a request granted
        # meanwhile was both a slot taken and one ahead: on a loaded machine, where the
        # read waits seconds, a burst's last clients were told a window late.)
        depth = self._depth[1] if self._depth is not None else dict.fromkeys(Lane, 0)
        ahead = (depth[Lane.REVOCATION] + depth[Lane.CLIENT] + len(self._new)
                 + told + max(0, in_flight - self.waiting - self._still_sending()))
        wait = self._held_for() + time_until_slot(ages, ahead, *self.limits(Lane.CLIENT))
        bisect.insort(self._promised, now + wait)
        return float(whole_seconds(wait, self.patience)) if wait > 0 else 0.0

    async def _refresh_depth(self) -> None:
        """Read the board's depth if the copy is a second old (one read for a crowd of
        concurrent callers). A round that ends during the read leaves a newer copy
        (its own outcome): the read does not overwrite it."""
        async with self._reading:
            if self._depth is None or self._clock() - self._depth[0] >= 1.0:
                rounds, read_at = self.rounds, self._clock()
                depth = await self._board.depth()
                if self.rounds == rounds or self._depth is None:
                    self._depth = (read_at, depth)

    def _still_sending(self) -> int:
        """Requests served a slot that are likely still in flight, wanting no other: while
        they talk to DigitalOcean, and ``SETTLING`` seconds after (writing the outcome
        down; a request gone without ``answered`` stops counting after a minute)."""
        now = self._clock()
        for slot in [s for s, until in self._sending.items() if until <= now]:
            del self._sending[slot]
        while self._refusing and self._refusing[0] <= now - SETTLING:
            self._refusing.popleft()
        return len(self._sending) + len(self._refusing)

    @property
    def waiting(self) -> int:
        """Requests of this process waiting for a slot."""
        return len(self._waiting) + len(self._new)

    async def depth(self) -> dict[Lane, int]:
        """Tickets waiting or reserved, by lane, on the whole board."""
        depth = await self._board.depth()
        self._depth = (self._clock(), depth)
        return depth

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
            self._wake.set()

    # the pump

    def _forget(self, waiter: _Waiter) -> None:
        if waiter in self._new:
            self._new.remove(waiter)
        if waiter.ticket is not None and self._waiting.pop(waiter.ticket, None) is not None:
            self._drop.append(waiter.ticket)
            self._wake.set()

    async def _run(self) -> None:
        try:
            while self._new or self._waiting or self._reserve or self._drop or self._answered:
                if self._closing:
                    self._shut()
                await self._round()
                if self._new or self._reserve or self._drop or self._answered:
                    continue
                if not self._waiting:
                    break
                self._wake.clear()
                await self._doze(self._next_look())
        except Exception as exc:  # the database failed: every waiter hears it
            for waiter in [*self._new, *self._settling, *self._waiting.values()]:
                if not waiter.done.done():
                    waiter.done.set_exception(exc)
            self._new.clear()
            self._settling = []
            self._waiting.clear()
            self._reserve.clear()
            self._drop.clear()
            self._answered.clear()

    def _shut(self) -> None:
        for waiter in [*self._new, *self._waiting.values()]:
            if not waiter.done.done():
                waiter.done.set_exception(BudgetExhausted(1))
        self._drop += list(self._waiting)
        self._new.clear()
        self._waiting.clear()

    async def _doze(self, seconds: float) -> None:
        """Until ``seconds`` pass (on the injected clock) or a request wakes the pump."""
        dozing = asyncio.ensure_future(self._sleep(seconds))
        woken = asyncio.ensure_future(self._wake.wait())
        _, pending = await asyncio.wait({dozing, woken}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    def _next_look(self) -> float:
        now = self._clock()
        look = min(w.deadline for w in self._waiting.values()) - now
        look = min(look, self._window_wait or self.POLL)
        if self._board.shared:
            # Other replicas' rounds free places ahead without telling this one; its own
            # tickets must be kept alive well within TICKET_TTL.
            look = min(look, self.POLL, TICKET_TTL / 3)
        return max(look, 0.005)

    async def _round(self) -> None:
        new, self._new = self._new, []
        self._settling = new
        reserve, self._reserve = self._reserve, []
        drop, self._drop = self._drop, []
        answered, self._answered = self._answered, []
        held = self._clock() < self._blocked_until
        settled = await self._board.settle(Round(
            self._owner, [Want(w.ref, w.lane, w.spender) for w in new], reserve, drop, held,
            self.limits, answered))
        self._settling = []
        self.rounds += 1
        now = self._clock()
        self._depth = (now, settled.depth)
        arrived: list[_Waiter] = []
        for waiter in new:
            waiter.ticket = settled.tickets[waiter.ref]
            if waiter.done.done():  # cancelled meanwhile
                self._drop.append(waiter.ticket)
            else:
                self._waiting[waiter.ticket] = waiter
                arrived.append(waiter)
        for ticket in settled.granted:
            granted = self._waiting.pop(ticket, None)
            if granted is None:
                continue
            self.taken += 1
            self._recent.append(now)
            slot = settled.slots.get(ticket)
            if slot is not None:
                self._sending[slot] = now + MINUTE
            granted.done.set_result(slot)
        if answered:
            self._ages = None  # stamped again: read the window afresh for estimates
        elif settled.granted and self._ages is not None:
            # The cached window learns this round's slots (age 0 now): an estimate made
            # before the next read must not see them still free.
            read_at, ages = self._ages
            ages.extend([read_at - now] * len(settled.granted))
        self._window_wait = (self._blocked_until - now) if held else settled.wait
        for ticket, ahead in settled.ahead.items():
            behind = self._waiting.get(ticket)
            if behind is not None:
                behind.ahead = ahead
        # Refuse, at once and truthfully, whoever cannot be served within its wait: a
        # newcomer whose estimated turn lies past its deadline, or a waiter whose deadline
        # has come. Estimates are computed only then (a replay of the window).
        doomed = [w for w in arrived if w.ticket in self._waiting]
        fresh = {w.ticket for w in doomed}
        doomed += [w for w in self._waiting.values() if w.deadline <= now and w.ticket not in fresh]
        if not doomed:
            return
        estimates = await self._estimates(doomed)
        for waiter, estimate in zip(doomed, estimates, strict=True):
            if waiter.deadline > now and now + estimate <= waiter.deadline:
                continue
            assert waiter.ticket is not None
            del self._waiting[waiter.ticket]
            told = whole_seconds(estimate, waiter.patience)
            if waiter.spender and waiter.lane is not Lane.HOUSEKEEPING:
                self._reserve.append(Reserve(waiter.ticket, waiter.spender, told))
            else:
                self._drop.append(waiter.ticket)
            self.refused += 1
            self._refusing.append(now)
            waiter.done.set_exception(BudgetExhausted(told))

    async def _estimates(self, waiters: Sequence[_Waiter]) -> list[float]:
        held = self._held_for()
        ages = await self._recent_ages()
        times: dict[Lane, list[float]] = {}
        for lane in {w.lane for w in waiters}:
            deepest = max(w.ahead for w in waiters if w.lane is lane)
            times[lane] = slot_times(ages, deepest + 1, *self.limits(lane))
        return [held + times[w.lane][w.ahead] for w in waiters]

    def _held_for(self) -> float:
        """Seconds until DigitalOcean's own hold on the token ends (``observe``): 0 if none."""
        return max(self._blocked_until - self._clock(), 0.0)

    async def _recent_ages(self) -> list[float]:
        """The window's ages, read at most once a second: a burst of arrivals must not
        queue one database read each (a hint rounded to whole seconds loses nothing), nor
        a crowd of concurrent callers start one read each before the first has answered."""
        async with self._reading:
            if self._ages is None or self._clock() - self._ages[0] >= 1.0:
                for _ in range(3):
                    # A round that ended during the read may have taken slots the read
                    # did not see (and its own update of the copy is overwritten here):
                    # read again, a few times at most.
                    rounds = self.rounds
                    self._ages = (self._clock(), await self._board.ages())
                    if self.rounds == rounds:
                        break
            assert self._ages is not None
            read_at, ages = self._ages
            now = self._clock()
            return [a + (now - read_at) for a in ages]
