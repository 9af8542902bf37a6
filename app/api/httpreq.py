"""lego's httpreq protocol: POST /present and /cleanup, Basic auth with the account's
username and key. Default mode sends ``fqdn`` (after lego followed CNAMEs) and ``value``;
RAW mode sends ``domain``, ``token`` and ``keyAuth`` and we compute the value."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.acmedns import error_examples as _error
from app.api.deps import Client, ClientDep, ServicesDep
from app.api.request import basic_auth, parse_json_object
from app.core.errors import Forbidden, InvalidDomain, MalformedJson
from app.core.models import Account
from app.core.names import challenge_name, normalize_domain, normalize_fqdn
from app.wiring import Services

router = APIRouter(tags=["httpreq"])

MAX_KEY_AUTH = 512


def raw_value(key_auth: str) -> str | None:
    """RAW mode: the DNS-01 value is base64url(SHA-256(key authorization)), unpadded."""
    if len(key_auth) > MAX_KEY_AUTH:
        return None
    try:
        digest = hashlib.sha256(key_auth.encode("utf-8")).digest()
    except UnicodeEncodeError:  # a lone surrogate: no ACME client sends one
        return None
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def _authorized(
    request: Request, services: Services, client: Client
) -> tuple[Account, object]:
    """The account, and the value it asks for (validated, and audited, by the service)."""
    try:
        body: dict[str, object] | None = parse_json_object(await request.body())
    except MalformedJson:
        body = None
    credentials = basic_auth(request)
    account = await services.accounts.authenticate(
        credentials[0] if credentials else None,
        credentials[1] if credentials else None,
        client.address,
        client=client.label,
    )
    if body is None:
        raise MalformedJson()
    if "fqdn" in body:
        try:
            fqdn = normalize_fqdn(str(body["fqdn"]))
        except InvalidDomain:
            fqdn = ""
        allowed = services.accounts.owns_name(account, fqdn)
        value = body.get("value")
    else:
        try:
            domain = normalize_domain(str(body.get("domain", "")))
        except InvalidDomain:
            domain = ""
        # RAW mode names the certificate's domain, before any CNAME is followed.
        allowed = domain != "" and (
            account.domain == domain or services.accounts.owns_name(account, challenge_name(domain))
        )
        key_auth = body.get("keyauth")
        value = raw_value(key_auth) if isinstance(key_auth, str) and key_auth else None
    if not allowed:
        await services.accounts.refuse(account, client=client.label, reason="wrong_name")
        raise Forbidden()
    return account, value


_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("bad_txt", "malformed_json_payload"), 401: _error("forbidden"),
    429: _error("too_many_requests"), 503: _error("dns_provider_unavailable")}
_BODY = {"requestBody": {"required": True, "content": {"application/json": {"examples": {
    "default": {"value": {"fqdn": "_acme-challenge.www.example.com.",
                          "value": "LHDhK3oGRvkiefQnx7OOczTY5Tic_xZ6HcMOc_gmtoM"}},
    "raw": {"value": {"domain": "www.example.com", "token": "tok",
                      "keyAuth": "tok.thumbprint"}}}}}}}


@router.post("/present", responses=_RESPONSES, openapi_extra=_BODY)
async def present(request: Request, services: ServicesDep, client: ClientDep) -> JSONResponse:
    """Put a challenge value at the caller's bound name."""
    account, value = await _authorized(request, services, client)
    checked = await services.challenges.update(account, value, client=client.label,
                                               via="present")
    return JSONResponse({"fqdn": account.name + ".", "value": checked})


@router.post("/cleanup", responses=_RESPONSES, openapi_extra=_BODY)
async def cleanup(request: Request, services: ServicesDep, client: ClientDep) -> JSONResponse:
    """Remove exactly that challenge value from the caller's bound name."""
    account, value = await _authorized(request, services, client)
    removed = await services.challenges.cleanup(account, value, client=client.label)
    return JSONResponse({"fqdn": account.name + ".", "value": value, "removed": removed})
