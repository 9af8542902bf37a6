"""Helpers for the security tests: a harness that also exposes the ASGI app, raw ASGI
requests (exact bytes: NUL in header values, lying Content-Length, streamed bodies,
un-normalised paths), and before/after views of the database and DNS."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from app.config import Settings
from app.db.tables import AccountRow, AuditRow, TxtValueRow
from app.main import create_app
from app.standin import StandinState
from tests.conftest import Harness, dns_for, do_transport
from tests.support.asgi import RawResponse

# The abuse limits (app/pacing/limits.py) would answer 429 long before a fuzzer is done; these
# tests are about parsing and scope, so the limits are raised where the settings exist.
_LENIENT_LIMITS = {
    "auth_failures_per_minute": 1_000_000,
    "updates_per_minute": 1_000_000,
    "registrations_per_hour": 1_000_000,
}


def lenient(**overrides: Any) -> dict[str, Any]:
    """Settings overrides with abuse limits out of the way (only those Settings knows)."""
    values = {k: v for k, v in _LENIENT_LIMITS.items() if k in Settings.model_fields}
    values.update(overrides)
    return values


@dataclass
class AppHarness(Harness):
    """``Harness`` plus the ASGI app itself, for requests httpx would not send."""

    app: Any = None


def app_harness_factory(make_settings: Callable[..., Settings], do_state: StandinState
                        ) -> Callable[..., Any]:
    @asynccontextmanager
    async def build(client_ip: str = "127.0.0.1", **overrides: Any
                    ) -> AsyncIterator[AppHarness]:
        async with dns_for(do_state) as nameservers, do_transport(do_state) as do_http:
            settings = make_settings(**lenient(**{"nameservers": nameservers, **overrides}))
            app = create_app(settings, http=do_http, reconcile=False)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app, client=(client_ip, 40000))
                async with httpx.AsyncClient(transport=transport,
                                             base_url="http://acme.test") as client:
                    yield AppHarness(client, app.state.services, do_state,
                                     app.state.metrics, app)

    return build


# --- what a refusal looks like ---------------------------------------------------------

_CODE = re.compile(r"^[a-z][a-z_]{1,63}$")


def error_code(status: int, headers: Any, body: bytes) -> str:
    """The ``{"error": code}`` of a JSON error answer; fails on anything else."""
    if isinstance(headers, httpx.Headers):
        content_type = headers.get("content-type", "")
    else:
        content_type = next((v.decode("latin-1") for k, v in headers
                             if k.lower() == b"content-type"), "")
    assert b"Traceback" not in body and b'File "' not in body, body[:500]
    assert content_type.startswith("application/json"), (status, content_type, body[:200])
    data = json.loads(body)
    assert isinstance(data, dict) and set(data) == {"error"}, data
    assert isinstance(data["error"], str) and _CODE.match(data["error"]), data
    return data["error"]


def refused(response: RawResponse | httpx.Response) -> tuple[int, str]:
    """(status, code) of a 4xx JSON error; fails on 2xx, 3xx, 5xx or a non-JSON body."""
    headers: httpx.Headers | list[tuple[bytes, bytes]]
    if isinstance(response, httpx.Response):
        status, headers, body = response.status_code, response.headers, response.content
    else:
        status, headers, body = response.status, response.headers, response.body
    assert 400 <= status < 500, (status, body[:300])
    return status, error_code(status, headers, body)


# --- state before and after ------------------------------------------------------------

MUTATING = ("POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class State:
    dns: frozenset[tuple[str, str, str, str]]
    do_writes: int
    accounts: tuple[tuple[Any, ...], ...]
    values: tuple[tuple[Any, ...], ...]
    audit: tuple[tuple[Any, ...], ...]
    refusals: int


def _row(row: Any, table: Any) -> tuple[Any, ...]:
    return tuple(getattr(row, c.key) for c in table.__table__.columns)


def is_refusal(event: str, outcome: str) -> bool:
    """Audit rows a refused request is expected to leave: failed authentications and
    refused operations (``update``/``present``/``register``… with an error outcome)."""
    return event == "auth.failed" or outcome not in ("ok", "absent")


async def state_of(h: Harness) -> State:
    async with h.services.engine.connect() as conn:
        accounts = (await conn.execute(select(AccountRow).order_by(AccountRow.id))).all()
        values = (await conn.execute(select(TxtValueRow).order_by(TxtValueRow.id))).all()
        audit = (await conn.execute(select(AuditRow).order_by(AuditRow.id))).all()
    kept = [r for r in audit if not is_refusal(r.event, r.outcome)]
    return State(
        dns=frozenset(h.snapshot()),
        do_writes=sum(h.do_calls(m) for m in MUTATING),
        accounts=tuple(_row(r, AccountRow) for r in accounts),
        values=tuple(_row(r, TxtValueRow) for r in values),
        audit=tuple((r.event, r.outcome, r.username, r.name, r.value_fingerprint)
                    for r in kept),
        refusals=len(audit) - len(kept),
    )


def assert_unchanged(before: State, after: State, what: str = "") -> None:
    assert after.dns == before.dns, (what, "DNS changed", before.dns ^ after.dns)
    assert after.do_writes == before.do_writes, (what, "DigitalOcean was written to")
    assert after.accounts == before.accounts, (what, "accounts changed")
    assert after.values == before.values, (what, "TXT value rows changed")
    assert after.audit == before.audit, (what, "non-refusal audit rows appeared",
                                         after.audit[len(before.audit):])
