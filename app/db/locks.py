"""The keys and in-process locks behind ``Database.name_lock`` and ``reconcile_lock``:
an asyncio lock per name in each process, a PostgreSQL advisory lock across replicas."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for PostgreSQL advisory locks (not Python's salted hash)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=b"acme-dlg").digest()
    return int.from_bytes(digest, "big", signed=True)


RECONCILE_KEY = advisory_key("acme-delegate:reconciler")


class LocalLocks:
    """One asyncio lock per name, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(name, (asyncio.Lock(), 0))
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            self._leave(name)

    async def try_hold(self, name: str) -> asyncio.Lock | None:
        """The name's lock if nobody holds or waits for it (taken at once), else None."""
        if name in self._locks:
            return None
        lock = asyncio.Lock()
        self._locks[name] = (lock, 1)
        await lock.acquire()  # a new lock: taken without waiting
        return lock

    def release(self, name: str, lock: asyncio.Lock) -> None:
        lock.release()
        self._leave(name)

    def _leave(self, name: str) -> None:
        lock, users = self._locks[name]
        if users == 1:
            del self._locks[name]
        else:
            self._locks[name] = (lock, users - 1)
