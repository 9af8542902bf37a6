"""Outer guards every request passes before any route: bounded bodies, bounded load."""

from __future__ import annotations

import asyncio

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY = 16 * 1024  # an acme-dns, httpreq or admin body is well under 1 KiB
BODY_TIMEOUT = 10.0  # seconds for a whole body: a slow sender holds nothing for long


class BodyGuard:
    """Reads each body before the app does, at most MAX_BODY bytes within BODY_TIMEOUT,
    and answers 400/413/408 itself; the app then reads the buffered copy. So no route,
    the admin API's included, can be made to buffer more or wait longer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            if not declared.isdigit():  # bytes.isdigit: ASCII digits only
                await _answer(scope, receive, send, 400, "bad_request")
                return
            if int(declared) > MAX_BODY:
                await _answer(scope, receive, send, 413, "payload_too_large")
                return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > MAX_BODY:
                        await _answer(scope, receive, send, 413, "payload_too_large")
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _answer(scope, receive, send, 408, "request_timeout")
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class InFlightLimit:
    """At most ``limit`` requests in progress; beyond, 503 at once. Connections that have
    not finished sending a request do not count, so slow senders cannot lock others out
    (the server closes them: see app.server)."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            await _answer(scope, receive, send, 503, "overloaded", retry_after=1)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, code: str,
                  retry_after: int | None = None) -> None:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    await JSONResponse({"error": code}, status_code=status, headers=headers)(
        scope, receive, send)
