"""Run the stand-in API and DNS server together on loopback, in a background thread."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterable
from types import TracebackType

import uvicorn

from app.standin.api import create_standin_app
from app.standin.dns import DNSServer
from app.standin.state import RateLimits, StandinState

DEFAULT_TOKEN = "dop_v1_standin"  # noqa: S105 - a well-known local-only token, not a secret
START_TIMEOUT = 10.0


class StandinError(RuntimeError):
    """The stand-in could not start."""


class Standin:
    """The stand-in's HTTP API and DNS server, served from one background thread.

    Works as `with Standin(...) as s:` in sync code, `async with Standin(...) as s:`
    in async code (start and stop run off the event loop), or `start()`/`close()`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        http_port: int = 0,
        dns_port: int = 0,
        token: str = DEFAULT_TOKEN,
        zones: Iterable[str] = (),
        state: StandinState | None = None,
        rate_limits: RateLimits | None = None,
        propagation_delay: float | None = None,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            # The control endpoints have no auth: never expose them beyond this machine.
            raise StandinError(f"the stand-in binds to loopback only, not {host}")
        self.host = host
        self.token = token
        self.state = state or StandinState(rate_limits=rate_limits)
        if state is not None and rate_limits is not None:
            self.state.set_rate_limits(rate_limits)
        if propagation_delay is not None:
            # Records created or changed reach the DNS server this many seconds later.
            self.state.set_propagation_delay(propagation_delay)
        for zone in zones:
            if self.state.get_zone(zone) is None:
                self.state.add_zone(zone)
        self._http_port = http_port
        self._dns_port = dns_port
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._dns_address: tuple[str, int] | None = None

    @property
    def api_url(self) -> str:
        """Base URL to use instead of https://api.digitalocean.com (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._require_started()[0]}"

    @property
    def dns_address(self) -> tuple[str, int]:
        """(host, port) of the DNS server, UDP and TCP."""
        return self._require_started()[1]

    @property
    def dns_hostport(self) -> str:
        """`host:port` as Pebble's `-dnsserver` and lego's `--dns.resolvers` want it."""
        host, port = self.dns_address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _require_started(self) -> tuple[int, tuple[str, int]]:
        if self._dns_address is None or not self._ready.is_set() or self._error is not None:
            raise StandinError("the stand-in is not running")
        return self._http_port, self._dns_address

    def start(self) -> Standin:
        """Start both servers and wait until they answer; idempotent."""
        if self._thread is not None:
            return self
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="acme-delegate-standin", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise StandinError("the stand-in did not start in time")
        if self._error is not None:
            self._thread.join()
            raise StandinError(f"the stand-in failed to start: {self._error}") from self._error
        return self

    def close(self) -> None:
        """Stop both servers and wait for the thread; idempotent."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join()
        self._thread = None
        self._dns_address = None

    def __enter__(self) -> Standin:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Standin:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        dns_server = DNSServer(self.state, host=self.host, port=self._dns_port)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._dns_address = await dns_server.start()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._http_port))
            self._http_port = sock.getsockname()[1]
            app = create_standin_app(self.state, token=self.token)
            config = uvicorn.Config(
                app,
                lifespan="off",
                log_config=None,  # leave the host process's logging alone
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=2,
            )
            server = uvicorn.Server(config)
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started:
                if serving.done():
                    await serving
                    raise StandinError("uvicorn stopped during startup")
                await asyncio.sleep(0.01)
            self._ready.set()
            await self._stop.wait()
            server.should_exit = True
            await serving
        finally:
            sock.close()
            await dns_server.close()


def start_standin(
    *,
    host: str = "127.0.0.1",
    http_port: int = 0,
    dns_port: int = 0,
    token: str = DEFAULT_TOKEN,
    zones: Iterable[str] = (),
    state: StandinState | None = None,
    rate_limits: RateLimits | None = None,
    propagation_delay: float | None = None,
) -> Standin:
    """Start the stand-in now; close it with `.close()` or use it in a `with` block."""
    return Standin(
        host=host,
        http_port=http_port,
        dns_port=dns_port,
        token=token,
        zones=zones,
        state=state,
        rate_limits=rate_limits,
        propagation_delay=propagation_delay,
    ).start()
