"""A loopback relay in front of PostgreSQL that counts round trips: what a client costs the
database in waits, whatever its driver does (asyncpg's prepared statements, SQLAlchemy's
BEGIN, a pool's ping).

A round trip is a frontend message the client then waits on: ``Sync`` (the end of an
extended-query batch: Parse/Bind/Execute...) or ``Query`` (a simple query). The relay
reads the client's messages as the protocol frames them (a length after a type byte;
the startup packets have no type byte), so it needs the connection in clear
(``sslmode=disable`` in the URL it is given)."""

from __future__ import annotations

import asyncio
import contextlib
import struct

from sqlalchemy.engine import make_url

_UNTYPED = (80877103, 80877104)  # SSLRequest, GSSENCRequest: the startup packet follows
_WAITS = (b"S", b"Q")


class RoundTripCounter:
    """``async with RoundTripCounter(url) as relay``: ``relay.url`` reaches the same
    database through the relay; ``relay.count`` is the round trips sent through it."""

    def __init__(self, url: str) -> None:
        self._target = make_url(url)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.count = 0
        self.url = ""

    async def __aenter__(self) -> RoundTripCounter:
        host = self._target.host or "127.0.0.1"
        self._server = await asyncio.start_server(self._accept, host, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = (self._target.set(port=port)
                    .update_query_dict({"sslmode": "disable"})
                    .render_as_string(hide_password=False))
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self._server.wait_closed()

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(
            self._target.host or "127.0.0.1", self._target.port or 5432)
        up = asyncio.ensure_future(self._relay(client_r, server_w, count=True))
        down = asyncio.ensure_future(self._relay(server_r, client_w, count=False))
        self._tasks |= {up, down}
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
                self._tasks.discard(task)
            for writer in (client_w, server_w):
                writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                     count: bool) -> None:
        pending = b""
        started = False  # past the startup packet: every message has a type byte
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
            if not count:
                continue
            pending += data
            while True:
                if not started:
                    if len(pending) < 8:
                        break
                    (length, code) = struct.unpack("!ii", pending[:8])
                    if len(pending) < length:
                        break
                    pending = pending[length:]
                    started = code not in _UNTYPED
                    continue
                if len(pending) < 5:
                    break
                (length,) = struct.unpack("!i", pending[1:5])
                if len(pending) < 1 + length:
                    break
                if pending[:1] in _WAITS:
                    self.count += 1
                pending = pending[1 + length:]
