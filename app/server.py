"""uvicorn's HTTP/1.1 protocol with the one timeout it lacks: for the request head.

uvicorn times out idle keep-alive connections, but a client that trickles a request
head one byte at a time holds its connection for ever (slowloris). Here every wait for
a request head, on a new connection or between keep-alive requests, has a deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT = 10.0


class HeadTimeoutProtocol(H11Protocol):
    head_timeout = HEAD_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._waiting_since: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        # A new request-response cycle means a complete head arrived.
        if self._head_timer is not None and self.cycle is not self._waiting_since:
            self._stop_head_timer()

    def on_response_complete(self) -> None:
        # Armed before the parent handles pipelined requests, which then disarm it.
        self._await_head()
        super().on_response_complete()

    def _await_head(self) -> None:
        self._stop_head_timer()
        self._waiting_since = self.cycle
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.cycle is self._waiting_since and not self.transport.is_closing():
            self.transport.close()
