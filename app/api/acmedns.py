"""The acme-dns protocol: /register, /update, /health (see docs/protocols)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.deps import ClientDep, ServicesDep, admin_token_given
from app.api.errors import error_response
from app.api.request import parse_json_object, read_body
from app.core.errors import Forbidden, MalformedJson
from app.core.names import parse_allowfrom
from app.logs import event

router = APIRouter(tags=["acme-dns"])
log = logging.getLogger("acme_delegate.api")


@router.post("/register", status_code=201)
async def register(request: Request, services: ServicesDep, client: ClientDep) -> JSONResponse:
    """Create a delegated account (when REGISTRATION allows); answers the account once."""
    body = parse_json_object(await read_body(request))
    allowfrom = parse_allowfrom(body.get("allowfrom"))
    issued = await services.accounts.register(
        allowfrom, client=client.label, admin_authorized=admin_token_given(request, services)
    )
    return JSONResponse(issued.acme_dns_json(), status_code=201)


@router.post("/update")
async def update(request: Request, services: ServicesDep, client: ClientDep) -> JSONResponse:
    """Put a challenge value at the caller's name; 200 once DigitalOcean has it."""
    try:
        body: dict[str, object] | None = parse_json_object(await read_body(request))
    except MalformedJson:
        body = None  # an undecodable body is an authentication failure, decided below
    account = await services.accounts.authenticate(
        request.headers.get("x-api-user"),
        request.headers.get("x-api-key"),
        client.address,
        client=client.label,
    )
    if body is None or not services.accounts.owns_label(account, body.get("subdomain")):
        await services.accounts.refuse(account, client=client.label, reason="wrong_subdomain")
        raise Forbidden()
    value = await services.challenges.update(account, body.get("txt"), client=client.label)
    event(log, "update.ok", account=account.username, client=client.label)
    return JSONResponse({"txt": value}, status_code=200)


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    """200 when the database answers, 503 when it does not."""
    try:
        await services.store.ping()
    except Exception as exc:  # any failure of the database is the answer here
        event(log, "health.database_down", logging.WARNING, error=type(exc).__name__)
        return error_response(503, "database_unavailable")
    return JSONResponse({"status": "ok"})
