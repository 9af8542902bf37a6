"""Dependencies that make route signatures read like prose.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a worker
thread, a hand-off per request for what takes microseconds.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import SecretStr

from app.api.request import basic_auth, bearer_token, parse_json_object, scope_client
from app.core.access import Authorized, Caller, CertificateDomain, ChallengeName, Label, Target
from app.core.names import IPAddress
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

    @property
    def label(self) -> str | None:
        return str(self.address) if self.address else None


def client_of(request: Request, services: Services) -> IPAddress | None:
    """The request's client address, worked out once per request (the access log reads
    the same one)."""
    return scope_client(request.scope, services.settings.trusted_proxies)


async def get_client(request: Request) -> Client:
    return Client(client_of(request, services_of(request)))


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
            parsed = parse_json_object(await request.body())
        except MalformedJson:
            parsed = None
        scope[_BODY] = parsed
    return parsed


# The authorizing dependencies take nothing but the request: each sub-dependency costs
# FastAPI a solve of its own on every request (cache keys, scopes, signature checks), more
# than the work it would do. The route reads the same services and parsed body
# (``services_of``, ``json_body``).

async def acmedns_account(request: Request) -> AsyncIterator[Authorized]:
    """acme-dns: X-Api-User and X-Api-Key, and the body's ``subdomain`` as the target
    (an undecodable body names nothing: refused like a wrong subdomain)."""
    services = services_of(request)
    body = await json_body(request)
    headers = request.headers
    caller = Caller(headers.get("x-api-user"), headers.get("x-api-key"),
                    client_of(request, services))
    target = Label(body.get("subdomain")) if body is not None else None
    async with services.store.unit() as unit:
        yield await services.gate.authorize(unit, caller, target)


def httpreq_target(body: dict[str, Any]) -> Target:
    """lego's default mode names the challenge name (``fqdn``), RAW mode the domain."""
    if "fqdn" in body:
        return ChallengeName(body["fqdn"])
    return CertificateDomain(body.get("domain", ""))


async def httpreq_account(request: Request) -> AsyncIterator[Authorized]:
    """httpreq: Basic auth, and the body's ``fqdn`` or RAW ``domain`` as the target (an
    undecodable body from a good credential is a 400)."""
    services = services_of(request)
    body = await json_body(request)
    credentials = basic_auth(request)
    caller = Caller(credentials[0] if credentials else None,
                    credentials[1] if credentials else None, client_of(request, services))
    async with services.store.unit() as unit:
        if body is None:
            await services.gate.authenticate(unit, caller)
            raise MalformedJson()
        yield await services.gate.authorize(unit, caller, httpreq_target(body))


# The unit of work ends (commits) when the route returns, before the answer is sent:
# a 200 is never sent for work that did not commit.
AcmeDnsAccount = Annotated[Authorized, Depends(acmedns_account, scope="function")]
HttpreqAccount = Annotated[Authorized, Depends(httpreq_account, scope="function")]
