"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for load generation.

httpx costs far more CPU per request than the service's fast path; on a 2-core machine
the load generator would then measure itself. This client writes a request and reads one
``Content-Length`` (or chunked) response; nothing else.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from tests.support.seed import Credential


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class HttpClient:
    """One connection to ``host:port``, reopened when the server closes it."""

    def __init__(self, host: str, port: int, *, timeout: float = 60.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """Send one POST and read its response; a broken connection is reopened once."""
        for attempt in (1, 2):
            fresh = self._writer is None
            if fresh:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), self.timeout)
            try:
                return await self._exchange(path, body, headers)
            except (asyncio.IncompleteReadError, ConnectionError):
                await self.close()
                # A kept-alive connection the server closed meanwhile: retry on a new one.
                if fresh or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _exchange(self, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        assert self._reader is not None and self._writer is not None
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 "Content-Type: application/json", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        async with asyncio.timeout(self.timeout):
            await self._writer.drain()
            head = await self._reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split()[1])
            parsed: dict[str, str] = {}
            for line in header_lines:
                if line:
                    key, _, value = line.partition(":")
                    parsed[key.strip().lower()] = value.strip()
            if "content-length" in parsed:
                data = await self._reader.readexactly(int(parsed["content-length"]))
            elif parsed.get("transfer-encoding", "").lower() == "chunked":
                data = await self._read_chunked()
            else:
                data = b""
        if parsed.get("connection", "").lower() == "close":
            await self.close()
        return Reply(status, parsed, data)

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        data = b""
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await self._reader.readexactly(size + 2)
            data += chunk[:-2]
            if size == 0:
                return data


def update_request(credential: Credential, value: str) -> tuple[bytes, dict[str, str]]:
    """The acme-dns ``/update`` body and headers for one value."""
    body = json.dumps({"subdomain": credential.label, "txt": value}).encode()
    return body, {"X-Api-User": credential.username, "X-Api-Key": credential.key}


async def update(client: HttpClient, credential: Credential, value: str) -> tuple[Reply, float]:
    """POST /update; returns the reply and the seconds it took."""
    body, headers = update_request(credential, value)
    started = time.perf_counter()
    reply = await client.post("/update", body, headers)
    return reply, time.perf_counter() - started
