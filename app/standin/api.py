"""ASGI app imitating the DigitalOcean Domains API v2, plus test-control endpoints."""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import dns.exception
import dns.name
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.standin.dns import SOA_TIMERS, record_rdata
from app.standin.state import (
    DEFAULT_RECORD_TTL,
    DEFAULT_ZONE_TTL,
    Faults,
    RateDecision,
    RateLimits,
    Record,
    StandinState,
    Zone,
)

API_TYPES = frozenset({"A", "AAAA", "CNAME", "TXT", "NS", "MX", "CAA", "SRV"})
MIN_TTL = 30
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 200
NOT_FOUND = "The resource you were accessing could not be found."
SERVER_ERROR = "Server was unable to give you a response."

T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]


class DOError(Exception):
    """An error answered with DigitalOcean's `{"id","message","request_id"}` body."""

    def __init__(self, status: int, error_id: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        """The HTTP response DigitalOcean would send."""
        return error_response(self.status, self.error_id, self.message, headers)


def error_response(
    status: int, error_id: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """DigitalOcean's error body with a fresh request id."""
    body = {"id": error_id, "message": message, "request_id": str(uuid.uuid4())}
    return JSONResponse(body, status_code=status, headers=headers)


def create_standin_app(state: StandinState, *, token: str) -> Starlette:
    """Build the stand-in API serving `state`, accepting only `Bearer <token>`."""
    api = _DomainsAPI(state, token)
    control = _Control(state)

    async def not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            return error_response(405, "method_not_allowed", "Method not allowed.")
        return error_response(exc.status_code, "not_found", NOT_FOUND)

    async def do_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DOError)
        return exc.response()

    routes = [
        Route("/v2/domains", api.guard(api.list_domains), methods=["GET"]),
        Route("/v2/domains/{zone}", api.guard(api.get_domain), methods=["GET"]),
        Route("/v2/domains/{zone}/records", api.guard(api.list_records), methods=["GET"]),
        Route("/v2/domains/{zone}/records", api.guard(api.create_record), methods=["POST"]),
        Route("/v2/domains/{zone}/records/{rid}", api.guard(api.get_record), methods=["GET"]),
        Route("/v2/domains/{zone}/records/{rid}", api.guard(api.update_record),
              methods=["PUT", "PATCH"]),
        Route("/v2/domains/{zone}/records/{rid}", api.guard(api.delete_record), methods=["DELETE"]),
        *control.routes(),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: not_found, DOError: do_error},
    )


