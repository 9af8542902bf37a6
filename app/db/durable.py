"""Group commit for SQLite: durable answers without one fsync per transaction.

SQLite in WAL mode with ``synchronous=FULL`` syncs the WAL file at every commit: 3 ms
each on the benchmark machine, and since SQLite has one writer, a ceiling of ~300
transactions a second however cheap they are. With ``synchronous=NORMAL`` a commit only
appends to the WAL (still safe against a crash of the process; a power loss could undo
the last ones). ``WalSync`` gives back the power-loss guarantee: after its commit, a
writer awaits a sync of the WAL file that started after that commit, and one sync covers
every commit made before it started, so concurrent writers share one. Nothing is
answered, and no DigitalOcean call is made, before the row it depends on is on disk:
what ``synchronous=FULL`` promised, at one fsync per batch.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


class WalSync:
    def __init__(self, database: Path) -> None:
        self._wal = f"{database}-wal"
        self._requested = 0  # commits that asked for a sync
        self._synced = 0  # of which this many are known to be on disk
        self._running: asyncio.Task[None] | None = None

    async def __call__(self) -> None:
        """Return once everything this process committed so far is on disk."""
        self._requested += 1
        mine = self._requested
        while self._synced < mine:
            if self._running is None:
                self._running = asyncio.ensure_future(self._sync())
            # Shielded: a cancelled waiter must not cancel the others' sync.
            await asyncio.shield(self._running)

    async def _sync(self) -> None:
        covers = self._requested  # every commit that asked so far came before this sync
        try:
            await asyncio.to_thread(self._fsync)
            self._synced = max(self._synced, covers)
        finally:
            self._running = None

    def _fsync(self) -> None:
        try:
            fd = os.open(self._wal, os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL: everything was checkpointed (and synced) into the database
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
