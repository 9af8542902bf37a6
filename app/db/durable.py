"""Group commit for SQLite: durable answers without one fsync per transaction.

SQLite in WAL mode with ``synchronous=FULL`` syncs the WAL file at every commit: 3 ms
each on the benchmark machine, and since SQLite has one writer, a ceiling of ~300
transactions a second however cheap they are. With ``synchronous=NORMAL`` a commit only
appends to the WAL (still safe against a crash of the process; a power loss could undo
the last ones). ``WalSync`` gives back the power-loss guarantee: after its commit, a
writer awaits a sync of the WAL file that started after that commit, and one sync covers
every commit made before it started, so concurrent writers share one. Nothing is
answered, and no DigitalOcean call is made, before the row it depends on is on disk:
what ``synchronous=FULL`` promised, at one fsync per batch. The fsync is made by a
process of its own (``app.db.syncer``: a thread handing its answer back under the GIL
cost the busy loop more than the sync itself), or in a thread where no process can be
started.

Checkpoints (copying the WAL's pages into the database file, and syncing it) are
``WalSync``'s too. SQLite would run one inside the commit that takes the WAL past 1000
pages, and a request's unit commits on the event loop's thread (``app.db.unit``): the
loop would stop for the sync of the database file. So the engine's connections never
checkpoint by themselves (``wal_autocheckpoint=0``, ``app.db.engine``), and when a sync
finds the WAL past ``CHECKPOINT_BYTES`` a checkpoint runs on a connection of its own in a
thread (``_checkpoint_now``); nobody's sync waits for it, unless the WAL has reached
``CEILING`` times that bound while it runs (the checkpoint is behind): then each writer,
once synced, waits for it, and the WAL stops growing. The next write starts the WAL
over once it is all copied; the engine's ``journal_size_limit=0`` then cuts the file
back, so its size is what is left to copy.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from app.db.engine import BUSY_TIMEOUT_MS
from app.db.syncer import ProcessUnavailable, SyncProcess, size_once_synced
from app.logs import event

log = logging.getLogger("acme_delegate.db")

# A WAL this large (SQLite's own default: 1000 pages of 4 KiB) is checkpointed.
CHECKPOINT_BYTES = 4_096_000
# A WAL this many times as large while its checkpoint runs: the checkpoint is behind (its
# thread starved of CPU, or a reader holding the WAL), and writers wait for it once
# synced, instead of growing the WAL without bound.
CEILING = 4


class WalSync:
    def __init__(self, database: Path) -> None:
        self._database = database
        self._wal = f"{database}-wal"
        self._requested = 0  # commits that asked for a sync
        self._synced = 0  # of which this many are known to be on disk
        self._running: asyncio.Task[None] | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        self._next_checkpoint = CHECKPOINT_BYTES  # WAL size that starts the next one
        self._size = 0  # the WAL's, at the last sync
        self._process: SyncProcess | None = SyncProcess(self._wal)
        self.checkpoints = 0  # run so far

    async def __call__(self) -> None:
        """Return once everything this process committed so far is on disk."""
        self._requested += 1
        mine = self._requested
        while self._synced < mine:
            if self._running is None:
                self._running = asyncio.ensure_future(self._sync())
            # Shielded: a cancelled waiter must not cancel the others' sync.
            await asyncio.shield(self._running)
        if self._checkpoint is not None and self._size >= CEILING * CHECKPOINT_BYTES:
            await asyncio.shield(self._checkpoint)

    async def _sync(self) -> None:
        covers = self._requested  # every commit that asked so far came before this sync
        try:
            size = await self._synced_size()
            self._synced = max(self._synced, covers)
        finally:
            self._running = None
        self._maybe_checkpoint(size)

    async def _synced_size(self) -> int:
        """Sync the WAL in the sync process (``app.db.syncer``), or in a thread where no
        process can be started; its size."""
        if self._process is not None:
            try:
                return await self._process.sync()
            except ProcessUnavailable as exc:
                event(log, "db.sync_process_unavailable", logging.WARNING,
                      error=str(exc.__cause__ or exc), effect="the WAL is synced in a thread")
                self._process = None
        return await asyncio.to_thread(size_once_synced, self._wal)

    async def close(self) -> None:
        """Stop the sync process (a sync after this starts it again)."""
        if self._process is not None:
            await self._process.close()

    def _maybe_checkpoint(self, wal_size: int) -> None:
        """Start a checkpoint when the WAL has grown past ``CHECKPOINT_BYTES``, unless one
        runs. A WAL that a checkpoint could not copy in full (a reader held on to it)
        gets the next one when it has grown by a quarter as much again."""
        self._size = wal_size
        if wal_size < CHECKPOINT_BYTES:
            self._next_checkpoint = CHECKPOINT_BYTES  # started over since
        elif wal_size >= self._next_checkpoint and self._checkpoint is None:
            self._next_checkpoint = wal_size + CHECKPOINT_BYTES // 4
            self._checkpoint = asyncio.ensure_future(self._run_checkpoint())

    async def _run_checkpoint(self) -> None:
        try:
            await asyncio.to_thread(self._checkpoint_now)
            self.checkpoints += 1
        except (sqlite3.Error, OSError) as exc:
            # Harmless but for the WAL's size: the next sync's size tries again.
            event(log, "db.checkpoint_failed", logging.WARNING, error=type(exc).__name__)
        finally:
            self._checkpoint = None

    def _checkpoint_now(self) -> None:
        """PASSIVE first: the bulk of the copying and the database file's sync, with
        writers going on meanwhile. Then RESTART, which waits for the write lock (here,
        in this thread) and holds it only to copy what was written meanwhile and sync
        again: with nothing left to copy the next writer starts the WAL over (a PASSIVE
        checkpoint alone, under steady writes, rarely ends with nothing left, and the
        WAL would grow). A request's unit that meets the lock waits for it with the
        loop free (app.db.unit)."""
        conn = sqlite3.connect(self._database, isolation_level=None,
                               timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        finally:
            conn.close()
