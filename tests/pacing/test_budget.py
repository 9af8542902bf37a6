"""The DigitalOcean request budget: windows, fairness, bounded waits."""

from __future__ import annotations

import asyncio
import math

import pytest

from app.errors import BudgetExhausted
from app.pacing.budget import HOUR, MINUTE, LocalBoard, LocalWindow, RateBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def take_one(window: LocalWindow, per_minute: int, per_hour: int) -> float:
    """Take a slot if the window has one: 0, else the seconds until one frees."""
    limits = (per_minute, per_hour)
    usage, _ = await window.take(lambda u: ["k"] if u.free(limits) else [])
    return 0.0 if usage.free(limits) else usage.wait(limits)


async def test_local_window_enforces_the_minute_and_the_hour() -> None:
    clock = FakeClock()
    window = LocalWindow(clock)
    assert [await take_one(window, 3, 5) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await take_one(window, 3, 5) == pytest.approx(MINUTE)
    clock.now += MINUTE
    assert await take_one(window, 3, 5) == 0.0
    assert await take_one(window, 3, 5) == 0.0
    # Five in the hour: the next must wait for the first to be an hour old.
    assert await take_one(window, 3, 5) == pytest.approx(HOUR - MINUTE)


async def test_budget_waits_within_its_bound_then_refuses_with_a_hint() -> None:
    clock = FakeClock()
    budget = RateBudget(per_minute=2, per_hour=100, clock=clock, sleep=clock.sleep)
    await budget.acquire(max_wait=0)
    await budget.acquire(max_wait=0)
    with pytest.raises(BudgetExhausted) as caught:
        await budget.acquire(max_wait=10)
    assert caught.value.retry_after is not None and caught.value.retry_after >= 50
    started = clock.now
    await budget.acquire(max_wait=MINUTE)  # waits for the oldest slot to free
    assert clock.now - started == pytest.approx(MINUTE)
    assert budget.taken == 3


async def test_waiters_are_served_in_arrival_order() -> None:
    clock = FakeClock()
    budget = RateBudget(per_minute=1, per_hour=100, clock=clock, sleep=clock.sleep)
    order: list[int] = []

    async def client(n: int) -> None:
        await budget.acquire(max_wait=1000)
        order.append(n)

    await asyncio.gather(*(client(n) for n in range(5)))
    assert order == [0, 1, 2, 3, 4]


async def test_digitalocean_saying_nothing_is_left_holds_requests() -> None:
    import time

    clock = FakeClock()
    budget = RateBudget(per_minute=100, per_hour=100, clock=clock, sleep=clock.sleep)
    budget.observe("0", str(time.time() + 30))
    with pytest.raises(BudgetExhausted):
        await budget.acquire(max_wait=5)
    await budget.acquire(max_wait=60)
    budget.observe("junk", None)  # ignored


# The fair queue: lanes, shares by credential, spare budget for housekeeping, true hints

from app.pacing.budget import (  # noqa: E402
    MAX_RESERVATIONS,
    SETTLING,
    SPARE,
    time_until_slot,
)
from app.pacing.terms import Lane, spending  # noqa: E402


def test_time_until_slot_replays_the_window() -> None:
    # Two a minute, taken 10 s and 5 s ago: the next frees at 51 s, then 56 s; the third
    # request ahead waits for the first new slot to free again.
    ages = [5.0, 10.0]
    assert time_until_slot(ages, 0, 2, 100) == pytest.approx(MINUTE - 10)
    assert time_until_slot(ages, 1, 2, 100) == pytest.approx(MINUTE - 5)
    assert time_until_slot(ages, 2, 2, 100) == pytest.approx(2 * MINUTE - 10)
    assert time_until_slot([], 0, 2, 100) == 0.0
    # The hour binds too.
    assert time_until_slot([100.0, 200.0], 0, 10, 2) == pytest.approx(HOUR - 200)


async def test_lanes_go_in_order_and_a_small_spender_before_a_big_one() -> None:
    clock = FakeClock()

    async def sleep(seconds: float) -> None:  # time moves only when the test says
        await asyncio.sleep(0)

    budget = RateBudget(per_minute=1, per_hour=1000, clock=clock, sleep=sleep)
    with spending(Lane.CLIENT, "greedy"):
        for n in range(3):
            clock.now += MINUTE if n else 0
            await budget.acquire(max_wait=1000)
    order: list[str] = []

    async def one(lane: Lane, key: str) -> None:
        with spending(lane, key):
            await budget.acquire(max_wait=10_000)
        order.append(f"{lane.name.lower()}:{key}")

    tasks = [asyncio.create_task(one(lane, key)) for lane, key in (
        (Lane.HOUSEKEEPING, "reconcile"), (Lane.CLIENT, "greedy"), (Lane.CLIENT, "modest"),
        (Lane.REVOCATION, "revoked"))]
    for _ in range(10):
        await asyncio.sleep(0)
    assert budget.waiting == 4 and order == []
    while not all(t.done() for t in tasks):
        clock.now += 1
        await asyncio.sleep(0)
    assert order == ["revocation:revoked", "client:modest", "client:greedy",
                     "housekeeping:reconcile"]


async def test_housekeeping_spends_only_spare_budget() -> None:
    clock = FakeClock()
    budget = RateBudget(per_minute=10, per_hour=1000, clock=clock, sleep=clock.sleep)
    busy = round(10 * (1 - SPARE))
    for _ in range(busy):
        await budget.acquire(max_wait=0)
    with spending(Lane.HOUSEKEEPING, "reconcile"), pytest.raises(BudgetExhausted):
        await budget.acquire(max_wait=0)
    await budget.acquire(max_wait=0)  # a client still has the spare share


async def test_a_refusal_names_the_moment_its_turn_comes() -> None:
    clock = FakeClock()
    budget = RateBudget(per_minute=2, per_hour=1000, clock=clock, sleep=clock.sleep)
    await budget.acquire(max_wait=0)
    clock.now += 10
    await budget.acquire(max_wait=0)
    with pytest.raises(BudgetExhausted) as caught:
        await budget.acquire(max_wait=5)
    hint = caught.value.retry_after
    assert hint == math.ceil(MINUTE - 10)
    clock.now += hint
    await budget.acquire(max_wait=0)  # served at the moment it was told


async def test_the_backlog_names_when_a_newcomer_could_be_served() -> None:
    """What a request turned away at the in-flight limit is told: the moment a client's
    write arriving now would get its slot, never a constant."""
    clock = FakeClock()
    budget = RateBudget(per_minute=2, per_hour=1000, clock=clock, sleep=clock.sleep)
    assert await budget.backlog() == 0.0  # room in the window: at once
    await budget.acquire(max_wait=0)
    clock.now += 10
    await budget.acquire(max_wait=0)
    assert await budget.backlog() == pytest.approx(MINUTE - 10)
    clock.now += 2  # the cached window ages with the clock, and whoever was told the
    # first moment counts ahead: the next one hears the slot after it
    assert await budget.backlog() == pytest.approx(MINUTE - 2)


async def test_a_client_back_when_told_is_served_before_newcomers() -> None:
    """Refused with Retry-After T, a credential that comes back at T takes its reserved
    place: it is served at once, ahead of a newcomer that came meanwhile; it asks twice."""
    clock = FakeClock()
    budget = RateBudget(per_minute=1, per_hour=1000, clock=clock, sleep=clock.sleep)
    with spending(Lane.CLIENT, "first"):
        await budget.acquire(max_wait=0)
    with spending(Lane.CLIENT, "patient"), pytest.raises(BudgetExhausted) as caught:
        await budget.acquire(max_wait=5)
    told = caught.value.retry_after
    assert told == math.ceil(MINUTE)
    assert (await budget.depth())[Lane.CLIENT] == 1  # its reservation
    clock.now += 30
    with spending(Lane.CLIENT, "newcomer"), pytest.raises(BudgetExhausted) as later:
        await budget.acquire(max_wait=5)
    # The newcomer's estimate counts the reservation ahead of it: a minute after the
    # patient client's slot, not the same moment.
    assert later.value.retry_after is not None and later.value.retry_after > told - 30 + 50
    clock.now += told - 30
    with spending(Lane.CLIENT, "patient"):
        await budget.acquire(max_wait=0)  # back at T: served at once, no further wait
    with spending(Lane.CLIENT, "newcomer"), pytest.raises(BudgetExhausted):
        await budget.acquire(max_wait=0)


async def test_a_reservation_nobody_claims_vanishes() -> None:
    clock = FakeClock()
    budget = RateBudget(per_minute=1, per_hour=1000, clock=clock, sleep=clock.sleep)
    await budget.acquire(max_wait=0)
    with spending(Lane.CLIENT, "gone"), pytest.raises(BudgetExhausted) as caught:
        await budget.acquire(max_wait=0)
    told = caught.value.retry_after or 0
    clock.now += told + 1
    # Its moment has come and it holds the slot for a while: others wait behind it...
    with spending(Lane.CLIENT, "other"), pytest.raises(BudgetExhausted):
        await budget.acquire(max_wait=0)
    clock.now += 10  # ... until its grace runs out
    with spending(Lane.CLIENT, "other"):
        await budget.acquire(max_wait=0)
    assert (await budget.depth())[Lane.CLIENT] == 0


async def test_one_credential_holds_few_reservations() -> None:
    clock = FakeClock()
    budget = RateBudget(per_minute=1, per_hour=1000, clock=clock, sleep=clock.sleep)
    await budget.acquire(max_wait=0)

    async def hoard() -> None:
        with spending(Lane.CLIENT, "hoarder"), pytest.raises(BudgetExhausted):
            await budget.acquire(max_wait=0)

    # Sequential requests claim the one reservation again; concurrent ones each leave one,
    # up to the bound.
    await asyncio.gather(*(hoard() for _ in range(MAX_RESERVATIONS + 5)))
    await hoard()
    assert (await budget.depth())[Lane.CLIENT] == MAX_RESERVATIONS


async def test_a_burst_refusal_counts_the_slots_just_granted_once() -> None:
    """Three at once, two slots: the two served are in the window, not also ahead in the
    queue, so the third is told the minute, not two."""
    clock = FakeClock()
    budget = RateBudget(per_minute=2, per_hour=1000, clock=clock, sleep=clock.sleep)

    async def one(key: str) -> float:
        with spending(Lane.CLIENT, key):
            try:
                await budget.acquire(max_wait=5)
            except BudgetExhausted as exc:
                return exc.retry_after or 0
        return 0.0

    told = await asyncio.gather(*(one(k) for k in "abc"))
    assert sorted(told) == [0.0, 0.0, math.ceil(MINUTE)]


async def test_a_refusal_names_the_whole_second_before_its_slot_frees() -> None:
    """Retry-After is whole seconds: a client that will wait for its slot when it comes
    back (max_wait >= 1) is told the second at or before the moment, so it is in its
    place when the slot frees instead of up to a second after it, the slot held for it
    idle meanwhile; without that patience it is told the second after."""
    clock = FakeClock()
    budget = RateBudget(per_minute=1, per_hour=1000, clock=clock, sleep=clock.sleep)
    await budget.acquire(max_wait=0)
    clock.now += 10.6  # the slot frees 50.4 s from now
    with spending(Lane.CLIENT, "patient"), pytest.raises(BudgetExhausted) as caught:
        await budget.acquire(max_wait=10)
    assert caught.value.retry_after == math.floor(MINUTE - 10.6)
    clock.now += caught.value.retry_after
    back = clock.now
    with spending(Lane.CLIENT, "patient"):
        await budget.acquire(max_wait=10)  # its reservation: served when the slot frees
    assert clock.now - back == pytest.approx(MINUTE - 10.6 - math.floor(MINUTE - 10.6))
    clock.now += 10.6
    with spending(Lane.CLIENT, "hasty"), pytest.raises(BudgetExhausted) as hasty:
        await budget.acquire(max_wait=0.5)
    assert hasty.value.retry_after == math.ceil(MINUTE - 10.6)


class YieldingWindow(LocalWindow):
    """A window whose reads take a turn of the event loop, as a database's do; counts
    them."""

    reads = 0

    async def ages(self) -> list[float]:
        self.reads += 1
        await asyncio.sleep(0)
        return await super().ages()


async def test_concurrent_overload_hints_count_each_other() -> None:
    """Clients turned away at the in-flight limit at the same moment are told successive
    moments, though each hint reads the window (an await) before any of them was told;
    and the crowd reads the window once, not once each."""
    clock = FakeClock()
    window = YieldingWindow(clock)
    budget = RateBudget(per_minute=2, per_hour=1000, window=window, clock=clock,
                        sleep=clock.sleep)
    await budget.acquire(max_wait=0)
    await budget.acquire(max_wait=0)
    hints = await asyncio.gather(*(budget.backlog() for _ in range(6)))
    assert sorted(hints) == [MINUTE, MINUTE, 2 * MINUTE, 2 * MINUTE, 3 * MINUTE, 3 * MINUTE]
    assert window.reads == 1


async def test_an_overload_hint_is_rounded_for_the_service_s_patience() -> None:
    clock = FakeClock()
    for patience, rounded in ((10.0, math.floor), (0.0, math.ceil)):
        budget = RateBudget(per_minute=1, per_hour=1000, clock=clock, sleep=clock.sleep,
                            patience=patience)
        await budget.acquire(max_wait=0)
        clock.now += 0.4
        assert await budget.backlog() == rounded(MINUTE - 0.4)
        clock.now += MINUTE


async def test_a_slot_counts_from_when_its_request_was_answered() -> None:
    """A request can reach DigitalOcean seconds after its slot was taken (a loaded event
    loop): the slot is stamped again once it is answered, and the next frees a full
    minute after that, not after the taking, so DigitalOcean never counts two requests of
    one slot in its minute."""
    clock = FakeClock()
    budget = RateBudget(per_minute=1, per_hour=1000, clock=clock, sleep=clock.sleep)
    slot = await budget.acquire(max_wait=0)
    assert slot is not None
    clock.now += 7  # sent late, answered 7 s after the slot was taken
    budget.answered(slot)
    with pytest.raises(BudgetExhausted) as caught:
        await budget.acquire(max_wait=0)
    assert caught.value.retry_after == MINUTE
    assert MINUTE == 60  # DigitalOcean's own minute: the stamp is the margin in time


async def test_an_overload_hint_does_not_count_requests_already_served_a_slot() -> None:
    """At the in-flight limit, requests that were granted a slot and are still talking to
    DigitalOcean are in flight, but their slots are in the window already: counted once,
    not again as wanting one ahead (that told a burst's last clients a minute too late)."""
    clock = FakeClock()
    budget = RateBudget(per_minute=2, per_hour=1000, clock=clock, sleep=clock.sleep)
    slots = [await budget.acquire(max_wait=0) for _ in range(2)]  # both still sending
    assert await budget.backlog(in_flight=2) == MINUTE
    budget.answered(slots[0])  # answered: in flight a while yet, writing its outcome down
    assert await budget.backlog(in_flight=2) == MINUTE  # one told ahead, both served
    clock.now += SETTLING  # it is over: another in flight now may want a slot
    # Two told, one wanting: the fourth slot from now, the second to free again.
    assert await budget.backlog(in_flight=2) == 2 * MINUTE - SETTLING


async def test_an_overload_hint_counts_a_request_being_refused_once() -> None:
    """A request just refused with a reservation is still in flight a moment (answering
    its 503), and its reservation is in the queue: one place ahead, not two (counted
    twice, a burst's last 38 clients were told a window late, 295 s)."""
    clock = FakeClock()
    budget = RateBudget(per_minute=1, per_hour=1000, clock=clock, sleep=clock.sleep)
    await budget.acquire(max_wait=0)  # served: still in flight
    with spending(Lane.CLIENT, "refused"), pytest.raises(BudgetExhausted):
        await budget.acquire(max_wait=0)  # refused: its reservation waits in the queue
    # In flight: those two. Ahead of a newcomer: the reservation only.
    assert await budget.backlog(in_flight=2) == 2 * MINUTE


class HeldWindow(LocalWindow):
    """A window whose ``take`` waits until ``release`` is set: a round that takes long to
    reach the database (a loaded machine), held under way."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def take(self, decide, answered=()):  # type: ignore[no-untyped-def]
        self.entered.set()
        await self.release.wait()
        return await super().take(decide, answered)


async def test_an_overload_hint_counts_the_requests_of_a_round_under_way_once() -> None:
    """Requests whose round is under way are the pump's (neither waiting nor granted) and
    a hint counts them as in flight; the board's depth, read meanwhile, must not count
    their tickets again. Counted twice, a burst on a loaded machine told its last 38
    clients a whole window late (296 s for a slot at about 240)."""
    clock = FakeClock()
    window = HeldWindow(clock)
    budget = RateBudget(per_minute=1, per_hour=1000, window=window, clock=clock,
                        sleep=clock.sleep)
    window.release.set()
    slot = await budget.acquire(max_wait=0)  # the minute's slot: the window is full
    window.release.clear()
    window.entered.clear()
    waiters = [asyncio.create_task(budget.acquire(max_wait=10 * MINUTE)) for _ in range(3)]
    budget.answered(slot)  # its stamp goes with their round: that round takes the window
    await window.entered.wait()  # the round of those three is under way, held there
    clock.now += 1.0  # the hint reads the board afresh (its copy is a second old)
    # In flight: the answered request (settling) and the three. A newcomer is fourth in
    # line: its slot is the fourth to free, a minute apart.
    assert await budget.backlog(in_flight=4) == 4 * MINUTE - 1.0
    window.release.set()
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


class SlowReadWindow(LocalWindow):
    """A window whose ``ages`` (the read a hint makes) answers once ``release`` is set;
    ``stale``: with what it held when asked (a database read that ran before a round's
    commit and answered after it)."""

    def __init__(self, clock: FakeClock, *, stale: bool = False) -> None:
        super().__init__(clock)
        self.stale = stale
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def ages(self) -> list[float]:
        self.reading.set()
        seen = await super().ages()
        await self.release.wait()
        return seen if self.stale else await super().ages()


async def test_a_request_served_while_a_hint_reads_the_window_counts_once() -> None:
    """A hint counts the queue and the requests in flight at the moment it reads the
    window, not before: a request served while the read waits (seconds, on a loaded
    machine) is a slot taken, not also one ahead."""
    clock = FakeClock()
    window = SlowReadWindow(clock)
    budget = RateBudget(per_minute=1, per_hour=1000, window=window, clock=clock,
                        sleep=clock.sleep)
    hint = asyncio.create_task(budget.backlog(in_flight=1))
    await window.reading.wait()
    await budget.acquire(max_wait=0)  # the request in flight reaches the queue: served
    window.release.set()
    # Its slot frees in a minute, and the newcomer's turn is then.
    assert await hint == MINUTE


async def test_a_hint_reads_the_window_again_when_a_round_ended_during_the_read() -> None:
    """A read of the window that answers after a round took a slot, without it, is read
    again: else the newcomer would be told the slot is free now."""
    clock = FakeClock()
    window = SlowReadWindow(clock, stale=True)
    budget = RateBudget(per_minute=1, per_hour=1000, window=window, clock=clock,
                        sleep=clock.sleep)
    hint = asyncio.create_task(budget.backlog(in_flight=1))
    await window.reading.wait()
    await budget.acquire(max_wait=0)
    window.release.set()
    assert await hint == MINUTE


class SlowDepthBoard(LocalBoard):
    """A board whose ``depth`` answers, once ``release`` is set, with what it held when
    asked (a database read that answered after a round ended)."""

    def __init__(self, window: LocalWindow, clock: FakeClock) -> None:
        super().__init__(window, clock)
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def depth(self) -> dict[Lane, int]:
        seen = await super().depth()
        self.reading.set()
        await self.release.wait()
        return seen


async def test_a_hint_keeps_the_depth_a_round_left_during_its_read() -> None:
    """A round that ends while a hint reads the board's depth leaves its own, newer
    count: the read that answers after it must not replace it with an older one."""
    clock = FakeClock()
    board = SlowDepthBoard(LocalWindow(clock), clock)
    budget = RateBudget(per_minute=1, per_hour=1000, board=board, clock=clock,
                        sleep=clock.sleep)
    await budget.acquire(max_wait=0)  # the minute's slot
    clock.now += 1.0  # the copy of the depth is a second old: the hint reads the board
    hint = asyncio.create_task(budget.backlog(in_flight=2))
    await board.reading.wait()
    rounds = budget.rounds
    waiters = [asyncio.create_task(budget.acquire(max_wait=10 * MINUTE)) for _ in range(2)]
    for _ in range(100):  # the two reach the queue, in a round of their own
        if budget.rounds > rounds:
            break
        await asyncio.sleep(0)
    assert budget.rounds > rounds
    board.release.set()
    # Both wait ahead of the newcomer: the slot frees in 59 s, then a minute apart.
    assert await hint == 3 * MINUTE - 1
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
