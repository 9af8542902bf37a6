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
dropped. ``idle``, if given, is awaited whenever no call is left waiting (what the run
function holds between batches, a connection say, can go back then); calls made
meanwhile are served after it. A batch takes at most ``limit`` calls, oldest first: a
flood of calls is served in batches of bounded size (on SQLite a batch runs on the
event loop's thread, so its size is how long the loop is held).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from app.logs import event

log = logging.getLogger("acme_delegate.db")

Item = TypeVar("Item")
Result = TypeVar("Result")

# Calls in one batch at most. MAX_IN_FLIGHT (500 by default) bounds the calls waiting:
# a full house is served in four batches.
LIMIT = 128


class Batches(Generic[Item, Result]):
    def __init__(self, run: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]], *,
                 idle: Callable[[], Awaitable[None]] | None = None,
                 limit: int = LIMIT) -> None:
        self._run = run
        self._idle = idle
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
        return await done

    async def _drain(self) -> None:
        try:
            while self._waiting:
                while self._waiting:
                    self._waiting = [(i, done) for i, done in self._waiting if not done.done()]
                    batch, self._waiting = (self._waiting[:self._limit],
                                            self._waiting[self._limit:])
                    if batch:
                        await self._one(batch)
                if self._idle is not None:
                    try:
                        await self._idle()
                    except Exception as exc:  # the calls waiting now are still served
                        event(log, "db.batch_idle_failed", logging.WARNING,
                              error=type(exc).__name__)
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