class _DomainsAPI:
    """The `/v2` endpoints: auth, rate limits and faults wrap every handler."""

    def __init__(self, state: StandinState, token: str) -> None:
        self.state = state
        self._token = token.encode()

    def guard(self, handler: Endpoint) -> Endpoint:
        """Wrap a handler with latency, auth, rate limiting, faults and logging."""

        async def endpoint(request: Request) -> Response:
            delay = self.state.latency(request.method)
            if delay:
                # The whole request has arrived before the latency, as at DigitalOcean: a
                # client that dies while it waits has still made its change (its answer
                # is what it loses).
                await request.body()
                self.state.stall_entered()
                await asyncio.sleep(delay)
            response = await self._checked(request, handler)
            self.state.log_request(
                request.method, request.url.path, request.url.query, response.status_code
            )
            return response

        return endpoint

    async def _checked(self, request: Request, handler: Endpoint) -> Response:
        if not self._authorized(request):
            # No token, so no budget to report: 401s carry no rate-limit headers.
            return error_response(401, "unauthorized", "Unable to authenticate you")
        faults = self.state.faults
        throttled = self.state.draw_fault("throttle", request.method)
        decision = self.state.check_rate(
            self._token.decode(), force_throttle=throttled, retry_after=faults.throttle_retry_after
        )
        headers = _rate_headers(decision)
        if not decision.allowed:
            return error_response(429, "too_many_requests", "API Rate limit exceeded.", headers)
        if request.method.upper() in {m.upper() for m in faults.forbidden_methods}:
            return error_response(403, "forbidden", "You are not authorized to perform this "
                                  "operation", headers)
        if self.state.draw_fault("error", request.method):
            return error_response(faults.error_status, "server_error", SERVER_ERROR, headers)
        try:
            response = await handler(request)
        except DOError as exc:
            return exc.response(headers)
        response.headers.update(headers)
        return response

    def _authorized(self, request: Request) -> bool:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        # Constant-time compare: the stand-in may hold a token people reuse.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self._token
        )

    def _zone(self, request: Request) -> Zone:
        zone = self.state.get_zone(request.path_params["zone"])
        if zone is None:
            raise DOError(404, "not_found", NOT_FOUND)
        return zone

    async def list_domains(self, request: Request) -> Response:
        """GET /v2/domains."""
        zones = self.state.zones()
        page, links, meta = _paginate(request, zones)
        return JSONResponse(
            {"domains": [self._domain_json(z) for z in page], "links": links, "meta": meta}
        )

    async def get_domain(self, request: Request) -> Response:
        """GET /v2/domains/{zone}."""
        return JSONResponse({"domain": self._domain_json(self._zone(request))})

    def _domain_json(self, zone: Zone) -> dict[str, Any]:
        return {"name": zone.name, "ttl": zone.ttl, "zone_file": _zone_file(self.state, zone)}

    async def list_records(self, request: Request) -> Response:
        """GET /v2/domains/{zone}/records with DigitalOcean's `type` and `name` filters."""
        zone = self._zone(request)
        records = self.state.records(zone.name)
        rtype = request.query_params.get("type")
        if rtype:
            records = [r for r in records if r.type == rtype.upper()]
        name = request.query_params.get("name")
        if name:
            # DigitalOcean matches the FQDN without trailing dot; anything else finds nothing.
            records = [r for r in records if r.fqdn == name.lower()]
        page, links, meta = _paginate(request, records)
        return JSONResponse(
            {"domain_records": [r.to_api() for r in page], "links": links, "meta": meta}
        )

    async def create_record(self, request: Request) -> Response:
        """POST /v2/domains/{zone}/records."""
        zone = self._zone(request)
        fields = _new_record(zone.name, await _json_body(request))
        record = self.state.add_record(zone.name, **fields)
        if self.state.draw_fault("ghost", request.method):
            # The write happened; only the answer is lost, as on a real timeout or 5xx.
            raise DOError(500, "server_error", SERVER_ERROR)
        return JSONResponse({"domain_record": record.to_api()}, status_code=201)

    async def get_record(self, request: Request) -> Response:
        """GET /v2/domains/{zone}/records/{id}."""
        zone = self._zone(request)
        record = self.state.get_record(zone.name, _record_id(request))
        if record is None:
            raise DOError(404, "not_found", NOT_FOUND)
        return JSONResponse({"domain_record": record.to_api()})

    async def update_record(self, request: Request) -> Response:
        """PUT/PATCH /v2/domains/{zone}/records/{id}: change fields in place, same id.

        Only what a TXT update needs is modelled: `data`, `name`, `ttl`; the type never
        changes. The record, changed, is validated as a create would be.
        """
        zone = self._zone(request)
        record_id = _record_id(request)
        old = self.state.get_record(zone.name, record_id)
        if old is None:
            raise DOError(404, "not_found", NOT_FOUND)
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise DOError(400, "bad_request", "The request body must be a JSON object.")
        if "type" in body and body["type"] != old.type:
            raise DOError(422, "unprocessable_entity", "Type cannot be changed.")
        merged = {"type": old.type, "name": old.name, "data": old.data, "ttl": old.ttl,
                  **{k: body[k] for k in ("name", "data", "ttl") if k in body}}
        fields = _new_record(zone.name, merged)
        fields.pop("type")
        record = self.state.update_record(zone.name, record_id, **fields)
        if record is None:
            raise DOError(404, "not_found", NOT_FOUND)
        if self.state.draw_fault("ghost", request.method):
            # The change happened; only the answer is lost.
            raise DOError(500, "server_error", SERVER_ERROR)
        return JSONResponse({"domain_record": record.to_api()})

    async def delete_record(self, request: Request) -> Response:
        """DELETE /v2/domains/{zone}/records/{id}: 204 with an empty body."""
        zone = self._zone(request)
        if not self.state.delete_record(zone.name, _record_id(request)):
            raise DOError(404, "not_found", NOT_FOUND)
        return Response(status_code=204)


