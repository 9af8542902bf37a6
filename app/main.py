"""The application factory. Nothing is built at import time."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__
from app.api import acmedns, admin, errors, httpreq, ops
from app.config import Settings
from app.core.reconcile import ReconcileLoop
from app.observability import Metrics, Observe
from app.wiring import build_services

_SLASHES = re.compile(r"/{2,}")


class NormalizePath:
    """``//update`` and ``/update/`` are ``/update``: clients build URLs by concatenation."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            clean = _SLASHES.sub("/", path)
            if len(clean) > 1:
                clean = clean.rstrip("/")
            if clean != path:
                # In place, so the outer middleware sees which route served it.
                scope["path"] = clean
        await self.app(scope, receive, send)


class StrictTransport:
    """HSTS on every answer when this process terminates TLS itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (
                    b"strict-transport-security", b"max-age=31536000; includeSubDomains")]
            await send(message)

        await self.app(scope, receive, send_hsts if scope["type"] == "http" else send)


def create_app(
    settings: Settings, *, http: httpx.AsyncClient | None = None, reconcile: bool = True
) -> FastAPI:
    """The ASGI app; its lifespan builds the database engine and the DigitalOcean client,
    and (unless ``reconcile`` is off, as in unit tests) runs the reconciler."""

    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with build_services(settings, http=http, metrics=metrics) as services:
            app.state.services = services
            loop = ReconcileLoop(services.reconciler, settings.reconcile_interval,
                                 on_pass=metrics.reconciled)
            if reconcile:
                loop.start()
            app.state.reconcile_loop = loop
            try:
                yield
            finally:
                await loop.stop()

    app = FastAPI(
        title="acme-delegate",
        version=__version__,
        summary="Least-privilege ACME DNS-01 credentials over the DigitalOcean Domains API.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    errors.install(app)
    app.include_router(acmedns.router)
    app.include_router(httpreq.router)
    app.include_router(admin.router)
    app.include_router(ops.router)
    app.add_middleware(NormalizePath)
    if settings.tls_cert_file is not None:
        app.add_middleware(StrictTransport)
    # Added last, so outermost: it sees every request, errors included.
    app.add_middleware(Observe, metrics=metrics, trusted_proxies=settings.trusted_proxies)
    return app
