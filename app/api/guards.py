"""Outer guards every request passes before any route: bounded bodies, bounded load."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.request import BODY

MAX_BODY = 16 * 1024  # an acme-dns, httpreq or admin body is well under 1 KiB
BODY_TIMEOUT = 10.0  # seconds for a whole body: a slow sender holds nothing for long


class BodyGuard:
    """Reads each body before the app does, at most MAX_BODY bytes within ``timeout``
    (BODY_TIMEOUT), and answers 400/413/408 itself; the app then reads the buffered copy
    (``app.api.request.request_body``).
    So no route, the admin API's included, can be made to buffer more or wait longer. It
    runs outside InFlightLimit: a body still arriving holds no in-flight slot."""

    def __init__(self, app: ASGIApp, *, timeout: float = BODY_TIMEOUT) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            if not declared.isdigit():  # bytes.isdigit: ASCII digits only
                await _answer(scope, receive, send, 400, "bad_request", close=True)
                return
            if int(declared) > MAX_BODY:
                await _answer(scope, receive, send, 413, "payload_too_large", close=True)
                return
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > MAX_BODY:
                        await _answer(scope, receive, send, 413, "payload_too_large", close=True)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _answer(scope, receive, send, 408, "request_timeout", close=True)
            return
        body = b"".join(chunks)
        scope[BODY] = body
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


IN_FLIGHT_RELEASE = "acme_delegate.in_flight_release"


def leave_in_flight(scope: Scope) -> None:
    """This request's work is done and it only waits (for DNS to serve its value): it
    stops counting against the in-flight limit, so slow nameservers cannot exhaust it."""
    release = scope.get(IN_FLIGHT_RELEASE)
    if release is not None:
        release()


class InFlightLimit:
    """At most ``limit`` requests in progress; beyond, 503 at once. Connections that have
    not finished sending a request (head or body) do not count, so slow senders cannot
    lock others out (their deadlines and per-address bound: app.server, BodyGuard); nor do
    requests that only wait for DNS (``leave_in_flight``).

    ``retry_after`` estimates, for a refused request, when its turn could come (a full
    house is almost always requests queued for DigitalOcean's budget, so the budget's
    backlog is the estimate); a constant would bring every refused client back at once."""

    def __init__(self, app: ASGIApp, *, limit: int,
                 retry_after: Callable[[Scope], Awaitable[float]] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.active = 0
        self._retry_after = retry_after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            wait = await self._retry_after(scope) if self._retry_after else 1.0
            await _answer(scope, receive, send, 503, "overloaded",
                          retry_after=max(1, math.ceil(wait)))
            return
        self.active += 1
        counted = True

        def release() -> None:
            nonlocal counted
            if counted:
                counted = False
                self.active -= 1

        scope[IN_FLIGHT_RELEASE] = release
        try:
            await self.app(scope, receive, send)
        finally:
            release()


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, code: str,
                  retry_after: int | None = None, *, close: bool = False) -> None:
    """``close``: the body was not read to its end, so what follows on the connection is
    not a request; the server closes it after the answer."""
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    if close:
        headers["Connection"] = "close"
    await JSONResponse({"error": code}, status_code=status, headers=headers or None)(
        scope, receive, send)
