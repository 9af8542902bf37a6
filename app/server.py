"""The HTTP server: uvicorn, hardened.

uvicorn's HTTP/1.1 protocol gets what it lacks against slow and greedy clients:

- a deadline for the request head: uvicorn times out idle keep-alive connections, but a
  client that trickles a request head one byte at a time holds its connection for ever
  (slowloris). Here every wait for a request head, on a new connection or between
  keep-alive requests, has a deadline (``HEAD_TIMEOUT``);
- a bound on the connections one client address holds (``MAX_CONNECTIONS_PER_ADDRESS``;
  IPv6 counted per /64, the least a host is given): beyond it a connection is answered
  429 and closed at once, so no one address can hold the sockets everyone needs.
  ``TRUSTED_PROXIES`` are exempt: every client behind them shares their address.

Bodies have their deadline in ``app.api.guards.BodyGuard``, which reads them before a
request takes an in-flight slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

from app.config import Settings
from app.core.names import IPNetwork, in_networks

HEAD_TIMEOUT = 10.0
_REFUSED = (b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
            b"retry-after: 1\r\nconnection: close\r\ncontent-length: 32\r\n\r\n"
            b'{"error":"too_many_connections"}')


class ConnectionsPerAddress:
    """How many connections each client address holds; ``admit`` says whether one more
    may open. Shared by every connection of one server (one event loop: no locking)."""

    def __init__(self, limit: int, exempt: Sequence[IPNetwork] = (),
                 on_refused: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.exempt = exempt
        self.on_refused = on_refused
        self.held: Counter[str] = Counter()

    @staticmethod
    def key(peer: object) -> str | None:
        """The address a connection counts against: IPv4, or an IPv6 /64."""
        if not isinstance(peer, tuple) or not peer:
            return None  # a Unix socket: nothing to count
        try:
            address = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            return str(ipaddress.IPv6Network((address, 64), strict=False))
        return str(address)

    def admit(self, key: str) -> bool:
        if self.held[key] >= self.limit and not self._exempt(key):
            if self.on_refused is not None:
                self.on_refused()
            return False
        self.held[key] += 1
        return True

    def release(self, key: str) -> None:
        self.held[key] -= 1
        if self.held[key] <= 0:
            del self.held[key]

    def _exempt(self, key: str) -> bool:
        if not self.exempt:
            return False
        network = ipaddress.ip_network(key, strict=False)
        return in_networks(network.network_address, self.exempt)
# On SIGTERM, finish the updates in flight (each ends within DO_TIMEOUT-bounded calls)
# before the process goes. The Helm chart's grace period is longer than this plus its
# preStop pause.
DRAIN_SECONDS = 30


class HeadTimeoutProtocol(H11Protocol):
    head_timeout = HEAD_TIMEOUT
    per_address: ConnectionsPerAddress | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._waiting_since: object = None
        self._counted_as: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.per_address is not None:
            key = self.per_address.key(transport.get_extra_info("peername"))
            if key is not None:
                if not self.per_address.admit(key):
                    transport.write(_REFUSED)
                    transport.close()
                    return
                self._counted_as = key
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        if self._counted_as is not None and self.per_address is not None:
            self.per_address.release(self._counted_as)
            self._counted_as = None
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


def settle_heap() -> None:
    """What was built to start (modules, the app, its services) lives as long as the
    process: collect once, then freeze it out of the garbage collector's view, so that a
    full collection walks only what was made since. Without it a full collection walked
    the whole heap, ~100 ms with the loop held (every request in flight waited: the
    repeat path's p99 at 16 clients in bench.overhead), every few tens of thousands of
    requests."""
    gc.collect()
    gc.freeze()


class Server(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM or SIGINT ends ``serve()`` normally after
    the drain instead of being raised again: the caller then closes its database pool and
    the process exits 0 (uvicorn re-raises the signal, which kills the process first).
    Once started (the app's lifespan run, its sockets bound) it settles the heap
    (``settle_heap``)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            settle_heap()

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


def protocol_for(settings: Settings, on_refused: Callable[[], None] | None = None
                 ) -> type[HeadTimeoutProtocol]:
    """The protocol class of one server: its head deadline and its connection counts."""

    class Protocol(HeadTimeoutProtocol):
        head_timeout = settings.head_timeout
        per_address = ConnectionsPerAddress(settings.max_connections_per_address,
                                            settings.trusted_proxies, on_refused)

    return Protocol


def build_server(app: ASGIApp, settings: Settings, *, host: str, port: int,
                 on_refused: Callable[[], None] | None = None) -> Server:
    """The hardened server for ``app``; ``on_refused`` hears of each connection refused
    for its address's bound (a metric)."""
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
        # (uvicorn has none), connections per address, header size, idle keep-alive.
        # Load is bounded by requests in flight (MAX_IN_FLIGHT), which a request takes
        # only once its body is in, so slow senders lock nobody out.
        http=protocol_for(settings, on_refused),
        h11_max_incomplete_event_size=16 * 1024,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=DRAIN_SECONDS,
    ))
