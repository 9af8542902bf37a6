"""The admin API (``Authorization: Bearer <ADMIN_TOKEN>``): the same services as the CLI."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import AdminDep, ClientDep, ServicesDep
from app.core.models import Account
from app.core.names import parse_allowfrom

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[AdminDep])


class CreateAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str | None = Field(default=None, max_length=300, examples=["www.example.com"])
    delegated: bool = False
    allowfrom: list[str] = Field(default_factory=list, max_length=64)
    note: str | None = Field(default=None, max_length=500)


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
        )


@router.post("/accounts", status_code=201)
async def create_account(body: CreateAccount, services: ServicesDep, client: ClientDep
                         ) -> JSONResponse:
    """Issue a credential; the answer is the acme-dns account JSON, key shown once."""
    issued = await services.accounts.create(
        domain=body.domain,
        delegated=body.delegated,
        allowfrom=parse_allowfrom(body.allowfrom),
        note=body.note,
        client=client.label,
        via="admin",
    )
    view = AccountView.of(issued.account).model_dump(mode="json")
    return JSONResponse({**view, **issued.acme_dns_json()}, status_code=201)


@router.get("/accounts")
async def list_accounts(services: ServicesDep, include_revoked: bool = False
                        ) -> list[AccountView]:
    return [AccountView.of(a) for a in await services.accounts.list(
        include_revoked=include_revoked)]


@router.get("/accounts/{username}")
async def show_account(username: str, services: ServicesDep) -> AccountView:
    return AccountView.of(await services.accounts.get(username))


@router.delete("/accounts/{username}")
async def revoke_account(username: str, services: ServicesDep, client: ClientDep
                         ) -> JSONResponse:
    """Revoke at once; its records are deleted from DigitalOcean."""
    account, removed = await services.accounts.revoke(username, client=client.label)
    return JSONResponse({**AccountView.of(account).model_dump(mode="json"),
                         "removed_values": removed})
