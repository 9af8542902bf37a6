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
from app.api.deps import HttpreqAccount, UnitOfWorkRoute, json_body, services_of
from app.api.live import DNS_HEADER_DOC, LiveAnswer

router = APIRouter(tags=["httpreq"], route_class=UnitOfWorkRoute)

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


def requested_value(body: dict[str, object]) -> object:
    """The value to put or remove: default mode sends it, RAW mode its key authorization
    (validated, and audited, by the service)."""
    if "fqdn" in body:
        return body.get("value")
    key_auth = body.get("keyauth")
    return raw_value(key_auth) if isinstance(key_auth, str) and key_auth else None


_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("bad_txt", "malformed_json_payload"), 401: _error("forbidden"),
    429: _error("too_many_requests"), 503: _error("dns_provider_unavailable")}
_BODY = {"requestBody": {"required": True, "content": {"application/json": {"examples": {
    "default": {"value": {"fqdn": "_acme-challenge.www.example.com.",
                          "value": "LHDhK3oGRvkiefQnx7OOczTY5Tic_xZ6HcMOc_gmtoM"}},
    "raw": {"value": {"domain": "www.example.com", "token": "tok",
                      "keyAuth": "tok.thumbprint"}}}}}}}


@router.post("/present", responses={
    **_RESPONSES, 200: {"description": "The value is live: the nameservers serve it",
                        "headers": DNS_HEADER_DOC}}, openapi_extra=_BODY)
async def present(who: HttpreqAccount, request: Request) -> JSONResponse:
    """Put a challenge value at the caller's bound name; 200 once the nameservers
    serve it."""
    services, body = services_of(request), await json_body(request)
    assert body is not None  # refused as malformed before this
    checked = await services.challenges.update(who, requested_value(body), via="present")
    return LiveAnswer({"fqdn": who.account.name + ".", "value": checked}, services=services,
                      name=who.account.name, value=checked)


@router.post("/cleanup", responses=_RESPONSES, openapi_extra=_BODY)
async def cleanup(who: HttpreqAccount, request: Request) -> JSONResponse:
    """Remove exactly that challenge value from the caller's bound name."""
    services, body = services_of(request), await json_body(request)
    assert body is not None  # refused as malformed before this
    value = requested_value(body)
    removed = await services.challenges.cleanup(who, value)
    return JSONResponse({"fqdn": who.account.name + ".", "value": value, "removed": removed})
