"""Dependencies that make route signatures read like prose.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a worker
thread, a hand-off per request for what takes microseconds.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

import fastapi.routing
from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import SecretStr

from app.api.request import (
    basic_auth,
    bearer_token,
    parse_json_object,
    request_body,
    scope_client,
    scope_client_label,
)
from app.core.access import Authorized, Caller, CertificateDomain, ChallengeName, Label, Target
from app.core.names import IPAddress
from app.core.ports import Unit
from app.errors import AdminApiDisabled, Forbidden, MalformedJson
from app.wiring import Services


def services_of(request: Request) -> Services:
    """The app's services (built by the lifespan)."""
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


@dataclass(frozen=True)
class Client:
    address: IPAddress | None
    label: str | None  # the address as text, as the audit trail names it


def client_at(request: Request, services: Services) -> Client:
    """The request's client address and that as text, each worked out once per request."""
    trusted = services.settings.trusted_proxies
    return Client(scope_client(request.scope, trusted),
                  scope_client_label(request.scope, trusted))


def caller_of(request: Request, services: Services, username: object, key: object
              ) -> Caller:
    """The credential a request carries, with its client address (and that as text)."""
    client = client_at(request, services)
    return Caller(username, key, client.address, client.label)


async def get_client(request: Request) -> Client:
    return client_at(request, services_of(request))


def _same_secret(given: str, expected: str) -> bool:
    # Compare digests so that neither the content nor the length leaks through timing.
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def _token_given(request: Request, expected: SecretStr | None) -> bool:
    """True when the request carries ``expected``, as Bearer or as a Basic password."""
    if expected is None:
        return False
    basic = basic_auth(request)
    given = bearer_token(request) or (basic[1] if basic else None)
    return given is not None and _same_secret(given, expected.get_secret_value())


def registration_token_given(request: Request, services: Services) -> bool:
    """True when the request carries the registration token, as Bearer or as a Basic
    password: lego puts it in the URL (``https://x:TOKEN@host``) and keeps that URL in
    its account file, which is why it is not the admin token."""
    return _token_given(request, services.settings.registration_token)


async def require_admin(request: Request) -> None:
    services = services_of(request)
    if services.settings.admin_token is None:
        raise AdminApiDisabled()
    # Bearer, or a Basic password (curl -u x:TOKEN).
    if not _token_given(request, services.settings.admin_token):
        raise Forbidden()


ServicesDep = Annotated[Services, Depends(get_services)]
ClientDep = Annotated[Client, Depends(get_client)]
AdminDep = Depends(require_admin)


_BODY = "acme_delegate.json_body"


async def json_body(request: Request) -> dict[str, Any] | None:
    """The body as a JSON object (see ``parse_json_object``); None if it is not one.
    Parsed once per request (kept in its scope), however many callers ask."""
    scope = request.scope
    try:
        parsed: dict[str, Any] | None = scope[_BODY]
    except KeyError:
        try:
            parsed = parse_json_object(await request_body(request))
        except MalformedJson:
            parsed = None
        scope[_BODY] = parsed
    return parsed


_UNIT_EXIT = "acme_delegate.unit_exit"


