"""A file's syncs, made by a small process of its own: ``SyncProcess``.

``app.db.durable`` syncs the SQLite WAL once per batch of commits, off the event loop's
thread (a sync can stall for 100 ms on a busy disk; the loop must not). A thread was
the obvious place, and under load it was the expensive one: the thread hands its answer
back under the GIL, which the busy loop holds, so every sync became a forced GIL switch
plus the executor's wake-ups, several times the sync's own CPU (bench/README.md,
"The WAL's sync in a process of its own"). A process has an interpreter of its own: a
sync is one datagram each way on a socket pair the loop watches, and the loop never
waits for anything but its own selector.

``fsync`` on any descriptor of a file writes out every modified page of that file,
whichever process wrote it: the child's sync covers the parent's commits.

The protocol, on a ``SOCK_SEQPACKET`` pair (datagrams: one message per ``recv``):
the parent sends a sync's number (``=Q``); the child syncs the file it was started for
and answers the number and the file's size (``=Qq``), or minus the ``errno`` when the
sync failed. A missing file answers size 0: nothing of it is left to sync. The
number lets the parent drop the answer of a sync it stopped waiting for. The child
reads nothing else, imports only the standard library (it runs as ``python -I -S``
on this file), ignores SIGINT (a terminal's Ctrl-C is for the server, whose shutdown
may still want a sync) and exits when the parent's end closes, the parent's exit
included.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import struct
import subprocess
import sys
import weakref
from typing import TYPE_CHECKING

_ASK = struct.Struct("=Q")
_ANSWER = struct.Struct("=Qq")

# How long ``close`` waits for the child to exit once its socket closed.
EXIT_SECONDS = 5.0


if TYPE_CHECKING:
    _Reaper = weakref.finalize[[socket.socket, subprocess.Popen[bytes]], "SyncProcess"]


class ProcessUnavailable(OSError):
    """The sync process could not be started (its cause says why)."""


class SyncProcess:
    """Syncs of ``path`` (``await sync()``: its size once synced), one at a time, made by
    a child process started at the first and started again if it ever dies (a sync is
    safe to repeat: the one that failed is made again, once)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._child: tuple[socket.socket, subprocess.Popen[bytes]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the one watching the child
        self._reaper: _Reaper | None = None
        self._burying: set[asyncio.Future[int]] = set()
        self._asked = 0  # the last sync's number
        self._waiting: asyncio.Future[int] | None = None
        self.started = 0  # children started so far

    @property
    def pid(self) -> int | None:
        return self._child[1].pid if self._child is not None else None

    async def sync(self) -> int:
        """Sync the file; its size. ``ProcessUnavailable`` if no child can be started,
        ``OSError`` if the sync failed (with the child's ``errno``) or the child died
        twice in a row."""
        try:
            return await self._once()
        except ConnectionError:  # the child died: a new one makes it again
            return await self._once()

    async def _once(self) -> int:
        if self._waiting is not None:
            raise RuntimeError("one sync at a time")
        loop = asyncio.get_running_loop()
        sock = self._started(loop)
        self._asked += 1
        waiting: asyncio.Future[int] = loop.create_future()
        self._waiting = waiting
        try:
            try:
                sock.send(_ASK.pack(self._asked))
            except OSError as exc:  # the child is gone
                self._bury(self._stop())
                raise ConnectionError("the sync process is gone") from exc
            size = await waiting
        finally:
            self._waiting = None
        if size < 0:
            raise OSError(-size, f"sync of {self._path}: {os.strerror(-size)}")
        return size

    def _started(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        if self._child is not None and self._loop is not loop:
            # Watched by another event loop (a CLI's earlier ``asyncio.run``, say), which
            # would never hear the answer: a child for this one.
            self._bury(self._stop())
        if self._child is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                child = subprocess.Popen(  # noqa: S603 - this file, with our own interpreter
                    [sys.executable, "-I", "-S", __file__, self._path, str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL)
            except OSError as exc:
                ours.close()
                raise ProcessUnavailable("the sync process did not start") from exc
            finally:
                theirs.close()
            ours.setblocking(False)
            loop.add_reader(ours, self._answered, ours)
            self._child, self._loop = (ours, child), loop
            # Never closed (a test's store, say): stopped when this goes, or at exit.
            self._reaper = weakref.finalize(self, _reap, ours, child)
            self.started += 1
        return self._child[0]

    def _answered(self, sock: socket.socket) -> None:
        try:
            message = sock.recv(_ANSWER.size)
        except BlockingIOError:
            return
        except OSError:
            message = b""
        waiting = self._waiting
        if len(message) != _ANSWER.size:  # the child is gone (or not ours)
            self._bury(self._stop())
            if waiting is not None and not waiting.done():
                waiting.set_exception(ConnectionError("the sync process is gone"))
            return
        number, size = _ANSWER.unpack(message)
        if waiting is not None and not waiting.done() and number == self._asked:
            waiting.set_result(size)
        # else: the answer to a sync nobody waits for any more

    def _stop(self) -> subprocess.Popen[bytes] | None:
        """Stop watching the child and close our end: it exits when it sees that."""
        if self._child is None:
            return None
        sock, child = self._child
        self._child = None
        if self._reaper is not None:
            self._reaper.detach()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock)
        sock.close()
        return child

    def _bury(self, child: subprocess.Popen[bytes] | None) -> None:
        """Reap a child that died (or closed its end: killed, then), in a thread."""
        if child is None or child.poll() is not None:
            return
        child.kill()
        task = asyncio.ensure_future(asyncio.to_thread(child.wait))
        self._burying.add(task)
        task.add_done_callback(self._burying.discard)

    async def close(self) -> None:
        """Stop the child (a sync after this starts another)."""
        child = self._stop()
        if child is not None:
            await asyncio.to_thread(_reap, None, child)
        if self._burying:
            await asyncio.gather(*self._burying)


def _reap(sock: socket.socket | None, child: subprocess.Popen[bytes]) -> None:
    """Close our end (the child exits when it sees that) and wait for the child."""
    if sock is not None:
        sock.close()
    try:
        child.wait(EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def size_once_synced(path: str) -> int:
    """Sync the file at ``path``; its size (0, and nothing synced, when there is none)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def serve(sock: socket.socket, path: str) -> None:
    """The child: answer each sync asked on ``sock`` until it closes."""
    while True:
        try:
            message = sock.recv(_ASK.size)
        except ConnectionError:
            return
        if len(message) != _ASK.size:
            return  # closed (or garbage: nobody of ours sends that)
        (number,) = _ASK.unpack(message)
        try:
            size = size_once_synced(path)
        except OSError as exc:
            size = -(exc.errno or errno.EIO)
        try:
            sock.send(_ANSWER.pack(number, size))
        except ConnectionError:  # BrokenPipeError among them
            return


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(socket.socket(fileno=int(sys.argv[2])), sys.argv[1])
