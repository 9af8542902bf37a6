"""The acme-dns protocol: /register, /update, /health (see docs/protocols)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app import __version__
from app.api.deps import (
    AcmeDnsAccount,
    ClientDep,
    ServicesDep,
    UnitOfWorkRoute,
    json_body,
    registration_token_given,
    services_of,
)
from app.api.errors import error_response
from app.api.live import DNS_HEADER, DNS_HEADER_DOC, LiveAnswer
from app.api.request import parse_json_object, request_body
from app.core.names import parse_allowfrom
from app.logs import event

router = APIRouter(tags=["acme-dns"], route_class=UnitOfWorkRoute)
log = logging.getLogger("acme_delegate.api")


_ACCOUNT = {"username": "9b3b2d5e-5a4e-4c1e-9d57-0a4f3a0d2b11",
            "password": "m5yq3A2mF0oZ1nZy7bq7xw4r3Yt0sR9pQ8cX2vLk",
            "fulldomain": "0c8e2f7a-1a53-4a43-8e0b-2f0f2d6e8c31.acme.example.org",
            "subdomain": "0c8e2f7a-1a53-4a43-8e0b-2f0f2d6e8c31", "allowfrom": []}


def error_examples(*codes: str) -> dict[str, Any]:
    """An OpenAPI response documenting the ``{\"error\": code}`` bodies it may carry."""
    return {"content": {"application/json": {"examples": {
        code: {"value": {"error": code}} for code in codes}}}, "description": ", ".join(codes)}


@router.post("/register", status_code=201, responses={
    201: {"description": "The new account, its key shown this once",
          "content": {"application/json": {"example": _ACCOUNT}}},
    400: error_examples("malformed_json_payload", "invalid_allowfrom_cidr"),
    403: error_examples("registration_closed"), 429: error_examples("too_many_requests")},
    openapi_extra={"requestBody": {"required": False, "content": {"application/json": {
        "example": {"allowfrom": ["192.0.2.0/24"]}}}}})
async def register(request: Request, services: ServicesDep, client: ClientDep) -> JSONResponse:
    """Create a delegated account (when REGISTRATION allows); answers the account once."""
    body = parse_json_object(await request_body(request))
    allowfrom = parse_allowfrom(body.get("allowfrom"))
    issued = await services.accounts.register(
        allowfrom, client=client.label,
        token_given=registration_token_given(request, services)
    )
    return JSONResponse(issued.acme_dns_json(), status_code=201)


@router.post("/update", responses={
    200: {"description": "The value is live: DigitalOcean's nameservers serve it (see the "
                         f"{DNS_HEADER} header)",
          "headers": DNS_HEADER_DOC,
          "content": {"application/json": {"example": {
              "txt": "LHDhK3oGRvkiefQnx7OOczTY5Tic_xZ6HcMOc_gmtoM"}}}},
    400: error_examples("bad_txt"), 401: error_examples("forbidden"),
    429: error_examples("too_many_requests"),
    503: error_examples("dns_provider_unavailable")},
    openapi_extra={"parameters": [
        {"name": "X-Api-User", "in": "header", "required": True, "schema": {"type": "string"}},
        {"name": "X-Api-Key", "in": "header", "required": True, "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {"example": {
            "subdomain": "0c8e2f7a-1a53-4a43-8e0b-2f0f2d6e8c31",
            "txt": "LHDhK3oGRvkiefQnx7OOczTY5Tic_xZ6HcMOc_gmtoM"}}}}})
async def update(who: AcmeDnsAccount, request: Request) -> JSONResponse:
    """Put a challenge value at the caller's name; 200 once the nameservers serve it."""
    services, body = services_of(request), await json_body(request)
    assert body is not None  # an unreadable body names no target: refused before this
    value = await services.challenges.update(who, body.get("txt"))
    return LiveAnswer({"txt": value}, services=services, name=who.account.name, value=value)


@router.get("/health", responses={200: {"content": {"application/json": {"example": {
    "status": "ok", "version": __version__}}}}, 503: error_examples("database_unavailable")})
async def health(services: ServicesDep) -> JSONResponse:
    """200 when the database answers, 503 when it does not; names the running version."""
    try:
        await services.store.ping()
    except Exception as exc:  # any failure of the database is the answer here
        event(log, "health.database_down", logging.WARNING, error=type(exc).__name__)
        return error_response(503, "database_unavailable")
    return JSONResponse({"status": "ok", "version": __version__})
