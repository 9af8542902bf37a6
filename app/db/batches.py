"""Group commit for statements: concurrent requests' identical small steps, run as one.

A repeat costs the database almost nothing; what it costs the service is the trip to it:
a pooled connection checked out and back, a round trip (PostgreSQL) or a commit and a
wait for the WAL's sync (SQLite), and the event loop's wake-ups around each. Under load
many requests take the same step at once. ``Batches`` runs them together: the calls
made while a batch runs wait for the next one, which takes all of them, so one trip
serves a batch whose size follows the load (one at a time when it is light: no wait is
added to gather more).

The run function gets the items in order and answers one result each, in that order. If
it raises, every call of that batch raises it (the batch is one transaction: none of it
happened). A caller cancelled before its batch started is left out; one cancelled
during its batch does not stop the batch (the others wait on it), and the result is
dropped. A batch takes at most ``limit`` calls, oldest first: a flood of calls is served
in batches of bounded size (on SQLite a batch runs on the event loop's thread, so its
size is how long the loop is held).

``settle``, if given, is awaited by each call once its batch has run, before it
returns: what makes a batch's work final and is slow but shared, a SQLite WAL's sync
(``app.db.durable``), happens while the next batch already runs, and one sync serves
the calls of every batch that ran before it began.

``Held`` keeps what batches run on (a unit of work on a pooled connection) from one
batch to the next while they keep coming: under load the checkout from the pool and
back, more CPU than the batch's own round trip, is paid once, not once a batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Generic, TypeVar

from app.logs import event

log = logging.getLogger("acme_delegate.db")

Item = TypeVar("Item")
Value = TypeVar("Value")
Result = TypeVar("Result")

# Calls in one batch at most. MAX_IN_FLIGHT (500 by default) bounds the calls waiting:
# a full house is served in four batches.
LIMIT = 128


class Batches(Generic[Item, Result]):
    def __init__(self, run: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]], *,
                 settle: Callable[[], Awaitable[None]] | None = None,
                 limit: int = LIMIT) -> None:
        self._run = run
        self._settle = settle
        self._limit = limit
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._draining: asyncio.Task[None] | None = None
        self.batches = 0  # run so far
        self.items = 0  # in them

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, done))
        if self._draining is None:
            # Started on the next turn of the loop: calls made on this one join it.
            self._draining = loop.create_task(self._drain())
        result = await done
        if self._settle is not None:
            await self._settle()  # the next batch may run meanwhile
        return result

    async def _drain(self) -> None:
        try:
            while self._waiting:
                self._waiting = [(i, done) for i, done in self._waiting if not done.done()]
                batch, self._waiting = self._waiting[:self._limit], self._waiting[self._limit:]
                if batch:
                    await self._one(batch)
        finally:
            self._draining = None

    async def _one(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} answered {len(results)} results")
        except Exception as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        except BaseException:
            for _, done in batch:  # the drain itself is cancelled (shutdown)
                done.cancel()
            raise
        for (_, done), result in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(result)


class Held(Generic[Value]):
    """What ``open`` enters (a unit of work on a pooled connection), kept from one use to
    the next, one use at a time, while uses keep coming: let go once none came for
    ``hold`` seconds, at ``close``, or when a use fails (what it held may be broken: the
    failure leaves through it, as it would have without the hold). Whoever makes one
    closes it: what it holds when its event loop ends would be lost, not given back."""

    def __init__(self, open: Callable[[], AbstractAsyncContextManager[Value]], *,
                 hold: float) -> None:
        self._open = open
        self._hold = hold
        self._lock = asyncio.Lock()
        self._held: tuple[AsyncExitStack, Value] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expiring: set[asyncio.Task[None]] = set()
        self.opened = 0  # times ``open`` was entered

    async def use(self, work: Callable[[Value], Awaitable[Result]]) -> Result:
        async with self._lock:
            self._stop_timer()
            if self._held is None:
                stack = AsyncExitStack()
                self._held = stack, await stack.enter_async_context(self._open())
                self.opened += 1
            stack, value = self._held
            try:
                result = await work(value)
            except BaseException as exc:
                self._held = None
                if not await stack.__aexit__(type(exc), exc, exc.__traceback__):
                    raise
                raise AssertionError("what Held keeps swallowed an exception") from exc
            self._timer = asyncio.get_running_loop().call_later(self._hold, self._expire)
            return result

    async def close(self) -> None:
        """Let go of what is held now, and wait for a hold that ended by itself to be
        given back (cancelled midway, that would be lost); a use after this holds
        afresh."""
        await self._let_go(expired=False)
        if self._expiring:
            await asyncio.gather(*self._expiring, return_exceptions=True)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self._expired())
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    async def _expired(self) -> None:
        try:
            await self._let_go(expired=True)
        except Exception as exc:  # given back broken: the pool dropped it
            event(log, "db.batch_release_failed", logging.WARNING,
                  error=type(exc).__name__)

    async def _let_go(self, *, expired: bool) -> None:
        async with self._lock:
            if expired and self._timer is not None:
                return  # used again since: held on
            self._stop_timer()
            if self._held is not None:
                stack, _ = self._held
                self._held = None
                await stack.aclose()
