"""The WAL's sync process (app.db.syncer): a sync answers only once the file is on disk,
a unit that wrote returns only after a sync that covers its commit, the child goes when
its parent does, a dead child is replaced, a failure reaches the caller, and where no
process can start the sync runs in a thread."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.db import syncer
from app.db.durable import WalSync
from app.db.store import SqlStore
from app.db.syncer import SyncProcess
from tests.db.rows import NAME, VALUE, live_account, store_on
from tests.db.test_sqlite_loop import database, event, size


@pytest.fixture
async def process(tmp_path: Path) -> AsyncIterator[SyncProcess]:
    sync = SyncProcess(tmp_path / "file")
    try:
        yield sync
    finally:
        await sync.close()


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[SqlStore]:
    async with store_on(sqlite_url) as store:
        yield store


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether the process ``pid`` exits within ``within`` seconds (a zombie nobody reaped
    has exited too)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes the sync process answers, in order."""
    answered: list[int] = []
    real = SyncProcess.sync

    async def sync(self: SyncProcess) -> int:
        size = await real(self)
        answered.append(size)
        return size

    monkeypatch.setattr(SyncProcess, "sync", sync)
    return answered


async def test_a_sync_answers_the_files_size_and_a_missing_file_nothing(
        process: SyncProcess, tmp_path: Path) -> None:
    assert await process.sync() == 0  # no file yet: nothing to sync
    (tmp_path / "file").write_bytes(b"x" * 1234)
    assert await process.sync() == 1234
    assert process.started == 1 and process.pid is not None


async def test_a_unit_that_wrote_returns_after_a_sync_of_its_commit(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each write's unit returns only once a sync answered a WAL at least as large as the
    commit left it: the sync began after the commit, so it covers it."""
    account = await live_account(store)
    answered = spy(monkeypatch)
    wal = f"{database(store)}-wal"
    for _ in range(5):
        at = datetime.now(UTC)
        async with store.unit() as unit:
            await unit.audit(event(at))
            await unit.touch_account(account.id, at)
        assert answered and answered[-1] >= size(wal)
    assert len(answered) >= 5


async def test_the_child_exits_when_closed(process: SyncProcess) -> None:
    await process.sync()
    pid = process.pid
    assert pid is not None
    await process.close()
    assert process.pid is None and gone(pid)


def test_the_child_exits_when_its_parent_dies(tmp_path: Path) -> None:
    """A parent gone outright (no close, no finalizer): the child sees its socket close."""
    parent = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import asyncio, os
            from app.db.syncer import SyncProcess
            async def main():
                sync = SyncProcess({str(tmp_path / "file")!r})
                await sync.sync()
                print(sync.pid, flush=True)
                os._exit(0)
            asyncio.run(main())
            """)], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[2], check=True)
    assert gone(int(parent.stdout.strip()))


async def test_a_dead_child_is_replaced_and_the_sync_made_again(
        process: SyncProcess, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"y" * 10)
    assert await process.sync() == 10
    first = process.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    assert gone(first)
    assert await process.sync() == 10
    assert process.started == 2 and process.pid != first


def test_a_child_is_watched_by_the_event_loop_that_asks(tmp_path: Path) -> None:
    """A sync from a second event loop (a CLI's second ``asyncio.run``) gets its answer:
    the first loop, which watched the child, is gone."""
    process = SyncProcess(tmp_path / "file")
    (tmp_path / "file").write_bytes(b"z" * 7)
    try:
        assert asyncio.run(process.sync()) == 7
        first = process.pid
        assert asyncio.run(asyncio.wait_for(process.sync(), 10)) == 7
        assert process.started == 2 and first is not None and gone(first)
    finally:
        asyncio.run(process.close())


async def test_a_terminals_interrupt_does_not_stop_the_child(process: SyncProcess) -> None:
    """Ctrl-C reaches the server's whole process group: the server shuts down, and may
    still sync while it does."""
    await process.sync()
    pid = process.pid
    assert pid is not None
    os.kill(pid, signal.SIGINT)
    assert not gone(pid, within=0.3)
    assert await process.sync() == 0
    assert process.started == 1


async def test_a_failed_sync_raises_the_childs_error() -> None:
    process = SyncProcess("/dev/null")  # a device without fsync: EINVAL
    try:
        with pytest.raises(OSError) as raised:
            await process.sync()
        assert raised.value.errno == errno.EINVAL
        assert "/dev/null" in str(raised.value)
        assert process.started == 1  # a failed sync is an answer, not a dead child
    finally:
        await process.close()


async def test_an_answer_nobody_waits_for_is_not_taken_for_the_next(
        process: SyncProcess, tmp_path: Path) -> None:
    """A sync cancelled while its answer is on its way: the next sync waits for its own
    answer, not that one (which may not cover what the next was asked for)."""
    file = tmp_path / "file"
    file.write_bytes(b"a" * 10)
    await process.sync()  # the child is up
    stale = asyncio.ensure_future(process.sync())
    await asyncio.sleep(0)  # asked
    sock = process._child[0] if process._child else None
    assert sock is not None
    # Its answer (size 10) is in, read by nobody: the loop is not turning.
    assert select.select([sock], [], [], 10)[0]
    file.write_bytes(b"a" * 20)
    stale.cancel()
    # The loop's next turn runs the cancellation, then the next sync's ask, and only then
    # reads the socket: the stale answer comes while the next sync waits.
    fresh = asyncio.ensure_future(process.sync())
    assert await fresh == 20
    assert stale.cancelled()


async def test_where_no_process_starts_the_wal_is_synced_in_a_thread(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def no_processes(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "not allowed here")

    monkeypatch.setattr("app.db.syncer.subprocess.Popen", no_processes)
    synced: list[str] = []
    real = syncer.size_once_synced

    def in_a_thread(path: str) -> int:
        synced.append(path)
        return real(path)

    monkeypatch.setattr("app.db.durable.size_once_synced", in_a_thread)
    account = await live_account(store)
    with caplog.at_level(logging.WARNING, logger="acme_delegate.db"):
        async with store.unit() as unit:
            await unit.record_repeat(NAME, VALUE, datetime.now(UTC), account_id=account.id,
                                     event=event(datetime.now(UTC)))
    assert synced and synced[-1] == f"{database(store)}-wal"
    assert "db.sync_process_unavailable" in caplog.text


async def test_a_store_stops_its_sync_process_when_closed(sqlite_url: str) -> None:
    async with store_on(sqlite_url) as store:
        await live_account(store)
        durable = store._durable
        assert isinstance(durable, WalSync) and durable._process is not None
        pid = durable._process.pid
        assert pid is not None
    assert gone(pid)