def _rate_headers(decision: RateDecision) -> dict[str, str]:
    headers = {
        "ratelimit-limit": str(decision.limit),
        "ratelimit-remaining": str(decision.remaining),
        "ratelimit-reset": str(decision.reset),
    }
    if decision.retry_after is not None:
        headers["retry-after"] = str(decision.retry_after)
    return headers


def _record_id(request: Request) -> int:
    raw: str = request.path_params["rid"]
    if not raw.isdigit():
        raise DOError(404, "not_found", NOT_FOUND)
    return int(raw)


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DOError(400, "bad_request", f"{name} must be an integer") from None


def _paginate(
    request: Request, items: Sequence[T]
) -> tuple[Sequence[T], dict[str, Any], dict[str, int]]:
    """Slice one page and build DigitalOcean's `links` and `meta`."""
    per_page = _int_param(request, "per_page", DEFAULT_PER_PAGE)
    per_page = DEFAULT_PER_PAGE if per_page < 1 else min(per_page, MAX_PER_PAGE)
    page = max(_int_param(request, "page", 1), 1)
    total = len(items)
    last = max(math.ceil(total / per_page), 1)

    def url(n: int) -> str:
        return str(request.url.include_query_params(page=n, per_page=per_page))

    pages: dict[str, str] = {}
    if page > 1:
        pages["first"] = url(1)
        pages["prev"] = url(min(page - 1, last))
    if page < last:
        pages["next"] = url(page + 1)
        pages["last"] = url(last)
    links: dict[str, Any] = {"pages": pages} if pages else {}
    start = (page - 1) * per_page
    return items[start : start + per_page], links, {"total": total}


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        raise DOError(400, "bad_request", "The request body is not valid JSON.") from None


def record_name(zone: str, name: str) -> str:
    """DigitalOcean's reading of a record name: the zone-relative form it will store.

    Relative names are kept as sent, so a dotless FQDN gets the zone appended a
    second time, as the real API does. An absolute name outside the zone is
    refused (unverified against the real API, which may do something odder).
    """
    name = name.strip().lower()
    if name == "@" or not name.endswith("."):
        return name
    absolute = name.rstrip(".")
    if absolute == zone:
        return "@"
    if absolute.endswith(f".{zone}"):
        return absolute[: -len(zone) - 1]
    raise DOError(422, "unprocessable_entity", f"Name {name} is not part of the domain {zone}.")