class UnitOfWorkRoute(APIRoute):
    """The route class of routes that take an account (``AcmeDnsAccount``,
    ``HttpreqAccount``): the request's unit of work, opened by that dependency, ends when
    the route has returned its answer and before the answer is sent. It commits, keeps a
    refusal's audit row (``DomainError``: the store commits those), or rolls back on any
    other failure, as ``async with store.unit()`` around the route would.

    What a dependency with ``yield`` (``scope="function"``) guarantees too, but FastAPI
    wraps each such dependency in two context managers, an exit stack and an anyio cancel
    scope: ~90 µs a request, measured, against a plain ``async def`` dependency.

    The routes' dependencies are all of one shape (``async def f(request)``), and such a
    route is called with them directly (``_direct_call``); FastAPI's own solver, which
    builds a ``Response`` and reads the query, headers and cookies for each dependant,
    serves any other shape, and every request while ``app.dependency_overrides`` holds
    anything."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        solved = super().get_route_handler()
        # An included route's handler is built for its include (FastAPI keeps what the
        # include adds, its dependencies say, in a context of its own): that dependant.
        context = getattr(fastapi.routing, "_effective_route_context_var", None)
        effective = context.get() if context is not None else None
        route: Any = effective if getattr(effective, "original_route", None) is self else self
        direct = _direct_call(route.dependant)

        async def handle(request: Request) -> Response:
            scope = request.scope
            scope[_UNIT_EXIT] = None
            try:
                if direct is not None and not request.app.dependency_overrides:
                    response = await direct(request)
                else:
                    response = await solved(request)
            except BaseException as exc:
                end = scope.pop(_UNIT_EXIT, None)
                if end is not None and await end(type(exc), exc, exc.__traceback__):
                    raise AssertionError("a unit of work swallowed an exception") from exc
                raise
            end = scope.pop(_UNIT_EXIT, None)
            if end is not None:
                await end(None, None, None)
            return response

        return handle


def _direct_call(dependant: Dependant) -> Callable[[Request], Awaitable[Response]] | None:
    """An endpoint whose parameters are the ``Request`` and dependencies that take nothing
    but the ``Request`` (``async def``, no parameters of their own, no sub-dependencies),
    and that returns a ``Response``: a call with those dependencies resolved in order,
    each once, as FastAPI would resolve them. None for any other shape."""

    def request_only(d: Dependant) -> bool:
        return not (d.path_params or d.query_params or d.header_params or d.cookie_params
                    or d.body_params or d.websocket_param_name
                    or d.http_connection_param_name or d.response_param_name
                    or d.background_tasks_param_name or d.security_scopes_param_name)

    subs = dependant.dependencies
    endpoint = dependant.call
    if (endpoint is None or not inspect.iscoroutinefunction(endpoint)
            or not request_only(dependant)
            or not all(request_only(d) and not d.dependencies and d.name is not None
                       and d.request_param_name is not None and d.use_cache
                       and inspect.iscoroutinefunction(d.call) for d in subs)):
        return None
    steps: list[tuple[str, Callable[..., Awaitable[Any]], str]] = [
        (d.name, d.call, d.request_param_name) for d in subs  # type: ignore[misc]
    ]
    own_request = dependant.request_param_name
    run: Callable[..., Awaitable[Any]] = endpoint

    async def call(request: Request) -> Response:
        values: dict[str, Any] = {}
        known: dict[Any, Any] = {}
        for name, dependency, request_name in steps:
            if dependency not in known:
                known[dependency] = await dependency(**{request_name: request})
            values[name] = known[dependency]
        if own_request is not None:
            values[own_request] = request
        response = await run(**values)
        if not isinstance(response, Response):
            raise TypeError(f"{run.__name__} answered {type(response).__name__}, "
                            "not a Response")
        return response

    return call


async def _open_unit(request: Request, services: Services) -> Unit:
    """The request's unit of work, open until its route returns (``UnitOfWorkRoute``)."""
    scope = request.scope
    if _UNIT_EXIT not in scope or scope[_UNIT_EXIT] is not None:
        # Not a UnitOfWorkRoute, or a second unit: nothing would end it. Never serve that.
        raise RuntimeError("an account dependency outside a UnitOfWorkRoute")
    opened = services.store.unit()
    unit = await opened.__aenter__()
    scope[_UNIT_EXIT] = opened.__aexit__
    return unit


# The authorizing dependencies take nothing but the request: each sub-dependency costs
# FastAPI a solve of its own on every request (cache keys, scopes, signature checks), more
# than the work it would do. The route reads the same services and parsed body
# (``services_of``, ``json_body``).

async def acmedns_account(request: Request) -> Authorized:
    """acme-dns: X-Api-User and X-Api-Key, and the body's ``subdomain`` as the target
    (an undecodable body names nothing: refused like a wrong subdomain)."""
    services = services_of(request)
    body = await json_body(request)
    headers = request.headers
    caller = caller_of(request, services, headers.get("x-api-user"), headers.get("x-api-key"))
    target = Label(body.get("subdomain")) if body is not None else None
    unit = await _open_unit(request, services)
    return await services.gate.authorize(unit, caller, target)


def httpreq_target(body: dict[str, Any]) -> Target:
    """lego's default mode names the challenge name (``fqdn``), RAW mode the domain."""
    if "fqdn" in body:
        return ChallengeName(body["fqdn"])
    return CertificateDomain(body.get("domain", ""))


async def httpreq_account(request: Request) -> Authorized:
    """httpreq: Basic auth, and the body's ``fqdn`` or RAW ``domain`` as the target (an
    undecodable body from a good credential is a 400)."""
    services = services_of(request)
    body = await json_body(request)
    credentials = basic_auth(request)
    caller = caller_of(request, services, credentials[0] if credentials else None,
                       credentials[1] if credentials else None)
    unit = await _open_unit(request, services)
    if body is None:
        await services.gate.authenticate(unit, caller)
        raise MalformedJson()
    return await services.gate.authorize(unit, caller, httpreq_target(body))


# Only on a UnitOfWorkRoute: the unit of work ends (commits) when the route returns,
# before the answer is sent, so a 200 is never sent for work that did not commit.
AcmeDnsAccount = Annotated[Authorized, Depends(acmedns_account)]
HttpreqAccount = Annotated[Authorized, Depends(httpreq_account)]
