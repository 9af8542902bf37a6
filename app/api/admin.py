"""The admin API (``Authorization: Bearer <ADMIN_TOKEN>``): the same services as the CLI."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from app import __version__
from app.api.deps import AdminDep, ClientDep, ServicesDep
from app.core.accounts import MAX_NOTE_LENGTH, MAX_VALUES_LIMIT
from app.core.models import Account, AccountChanges, AccountFilter, AuditQuery, Mode
from app.core.names import in_utc, normalize_domain, parse_allowfrom
from app.db.budget import window_usage
from app.errors import InvalidInput, ProviderError
from app.observability import REPAIR_KINDS, Metrics

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])

# Far beyond any real account count, and far inside the databases' 64-bit OFFSET.
MAX_OFFSET = 1_000_000_000


# An aware datetime that exists in UTC: what every datetime the admin API takes must be.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(in_utc)]

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No or wrong admin token: `{\"error\": \"forbidden\"}`"},
    403: {"description": "The admin API is off (no ADMIN_TOKEN set)"},
}
ACCOUNT_EXAMPLE = {
    "username": "9b3b2d5e-5a4e-4c1e-9d57-0a4f3a0d2b11",
    "password": "m5yq3A2mF0oZ1nZy7bq7xw4r3Yt0sR9pQ8cX2vLk",
    "fulldomain": "_acme-challenge.www.example.com",
    "subdomain": "0c8e2f7a-1a53-4a43-8e0b-2f0f2d6e8c31",
    "allowfrom": ["192.0.2.0/24"],
}


class CreateAccount(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"domain": "www.example.com", "allowfrom": ["192.0.2.0/24"], "note": "web"},
            {"domain": "www.customer.net", "delegated": True},
        ]},
    )

    domain: str | None = Field(default=None, max_length=300,
                               description="The domain the certificate is for.")
    delegated: bool = Field(default=False,
                            description="Bind a random name under DELEGATION_DOMAIN.")
    allowfrom: list[str] = Field(default_factory=list, max_length=64,
                                 description="CIDRs allowed to use the credential.")
    note: str | None = Field(default=None, max_length=MAX_NOTE_LENGTH)
    expires_at: UtcDatetime | None = Field(default=None,
                                           description="When the credential stops working.")
    max_values: int | None = Field(default=None, ge=1, le=MAX_VALUES_LIMIT,
                                   description="Values kept live at its name.")


class ChangeAccount(BaseModel):
    """Fields given are changed; ``null`` clears ``note`` and ``expires_at``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"allowfrom": ["198.51.100.0/24"], "note": "moved to the new cluster"},
        {"expires_at": None},
    ]})

    allowfrom: list[str] | None = Field(default=None, max_length=64)
    note: str | None = Field(default=None, max_length=MAX_NOTE_LENGTH)
    expires_at: UtcDatetime | None = None


class AccountView(BaseModel):
    """An account as the admin sees it: never the key."""

    username: str
    fulldomain: str
    subdomain: str
    zone: str
    mode: str
    domain: str | None
    allowfrom: list[str]
    note: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None
    max_values: int | None

    @classmethod
    def of(cls, account: Account) -> AccountView:
        return cls(
            username=account.username,
            fulldomain=account.name,
            subdomain=account.label,
            zone=account.zone,
            mode=account.mode.value,
            domain=account.domain,
            allowfrom=[str(n) for n in account.allowfrom],
            note=account.note,
            created_at=account.created_at,
            last_used_at=account.last_used_at,
            revoked_at=account.revoked_at,
            expires_at=account.expires_at,
            max_values=account.max_values,
        )


class AuditView(BaseModel):
    at: datetime
    event: str
    outcome: str
    username: str | None
    client: str | None
    name: str | None
    value_fingerprint: str | None
    detail: str | None
    count: int = Field(description="Refusals repeated within 10 minutes share one event")
    last_at: datetime | None = Field(description="The last of them, when count > 1")


@router.post("/accounts", status_code=201, responses={
    201: {"description": "The acme-dns account JSON (key shown once) and the account's fields",
          "content": {"application/json": {"example": ACCOUNT_EXAMPLE}}},
    409: {"description": "`name_in_use`"}, 422: {"description": "`zone_not_found`"}, **ERRORS})
async def create_account(body: CreateAccount, services: ServicesDep, client: ClientDep
                         ) -> JSONResponse:
    """Issue a credential; the answer holds its key, shown this once."""
    issued = await services.accounts.create(
        domain=body.domain,
        delegated=body.delegated,
        allowfrom=parse_allowfrom(body.allowfrom),
        note=body.note,
        expires_at=body.expires_at,
        max_values=body.max_values,
        client=client.label,
        via="admin",
    )
    view = AccountView.of(issued.account).model_dump(mode="json")
    return JSONResponse({**view, **issued.acme_dns_json()}, status_code=201)


