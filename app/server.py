"""The HTTP server: uvicorn, hardened.

uvicorn's HTTP/1.1 protocol gets the one timeout it lacks, for the request head: uvicorn
times out idle keep-alive connections, but a client that trickles a request head one
byte at a time holds its connection for ever (slowloris). Here every wait for a request
head, on a new connection or between keep-alive requests, has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.config import Settings

HEAD_TIMEOUT = 10.0
# On SIGTERM, finish the updates in flight (each ends within DO_TIMEOUT-bounded calls)
# before the process goes. The Helm chart's grace period is longer than this plus its
# preStop pause.
DRAIN_SECONDS = 30


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


class Server(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM or SIGINT ends ``serve()`` normally after
    the drain instead of being raised again: the caller then closes its database pool and
    the process exits 0 (uvicorn re-raises the signal, which kills the process first)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def build_server(app: ASGIApp, settings: Settings, *, host: str, port: int) -> Server:
    """The hardened server for ``app``."""
    return Server(uvicorn.Config(
        app,
        host=host,
        port=port,
        # Our own X-Forwarded-For handling (TRUSTED_PROXIES) is the only one: uvicorn's
        # would trust 127.0.0.1 by default and let a local proxy choose the client address.
        proxy_headers=False,
        server_header=False,
        log_config=None,
        log_level=settings.log_level.lower(),
        access_log=False,  # ours carries the request id and the real client address
        ssl_certfile=settings.tls_cert_file,
        ssl_keyfile=settings.tls_key_file,
        # Bounded exposure to floods and slow clients: a deadline for request heads
        # (uvicorn has none), header size, idle keep-alive. Load is bounded by requests
        # in flight (MAX_IN_FLIGHT), not connections, so slow senders lock nobody out.
        http=HeadTimeoutProtocol,
        h11_max_incomplete_event_size=16 * 1024,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=DRAIN_SECONDS,
    ))
