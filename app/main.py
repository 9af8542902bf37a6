"""The application factory. Nothing is built at import time."""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__
from app.api import acmedns, admin, console, errors, httpreq, ops
from app.api.guards import BodyGuard, InFlightLimit
from app.config import Settings
from app.core.reconcile import ReconcileLoop
from app.observability import Metrics, Observe
from app.wiring import Services, build_services, check_nameservers

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


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, told the truth about errors: this service answers every error,
    validation included, as ``{"error": "<code>"}`` (400 for bad input), never with
    FastAPI's 422 validation body."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components["Error"] = {"type": "object", "required": ["error"],
                           "properties": {"error": {"type": "string"}}}
    error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            generated = responses.get("422", {}).get("description") == "Validation Error"
            if generated:
                del responses["422"]
            if generated or operation.get("requestBody") or operation.get("parameters"):
                responses.setdefault("400", {"description": "Bad input: `bad_request` or a "
                                                            "more precise code"})
            for status, response in responses.items():
                if status[0] in "45":
                    examples = response.get("content", {}).get("application/json", {}).get(
                        "examples")
                    response["content"] = {"application/json": {
                        **error_content["application/json"],
                        **({"examples": examples} if examples else {})}}
    app.openapi_schema = schema
    return schema


async def _backlog(scope: Scope) -> float:
    """When a request turned away at the in-flight limit could be served: the DigitalOcean
    budget's backlog (before the lifespan has built the services: a second)."""
    services: Services | None = getattr(scope["app"].state, "services", None)
    if services is None:
        return 1.0
    try:
        # Called at the in-flight limit: that many requests are in progress, and in a
        # burst of new values each will want a DigitalOcean slot before this one.
        return await services.budget.backlog(in_flight=services.settings.max_in_flight)
    except Exception:  # the window lives in the database; a hint is not worth a 500
        return 1.0


def _on_the_app(app: FastAPI, router: APIRouter) -> None:
    """``router``'s routes made again on the app's own router, as ``@app.post`` would
    make them (so with the app's dependency overrides), each from what its route keeps
    of what it was declared with. FastAPI keeps an included router behind a wrapper that
    it re-derives and matches through on every request: 5% of the instructions of a
    repeat ``/update``. Only for a router with nothing of its own left to apply at
    inclusion (a prefix, dependencies): its tags and route class are in its routes."""
    if router.prefix or router.dependencies:
        raise ValueError("a router with a prefix or dependencies must be included")
    declared = [name for name in inspect.signature(APIRouter.add_api_route).parameters
                if name not in ("self", "path", "endpoint", "route_class_override")]
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"{route!r} is not an APIRoute")
        app.router.add_api_route(route.path, route.endpoint, route_class_override=type(route),
                                 **{name: getattr(route, name) for name in declared})


def create_app(
    settings: Settings, *, http: httpx.AsyncClient | None = None, reconcile: bool = True,
    services: Services | None = None, metrics: Metrics | None = None,
) -> FastAPI:
    """The ASGI app; its lifespan builds the database engine and the DigitalOcean client,
    and (unless ``reconcile`` is off, as in unit tests) runs the reconciler.

    ``serve`` builds the services itself (it checks the provider and may issue the demo
    credential first) and passes them with the ``metrics`` they report to; it closes them.
    """

    metrics = metrics or Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            built = (services if services is not None else await stack.enter_async_context(
                build_services(settings, http=http, metrics=metrics)))
            app.state.services = built
            await check_nameservers(built)
            loop = ReconcileLoop(built.reconciler, settings.reconcile_interval,
                                 on_pass=metrics.reconciled)
            if reconcile:
                loop.start()
            app.state.reconcile_loop = loop
            try:
                yield
            finally:
                await loop.stop()

    described: dict[str, Any] = {
        "title": "acme-delegate", "version": __version__, "lifespan": lifespan,
        # FastAPI's own OpenTelemetry asks the global providers (reading the environment)
        # on every request; this service reports through /metrics and its logs instead.
        "telemetry": {"tracing": False, "metrics": False, "logs": False},
        "summary": "Least-privilege ACME DNS-01 credentials over the DigitalOcean Domains API.",
    }
    if settings.api_docs:
        # Swagger UI and ReDoc from the files fastapi-offline ships: no CDN, so the pages
        # work in an air-gapped cluster and load nothing from a third party. Swagger UI's
        # validator badge would call validator.swagger.io: off.
        app = FastAPIOffline(**described, static_url="/docs-assets",
                             swagger_ui_parameters={"validatorUrl": None})
    else:
        app = FastAPI(**described, docs_url=None, redoc_url=None)
    app.state.metrics = metrics
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    errors.install(app)
    # The routes every ACME client calls, on the app's own router.
    _on_the_app(app, acmedns.router)
    _on_the_app(app, httpreq.router)
    app.include_router(admin.router)
    app.include_router(ops.router)
    if settings.console and settings.admin_token is not None:
        console.install(app)
    app.add_middleware(NormalizePath)
    if settings.tls_cert_file is not None:
        app.add_middleware(StrictTransport)
    # The in-flight limit inside the body guard: a request takes a slot only once its
    # body is in (a slow sender holds a socket and a small buffer, never a slot).
    app.add_middleware(InFlightLimit, limit=settings.max_in_flight,
                       retry_after=_backlog)
    app.add_middleware(BodyGuard, timeout=settings.body_timeout)
    # Added last, so outermost: it sees every request, errors included.
    app.add_middleware(Observe, metrics=metrics, trusted_proxies=settings.trusted_proxies)
    return app