@router.get("/accounts", responses=ERRORS)
async def list_accounts(
    services: ServicesDep,
    client: ClientDep,
    include_revoked: bool = False,
    mode: Mode | None = None,
    domain: Annotated[str | None, Query(max_length=300)] = None,
    stale_days: Annotated[int | None, Query(ge=0, le=36500,
                                            description="Unused for this many days")] = None,
    expiring_days: Annotated[int | None, Query(
        ge=0, le=36500, description="Expiring within this many days (or expired)")] = None,
    q: Annotated[str | None, Query(max_length=100, pattern=r"^[^\x00-\x1f]*$", description=(
        "A substring of the username, bound name, domain or note"))] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[AccountView]:
    """Accounts, oldest first, filtered; never their keys."""
    now = services.accounts.now()
    where = AccountFilter(
        include_revoked=include_revoked, mode=mode,
        domain=normalize_domain(domain) if domain else None,
        stale_before=now - timedelta(days=stale_days) if stale_days is not None else None,
        expires_before=now + timedelta(days=expiring_days) if expiring_days is not None
        else None,
        search=(q.strip() or None) if q else None,
        limit=limit, offset=offset,
    )
    found = await services.accounts.list_accounts(where)
    await services.accounts.record_read("accounts", client=client.label)
    return [AccountView.of(a) for a in found]


@router.get("/accounts/{username}", responses={404: {"description": "`account_not_found`"},
                                               **ERRORS})
async def show_account(username: str, services: ServicesDep, client: ClientDep
                       ) -> AccountView:
    """One account; never its key."""
    account = await services.accounts.get(username)
    await services.accounts.record_read("account", client=client.label,
                                        username=account.username)
    return AccountView.of(account)


@router.patch("/accounts/{username}", responses={404: {"description": "`account_not_found`"},
                                                 **ERRORS})
async def change_account(username: str, body: ChangeAccount, services: ServicesDep,
                         client: ClientDep) -> AccountView:
    """Change allowfrom, note or expiry."""
    given = body.model_fields_set
    changes = AccountChanges(
        allowfrom=tuple(parse_allowfrom(body.allowfrom))
        if "allowfrom" in given and body.allowfrom is not None else None,
        note=body.note,
        clear_note="note" in given and body.note is None,
        expires_at=body.expires_at,
        clear_expiry="expires_at" in given and body.expires_at is None,
    )
    return AccountView.of(await services.accounts.change(username, changes, client=client.label))


@router.post("/accounts/{username}/rotate", responses={
    200: {"description": "The acme-dns account JSON with the new key, shown once",
          "content": {"application/json": {"example": ACCOUNT_EXAMPLE}}},
    404: {"description": "`account_not_found`"}, **ERRORS})
async def rotate_account(username: str, services: ServicesDep, client: ClientDep
                         ) -> JSONResponse:
    """A new key at once; the old key stops working; the name and its values stay."""
    issued = await services.accounts.rotate(username, client=client.label)
    return JSONResponse(issued.acme_dns_json())


CHECK_EXAMPLE = {
    "username": "9b3b2d5e-5a4e-4c1e-9d57-0a4f3a0d2b11",
    "fulldomain": "4f0c8a52-9e0b-4c49-9b0e-6a2f0e1c7d33.acme.example.org",
    "domain": "www.customer.net", "mode": "delegated", "ok": False,
    "findings": [
        {"check": "account", "ok": True, "detail": "active", "fix": None},
        {"check": "zone_delegated", "ok": True, "detail": "example.org is served by "
         "DigitalOcean", "fix": None},
        {"check": "cname", "ok": False, "detail": "_acme-challenge.www.customer.net has no "
         "CNAME", "fix": "create this record where www.customer.net is hosted: "
         "_acme-challenge.www.customer.net. CNAME "
         "4f0c8a52-9e0b-4c49-9b0e-6a2f0e1c7d33.acme.example.org."},
        {"check": "values_served", "ok": True, "detail": "no value is live", "fix": None},
    ],
}


@router.get("/accounts/{username}/check", responses={
    200: {"description": "The findings, each with its fix; `ok` is true when every check "
          "holds", "content": {"application/json": {"example": CHECK_EXAMPLE}}},
    404: {"description": "`account_not_found`"}, **ERRORS})
async def check_account(
    username: str, services: ServicesDep, client: ClientDep,
    nameserver: Annotated[str | None, Query(
        max_length=300, description="HOST:PORT to ask every DNS question (default: the "
        "resolver for NS and CNAME, DigitalOcean's nameservers for values)")] = None,
) -> JSONResponse:
    """Does the binding work end to end: zone on DigitalOcean's nameservers, the CNAME of
    a delegated name, the live values served. Always 200 with the report (a failed check
    is a finding, not an error: every error body is ``{"error": code}``); ``ok`` says."""
    from app.binding import check_binding
    from app.propagation import parse_nameserver

    if nameserver is not None:
        try:
            parse_nameserver(nameserver)
        except ValueError:
            raise InvalidInput("nameserver: HOST:PORT") from None
    report = await check_binding(services, username, nameserver=nameserver)
    await services.accounts.record_read("check", client=client.label,
                                        username=report.username)
    return JSONResponse(report.as_json())


@router.delete("/accounts/{username}", responses={404: {"description": "`account_not_found`"},
                                                  **ERRORS})
async def revoke_account(
    username: str, services: ServicesDep, client: ClientDep,
    purge: Annotated[bool, Query(description="Also delete the account itself")] = False,
) -> JSONResponse:
    """Revoke at once (its records are deleted from DigitalOcean); ``purge`` forgets it.

    ``removed_values`` are gone from DigitalOcean; ``pending_removal`` failed there and
    are retried by the reconciler (the credential is revoked either way)."""
    if purge:
        removed = await services.accounts.delete(username, client=client.label)
        return JSONResponse({"username": username.lower(), "deleted": True,
                             "removed_values": removed.removed,
                             "pending_removal": removed.pending})
    account, removed = await services.accounts.revoke(username, client=client.label)
    return JSONResponse({**AccountView.of(account).model_dump(mode="json"),
                         "removed_values": removed.removed,
                         "pending_removal": removed.pending})


@router.get("/audit", responses=ERRORS)
async def audit(
    services: ServicesDep,
    client: ClientDep,
    since: UtcDatetime | None = None,
    account: Annotated[str | None, Query(pattern=r"^[0-9a-fA-F-]{36}$")] = None,
    event: Annotated[str | None, Query(pattern=r"^[a-z][a-z._]{0,63}$")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[AuditView]:
    """The audit trail, newest first. Values appear as fingerprints; keys never."""
    found = await services.accounts.audit_trail(
        AuditQuery(since=since, username=account.lower() if account else None, event=event,
                   limit=limit))
    await services.accounts.record_read("audit", client=client.label)
    return [AuditView(**asdict(e)) for e in found]


class DatabaseHealth(BaseModel):
    ok: bool
    ms: float | None = Field(description="How long a trivial query took")


class DigitalOceanHealth(BaseModel):
    reachable: bool | None = Field(
        description="Whether the latest call got an answer below 500; null: no call yet")
    last_call_at: datetime | None
    last_operation: str | None
    last_status: str | None = Field(description="HTTP status, or the error's name")
    ratelimit_remaining: int | None = Field(description="DigitalOcean's own count, as last "
                                                          "answered (the whole account)")


class BudgetHealth(BaseModel):
    per_minute: int
    per_hour: int
    used_last_minute: int = Field(description="Calls by every process of the deployment")
    used_last_hour: int


class ReconcileHealth(BaseModel):
    interval: int
    last_at: datetime | None = Field(description="This process's latest pass; null: none yet")
    outcome: str | None = Field(description="ok, partial, skipped (another replica holds the "
                                            "lock) or failed")
    seconds: float | None
    repairs: dict[str, int]
    failures: int


class HealthView(BaseModel):
    version: str
    database: DatabaseHealth
    digitalocean: DigitalOceanHealth
    budget: BudgetHealth
    reconcile: ReconcileHealth
    public_url: str | None


@router.get("/health", responses=ERRORS)
async def health(
    request: Request, services: ServicesDep,
    probe: Annotated[bool, Query(description=(
        "Ask DigitalOcean now (one call from the budget) instead of reporting the latest "
        "call"))] = False,
) -> HealthView:
    """What the console's health page shows: database, DigitalOcean, budget, reconciler.
    Not audited: it shows no account and changes nothing (a probe spends one call)."""
    metrics: Metrics = request.app.state.metrics
    settings = services.settings
    started = time.perf_counter()
    try:
        await services.store.ping()
        database = DatabaseHealth(ok=True, ms=round((time.perf_counter() - started) * 1000, 1))
        minute, hour = await window_usage(services.engine)
    except Exception:  # the answer is "the database does not answer", not a 500
        database = DatabaseHealth(ok=False, ms=None)
        minute = hour = 0
    if probe:
        with contextlib.suppress(ProviderError):  # the outcome is in metrics.last_call
            await services.provider.list_zones()
    call = metrics.last_call
    last = metrics.last_pass
    report = last.report if last is not None else None
    outcome = None
    if last is not None:
        outcome = ("failed" if report is None else "skipped" if report.skipped
                   else "partial" if report.failures else "ok")
    return HealthView(
        version=__version__,
        database=database,
        digitalocean=DigitalOceanHealth(
            reachable=call.reached if call else None,
            last_call_at=call.at if call else None,
            last_operation=call.operation if call else None,
            last_status=call.status if call else None,
            ratelimit_remaining=metrics.ratelimit_remaining,
        ),
        budget=BudgetHealth(per_minute=settings.do_rate_per_minute,
                            per_hour=settings.do_rate_per_hour,
                            used_last_minute=minute, used_last_hour=hour),
        reconcile=ReconcileHealth(
            interval=settings.reconcile_interval,
            last_at=last.at if last else None,
            outcome=outcome,
            seconds=round(last.seconds, 3) if last else None,
            repairs={kind: getattr(report, kind) for kind in REPAIR_KINDS} if report else {},
            failures=len(report.failures) if report else 0,
        ),
        public_url=settings.public_url,
    )
