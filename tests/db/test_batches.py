"""Group commit for statements (app.db.batches): who shares a batch, and what a failure
or a cancellation does to the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy.pool import QueuePool

from app.core.models import Account, AuditEvent, AuditQuery
from app.db.batches import Batches, Held
from app.db.store import SqlStore
from tests.db.rows import VALUE, live_account


class Recorder:
    """A run function that records its batches and can be held, or made to fail once."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail: Exception | None = None

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        await self.release.wait()
        if self.fail is not None:
            failure, self.fail = self.fail, None  # this batch only
            raise failure
        return [item * 10 for item in items]


async def test_calls_made_while_a_batch_runs_share_the_next_one() -> None:
    run = Recorder()
    batches = Batches(run)
    run.release.clear()
    first = asyncio.ensure_future(batches(1))
    await asyncio.sleep(0)  # the first batch has started, with the one call made so far
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(batches(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)
    run.release.set()
    assert await first == 10
    assert await asyncio.gather(*rest) == [20, 30, 40]
    assert run.batches == [[1], [2, 3, 4]]
    assert (batches.batches, batches.items) == (2, 4)


async def test_calls_made_on_the_same_turn_share_a_batch() -> None:
    run = Recorder()
    batches = Batches(run)
    assert await asyncio.gather(*(batches(n) for n in range(5))) == [0, 10, 20, 30, 40]
    assert run.batches == [[0, 1, 2, 3, 4]]


async def test_a_failed_batch_fails_its_calls_only() -> None:
    run = Recorder()
    batches = Batches(run)
    run.release.clear()
    run.fail = ConnectionResetError("the database went away")
    doomed = [asyncio.ensure_future(batches(n)) for n in (1, 2)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = asyncio.ensure_future(batches(3))
    await asyncio.sleep(0)
    run.release.set()
    for call in doomed:
        with pytest.raises(ConnectionResetError):
            await call
    assert await later == 30
    assert run.batches == [[1, 2], [3]]


async def test_a_cancelled_call_is_left_out_or_does_not_stop_its_batch() -> None:
    run = Recorder()
    batches = Batches(run)
    run.release.clear()
    running = asyncio.ensure_future(batches(1))
    neighbour = asyncio.ensure_future(batches(2))
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # both in the running batch
    queued = asyncio.ensure_future(batches(3))
    kept = asyncio.ensure_future(batches(4))
    await asyncio.sleep(0)
    running.cancel()  # during its batch
    queued.cancel()  # before its batch
    await asyncio.sleep(0)
    run.release.set()
    assert await neighbour == 20
    assert await kept == 40
    assert running.cancelled() and queued.cancelled()
    assert run.batches == [[1, 2], [4]]


async def test_a_batch_that_answers_too_few_results_fails_every_call() -> None:
    async def short(items: Sequence[int]) -> list[int]:
        return list(items)[:-1]

    batches = Batches(short)
    calls = [asyncio.ensure_future(batches(n)) for n in (1, 2)]
    for call in calls:
        with pytest.raises(RuntimeError, match="answered 1 results"):
            await call


async def repeat(store: SqlStore, account: Account, at: datetime) -> bool:
    """A request's unit: the account read by its username, then the repeat of VALUE at
    its name."""
    async with store.unit() as unit:
        found = await unit.account(account.username)
        assert found is not None
        return await unit.record_repeat(found.name, VALUE, at, account_id=found.id,
                                        event=AuditEvent(at=at, event="update",
                                                         outcome="ok", name=found.name))


async def test_concurrent_repeats_share_one_transaction_and_each_is_recorded(
        store: SqlStore) -> None:
    """Eight requests' repeats at eight names: fewer batches than repeats (one trip
    each), and every repeat has its value bumped, its last-used and its audit row."""
    accounts = [await live_account(store, f"h{i}") for i in range(8)]
    at = datetime.now(UTC)
    assert await asyncio.gather(*(repeat(store, a, at) for a in accounts))
    batches = store._batches
    assert batches is not None and batches.repeats.items == 8
    assert batches.repeats.batches < 8
    for i, account in enumerate(accounts):
        (value,) = await store.values_at(f"_acme-challenge.h{i}.example.com")
        assert value.updated_at == at
        assert (await store.get_account(account.username)).last_used_at == at  # type: ignore[union-attr]
    assert len(await store.audit_events(AuditQuery(event="update"))) == 8


async def test_each_call_settles_before_it_returns_while_the_next_batch_runs() -> None:
    """With ``settle`` (a SQLite WAL's sync): a call returns only once settled, and the
    batch after it does not wait for that: it runs meanwhile."""
    run = Recorder()
    settled = asyncio.Event()
    settling: list[int] = []

    async def settle() -> None:
        settling.append(len(run.batches))
        await settled.wait()

    batches = Batches(run, settle=settle)
    first = asyncio.ensure_future(batches(1))
    for _ in range(5):
        await asyncio.sleep(0)
    assert run.batches == [[1]] and settling == [1] and not first.done()
    second = asyncio.ensure_future(batches(2))
    for _ in range(5):
        await asyncio.sleep(0)
    assert run.batches == [[1], [2]]  # ran while the first call still settles
    assert not first.done() and not second.done()
    settled.set()
    assert (await first, await second) == (10, 20)


class Resource:
    """What ``Held`` holds: counts its openings and records how each ended."""

    def __init__(self) -> None:
        self.endings: list[str] = []
        self.open = 0

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[int]:
        self.open += 1
        try:
            yield len(self.endings)
        except BaseException as exc:
            self.endings.append(type(exc).__name__)
            raise
        finally:
            self.open -= 1
        self.endings.append("closed")


async def test_held_serves_uses_in_a_row_on_one_opening_and_lets_go_when_they_stop() -> None:
    resource = Resource()
    held = Held(resource, hold=0.3)
    seen = [await held.use(lambda value: asyncio.sleep(0, value)) for _ in range(3)]
    assert seen == [0, 0, 0] and held.opened == 1 and resource.open == 1
    await asyncio.sleep(0.8)  # no use for longer than the hold
    assert resource.open == 0 and resource.endings == ["closed"]
    assert await held.use(lambda value: asyncio.sleep(0, value)) == 1  # opened afresh
    assert held.opened == 2
    await held.close()
    assert resource.open == 0 and resource.endings == ["closed", "closed"]


async def test_held_lets_go_when_a_use_fails_and_the_failure_goes_through() -> None:
    resource = Resource()
    held = Held(resource, hold=60)

    async def fails(_value: int) -> None:
        raise ConnectionResetError("lost")

    with pytest.raises(ConnectionResetError):
        await held.use(fails)
    assert resource.open == 0 and resource.endings == ["ConnectionResetError"]
    assert await held.use(lambda value: asyncio.sleep(0, value)) == 1
    await held.close()
    assert resource.open == 0


async def test_held_runs_one_use_at_a_time_and_close_waits_for_the_one_running() -> None:
    resource = Resource()
    held = Held(resource, hold=60)
    running: list[int] = []
    gate = asyncio.Event()

    async def work(value: int) -> int:
        running.append(value)
        assert len(running) == 1  # alone on what is held
        await gate.wait()
        running.pop()
        return value

    uses = [asyncio.ensure_future(held.use(work)) for _ in range(2)]
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(held.close())
    await asyncio.sleep(0.01)
    assert not closing.done() and resource.open == 1
    gate.set()
    assert await asyncio.gather(*uses) == [0, 0]
    await closing  # after the uses before it, and nothing left held (no timer either)
    assert resource.open == 0 and resource.endings == ["closed"]


@pytest.mark.postgres
async def test_postgres_batches_one_after_another_share_a_connection(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeats arriving while a batch runs form the next one, on the connection the
    batch before had: one checkout for the reads and one for the repeats, however many
    batches follow each other; each connection goes back to the pool once no batch came
    for HOLD_SECONDS, and at the store's close."""
    from sqlalchemy import event as sa_event

    from app.db import store as store_module
    from app.db.engine import create_engine

    monkeypatch.setattr(store_module, "HOLD_SECONDS", 0.3)
    engine = create_engine(postgres_url, ping_idle=3600)
    try:
        store = SqlStore(engine)
        accounts = [await live_account(store, f"h{i}") for i in range(24)]
        at = datetime.now(UTC)
        checkouts: list[object] = []
        sa_event.listen(engine.sync_engine.pool, "checkout",
                        lambda *args: checkouts.append(args))

        waves = []
        for wave in range(3):
            waves += [asyncio.ensure_future(repeat(store, a, at))
                      for a in accounts[wave * 8:wave * 8 + 8]]
            for _ in range(3):
                await asyncio.sleep(0)  # the wave before is on its way
        assert all(await asyncio.gather(*waves))
        batches = store._batches
        assert batches is not None and batches.repeats.batches > 1
        assert len(checkouts) == 2
        pool = engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedout() == 2  # held for the next batches
        await asyncio.sleep(0.05)
        assert await repeat(store, accounts[0], at)  # within the hold: the same ones
        assert len(checkouts) == 2
        await asyncio.sleep(0.6)
        assert pool.checkedout() == 0  # no batch for longer than the hold: given back
        assert await repeat(store, accounts[0], at)
        assert len(checkouts) == 4 and pool.checkedout() == 2
        await store.close()
        assert pool.checkedout() == 0
    finally:
        await store.close()
        await engine.dispose()


@pytest.mark.postgres
async def test_the_service_gives_its_batches_connection_back_when_it_stops(
        postgres_url: str) -> None:
    """The connection the batches hold goes back before the engine is disposed of: a
    service stopping mid-load leaves no connection to be dropped with the process."""
    import httpx

    from app.wiring import build_services
    from tests.conftest import settings_maker

    async with (httpx.AsyncClient(transport=httpx.MockTransport(
                    lambda _: httpx.Response(404))) as http,
                build_services(settings_maker(postgres_url)(), http=http) as services):
        store = services.store
        assert isinstance(store, SqlStore)
        account = await live_account(store)
        assert await repeat(store, account, datetime.now(UTC))
        pool = services.engine.sync_engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.checkedout() == 2  # held for the next batches (reads, repeats)
    assert pool.checkedout() == 0


async def test_sqlite_account_reads_need_neither_the_pool_nor_the_write_lock(
        sqlite_url: str) -> None:
    """On a SQLite file a unit reads its account on a read-only connection of its own
    (app.db.unit.LoopReader): with the pool's one connection taken and another process
    holding the write lock, the read still answers at once, and sees what was committed
    last."""
    import sqlite3

    from sqlalchemy import text

    from app.db.engine import create_engine, sqlite_path
    from tests.db.rows import NAME

    engine = create_engine(sqlite_url)
    try:
        store = SqlStore(engine)
        account = await live_account(store)
        path = sqlite_path(engine.url)
        assert path is not None
        writer = sqlite3.connect(path, isolation_level=None)
        try:
            async with engine.connect() as taken:  # the pool's one connection
                await taken.execute(text("SELECT 1"))
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("UPDATE accounts SET note = 'mid-edit'")
                async with asyncio.timeout(1):
                    async with store.unit() as unit:
                        found = await unit.account(account.username)
                assert found is not None and found.note is None  # not committed yet
                writer.execute("COMMIT")
                async with asyncio.timeout(1):
                    async with store.unit() as unit:
                        found = await unit.account(account.username)
                assert found is not None and found.note == "mid-edit"
                assert found.name == NAME
        finally:
            writer.close()
    finally:
        await store.close()
        await engine.dispose()


async def test_a_flood_of_calls_is_served_in_batches_of_bounded_size_oldest_first() -> None:
    run = Recorder()
    batches = Batches(run, limit=128)
    assert await asyncio.gather(*(batches(n) for n in range(300))) == [
        n * 10 for n in range(300)]
    assert [len(batch) for batch in run.batches] == [128, 128, 44]
    assert run.batches[0] == list(range(128))


async def test_held_close_lets_a_hold_that_ended_finish_giving_back() -> None:
    """A hold that ended by itself is being given back (slowly) when ``close`` comes:
    ``close`` waits for it instead of cutting it short."""
    ended: list[str] = []
    leaving = asyncio.Event()

    @asynccontextmanager
    async def slow_to_leave() -> AsyncIterator[int]:
        yield 0
        leaving.set()
        await asyncio.sleep(0.05)  # the connection going back to the pool
        ended.append("given back")

    held = Held(slow_to_leave, hold=0.01)
    await held.use(lambda value: asyncio.sleep(0, value))
    await leaving.wait()  # the hold ended; giving back has begun
    await held.close()
    assert ended == ["given back"]