def _new_record(zone: str, body: Any) -> dict[str, Any]:
    """Validate a create body into `StandinState.add_record` keyword arguments."""
    if not isinstance(body, dict):
        raise DOError(400, "bad_request", "The request body must be a JSON object.")
    rtype = body.get("type")
    if rtype not in API_TYPES:
        raise DOError(422, "unprocessable_entity", "Type is not included in the list.")
    raw_name, data = body.get("name"), body.get("data")
    if not isinstance(raw_name, str) or not raw_name.strip():
        raise DOError(422, "unprocessable_entity", "Name can't be blank.")
    if not isinstance(data, str) or data == "":
        raise DOError(422, "unprocessable_entity", "Data needs to be a non-empty string.")
    name = record_name(zone, raw_name)
    try:
        if name != "@":
            dns.name.from_text(name, origin=dns.name.from_text(zone))
    except dns.name.NameTooLong:
        raise DOError(422, "unprocessable_entity", "Name is too long.") from None
    except dns.exception.DNSException:
        raise DOError(422, "unprocessable_entity", "Name is invalid.") from None
    ttl = body.get("ttl", DEFAULT_RECORD_TTL)
    if ttl is None:
        ttl = DEFAULT_RECORD_TTL
    if not _is_int(ttl):
        raise DOError(422, "unprocessable_entity", "TTL must be an integer.")
    if ttl < MIN_TTL:
        raise DOError(422, "unprocessable_entity", f"TTL must be at least {MIN_TTL} seconds.")
    # DigitalOcean keeps only the fields a type uses and answers null for the rest.
    extras = {"MX": ("priority",), "SRV": ("priority", "port", "weight"), "CAA": ("flags", "tag")}
    fields: dict[str, Any] = {"type": rtype, "name": name, "data": data, "ttl": ttl}
    for key in extras.get(rtype, ()):
        value = body.get(key)
        if key == "tag" and not (value is None or isinstance(value, str)):
            raise DOError(422, "unprocessable_entity", "Tag must be a string.")
        if key != "tag" and not (value is None or _is_int(value)):
            raise DOError(422, "unprocessable_entity", f"{key.capitalize()} must be an integer.")
        fields[key] = value
    try:
        record_rdata(Record(0, zone, **fields))
    except ValueError as exc:
        raise DOError(422, "unprocessable_entity", str(exc)) from None
    return fields


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _zone_file(state: StandinState, zone: Zone) -> str:
    """A BIND zone file of the zone, like the `zone_file` DigitalOcean returns."""
    ns = state.nameservers[0] if state.nameservers else zone.name
    lines = [
        f"$ORIGIN {zone.name}.",
        f"$TTL {zone.ttl}",
        f"{zone.name}. IN SOA {ns}. hostmaster.{zone.name}. {zone.serial} "
        + " ".join(str(t) for t in SOA_TIMERS),
    ]
    for record in state.records(zone.name):
        try:
            rdata = record_rdata(record)
        except ValueError:
            continue  # SOA (rendered above) and records seeded with unusable data
        lines.append(f"{record.fqdn}. {record.ttl} IN {record.type} {rdata.to_text()}")
    return "\n".join(lines) + "\n"


class _Control:
    """Test-control endpoints under `/_standin/`.

    They need no authentication and are not rate limited or logged: they exist
    for tests and the demo, which is one reason the stand-in binds to loopback only.
    """

    def __init__(self, state: StandinState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        """Routes of the control surface."""
        return [
            Route("/_standin/requests", self.get_requests, methods=["GET"]),
            Route("/_standin/requests", self.clear_requests, methods=["DELETE"]),
            Route("/_standin/faults", self.get_faults, methods=["GET"]),
            Route("/_standin/faults", self.set_faults, methods=["PUT", "POST"]),
            Route("/_standin/ratelimit", self.get_rate_limits, methods=["GET"]),
            Route("/_standin/ratelimit", self.set_rate_limits, methods=["PUT"]),
            Route("/_standin/propagation", self.get_propagation, methods=["GET"]),
            Route("/_standin/propagation", self.set_propagation, methods=["PUT"]),
            Route("/_standin/zones", self.get_zones, methods=["GET"]),
            Route("/_standin/zones", self.add_zone, methods=["POST"]),
            Route("/_standin/records", self.get_records, methods=["GET"]),
            Route("/_standin/records", self.add_record, methods=["POST"]),
            Route("/_standin/records/{rid}", self.delete_record, methods=["DELETE"]),
            Route("/_standin/reset", self.reset, methods=["POST"]),
        ]

    async def get_requests(self, request: Request) -> Response:
        """The request log with per-minute counts."""
        entries = self.state.requests()
        return JSONResponse(
            {
                "requests": [e.to_json() for e in entries],
                "total": len(entries),
                "last_minute": self.state.requests_in_last(60),
                "max_per_minute": self.state.max_requests_per_window(60),
            }
        )

    async def clear_requests(self, request: Request) -> Response:
        """Forget the request log."""
        self.state.clear_requests()
        return Response(status_code=204)

    async def get_faults(self, request: Request) -> Response:
        """Current fault settings."""
        return JSONResponse(self.state.faults.model_dump())

    async def set_faults(self, request: Request) -> Response:
        """PUT replaces all fault settings; POST changes only the fields it names."""
        body = await _control_body(request)
        try:
            if request.method == "PUT":
                self.state.set_faults(Faults.model_validate(body))
            else:
                self.state.update_faults(**body)
        except ValidationError as exc:
            return _bad(exc)
        return JSONResponse(self.state.faults.model_dump())

    async def get_rate_limits(self, request: Request) -> Response:
        """Current per-token limits."""
        return JSONResponse(self.state.rate_limits.model_dump())

    async def set_rate_limits(self, request: Request) -> Response:
        """Replace the per-token limits."""
        try:
            limits = RateLimits.model_validate(await _control_body(request))
        except ValidationError as exc:
            return _bad(exc)
        self.state.set_rate_limits(limits)
        return JSONResponse(limits.model_dump())

    async def get_propagation(self, request: Request) -> Response:
        """The DNS server's propagation delay: `{"delay": seconds}`."""
        return JSONResponse({"delay": self.state.propagation_delay})

    async def set_propagation(self, request: Request) -> Response:
        """Set the propagation delay: `{"delay": seconds}`."""
        delay = (await _control_body(request)).get("delay")
        try:
            if isinstance(delay, bool) or not isinstance(delay, int | float):
                raise ValueError("delay must be a number of seconds")
            self.state.set_propagation_delay(delay)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"delay": self.state.propagation_delay})

    async def get_zones(self, request: Request) -> Response:
        """All zones."""
        zones = [{"name": z.name, "ttl": z.ttl, "serial": z.serial} for z in self.state.zones()]
        return JSONResponse({"zones": zones})

    async def add_zone(self, request: Request) -> Response:
        """Create a zone: `{"name": ..., "ttl"?: int, "default_records"?: bool}`."""
        body = await _control_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return JSONResponse({"error": "name is required"}, status_code=400)
        ttl = body.get("ttl", DEFAULT_ZONE_TTL)
        if not _is_int(ttl):
            return JSONResponse({"error": "ttl must be an integer"}, status_code=400)
        if self.state.get_zone(name) is not None:
            return JSONResponse({"error": f"zone {name} exists"}, status_code=409)
        zone = self.state.add_zone(
            name, ttl=ttl, default_records=bool(body.get("default_records", True))
        )
        return JSONResponse({"name": zone.name, "ttl": zone.ttl}, status_code=201)

    async def get_records(self, request: Request) -> Response:
        """Every record of every zone, with its zone and FQDN."""
        records = [{**r.to_api(), "zone": r.zone, "fqdn": r.fqdn} for r in self.state.all_records()]
        return JSONResponse({"records": records})

    async def add_record(self, request: Request) -> Response:
        """Create a record behind the API: any type, no TTL floor, name as the API reads it."""
        body = await _control_body(request)
        try:
            zone = str(body["zone"]).rstrip(".").lower()
            record = self.state.add_record(
                zone,
                str(body["type"]),
                record_name(zone, str(body["name"])),
                str(body["data"]),
                ttl=int(body.get("ttl", DEFAULT_RECORD_TTL)),
                **{k: body.get(k) for k in ("priority", "port", "weight", "flags", "tag")},
            )
        except (KeyError, ValueError, TypeError) as exc:
            return JSONResponse({"error": f"bad record: {exc!r}"}, status_code=400)
        except DOError as exc:
            return JSONResponse({"error": exc.message}, status_code=400)
        return JSONResponse({**record.to_api(), "zone": record.zone}, status_code=201)

    async def delete_record(self, request: Request) -> Response:
        """Delete a record by id, whatever its zone."""
        rid = _record_id(request)
        for record in self.state.all_records():
            if record.id == rid and self.state.delete_record(record.zone, rid):
                return Response(status_code=204)
        return JSONResponse({"error": "no such record"}, status_code=404)

    async def reset(self, request: Request) -> Response:
        """Back to empty zones, no log, no faults; `{"zones": [...]}` picks the zones."""
        raw = await request.body()
        body = await _control_body(request) if raw.strip() else {}
        zones = body.get("zones", [z.name for z in self.state.zones()])
        self.state.reset(zones)
        return Response(status_code=204)


async def _control_body(request: Request) -> dict[str, Any]:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise DOError(400, "bad_request", "The request body must be a JSON object.")
    return body


def _bad(exc: ValidationError) -> JSONResponse:
    return JSONResponse(
        {"error": exc.errors(include_url=False, include_context=False)}, status_code=400
    )
