"""Where the account and audit commands act: on the database (local) or through a running
service's admin API (``--server``). Both answer the admin API's JSON documents, so every
command prints the same thing in either mode."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

from app.cli.common import clean_errors, run

if TYPE_CHECKING:
    import httpx

    from app.config import Settings
    from app.wiring import Services

T = TypeVar("T")
Json = dict[str, Any]


class Backend(Protocol):
    public_url: str | None

    def now(self) -> datetime: ...
    def create(self, body: Json) -> Json: ...
    def list_accounts(self, *, include_revoked: bool, mode: str | None, domain: str | None,
             stale_days: int | None, limit: int) -> list[Json]: ...
    def show(self, username: str) -> Json: ...
    def rotate(self, username: str) -> Json: ...
    def change(self, username: str, body: Json) -> Json: ...
    def revoke(self, username: str, *, purge: bool) -> Json: ...
    def audit(self, *, since: datetime | None, account: str | None, event: str | None,
              limit: int) -> list[Json]: ...
    def check(self, username: str, nameserver: str | None) -> Json: ...


def _view(account: Any) -> Json:
    from app.api.admin import AccountView

    return AccountView.of(account).model_dump(mode="json")


class Local:
    """The database named by the settings; only writing commands migrate it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.public_url: str | None = settings.public_url

    def _write(self, work: Callable[[Services], Awaitable[T]]) -> T:
        return run(self.settings, work)

    def _read(self, work: Callable[[Services], Awaitable[T]]) -> T:
        """Reads change nothing, not even the schema: an outdated one is a message."""
        from app.db.migrate import current_revision, head_revision
        from app.wiring import build_services

        async def main() -> T:
            async with build_services(self.settings) as services:
                try:
                    current = await current_revision(services.engine)
                except Exception:  # an unreachable database: the read below says why
                    current = None
                if current != head_revision(self.settings.database_url):
                    raise click.ClickException(
                        "the database schema is not up to date (read commands change "
                        "nothing): run `acme-delegate migrate` first")
                return await work(services)

        return clean_errors(lambda: asyncio.run(main()))

    def now(self) -> datetime:
        return datetime.now(UTC)

    def create(self, body: Json) -> Json:
        from app.api.admin import CreateAccount
        from app.core.names import parse_allowfrom

        fields = CreateAccount.model_validate(body)

        async def work(s: Services) -> Json:
            issued = await s.accounts.create(
                domain=fields.domain, delegated=fields.delegated,
                allowfrom=parse_allowfrom(fields.allowfrom), note=fields.note,
                expires_at=fields.expires_at, max_values=fields.max_values, via="cli")
            return {**_view(issued.account), **issued.acme_dns_json()}

        return self._write(work)

    def list_accounts(self, *, include_revoked: bool, mode: str | None, domain: str | None,
             stale_days: int | None, limit: int) -> list[Json]:
        from app.core.models import AccountFilter, Mode
        from app.core.names import normalize_domain

        async def work(s: Services) -> list[Json]:
            stale = (s.accounts.now() - timedelta(days=stale_days)
                     if stale_days is not None else None)
            found = await s.accounts.list_accounts(AccountFilter(
                include_revoked=include_revoked, mode=Mode(mode) if mode else None,
                domain=normalize_domain(domain) if domain else None, stale_before=stale,
                limit=limit))
            return [_view(a) for a in found]

        return self._read(work)

    def show(self, username: str) -> Json:
        async def work(s: Services) -> Json:
            return _view(await s.accounts.get(username))

        return self._read(work)

    def rotate(self, username: str) -> Json:
        async def work(s: Services) -> Json:
            issued = await s.accounts.rotate(username, client="cli")
            return {**_view(issued.account), **issued.acme_dns_json()}

        return self._write(work)

    def change(self, username: str, body: Json) -> Json:
        from app.api.admin import ChangeAccount
        from app.core.models import AccountChanges
        from app.core.names import parse_allowfrom

        fields = ChangeAccount.model_validate(body)
        given = fields.model_fields_set
        changes = AccountChanges(
            allowfrom=tuple(parse_allowfrom(fields.allowfrom))
            if fields.allowfrom is not None else None,
            note=fields.note, clear_note="note" in given and fields.note is None,
            expires_at=fields.expires_at,
            clear_expiry="expires_at" in given and fields.expires_at is None)

        async def work(s: Services) -> Json:
            return _view(await s.accounts.change(username, changes, client="cli"))

        return self._write(work)

    def revoke(self, username: str, *, purge: bool) -> Json:
        async def work(s: Services) -> Json:
            # The admin API's answers, field for field.
            if purge:
                removed = await s.accounts.delete(username, client="cli")
                return {"username": username.lower(), "deleted": True,
                        "removed_values": removed.removed,
                        "pending_removal": removed.pending}
            account, removed = await s.accounts.revoke(username, client="cli")
            return {**_view(account), "removed_values": removed.removed,
                    "pending_removal": removed.pending}

        return self._write(work)

    def audit(self, *, since: datetime | None, account: str | None, event: str | None,
              limit: int) -> list[Json]:
        from app.api.admin import AuditView
        from app.core.models import AuditQuery

        async def work(s: Services) -> list[Json]:
            found = await s.accounts.audit_trail(AuditQuery(
                since=since, username=account.lower() if account else None, event=event,
                limit=limit))
            return [AuditView(**asdict(e)).model_dump(mode="json") for e in reversed(found)]

        return self._read(work)

    def check(self, username: str, nameserver: str | None) -> Json:
        from app.binding import check_binding

        async def work(s: Services) -> Json:
            return (await check_binding(s, username, nameserver=nameserver)).as_json()

        return self._read(work)


class Remote:
    """A running acme-delegate, through its admin API."""

    def __init__(self, server: str, token: str) -> None:
        self.server = server.rstrip("/")
        self.public_url: str | None = self.server
        self.token = token

    def _call(self, method: str, path: str, *, params: Json | None = None,
              body: Json | None = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        import httpx

        try:
            with httpx.Client(base_url=self.server, timeout=60,
                              headers={"Authorization": f"Bearer {self.token}"}) as http:
                response = http.request(method, path, params=params, json=body)
        except httpx.HTTPError as exc:
            raise click.ClickException(
                f"cannot reach {self.server}: {type(exc).__name__}: {exc}") from None
        if response.status_code not in ok:
            raise click.ClickException(_error(response))
        return response.json()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def create(self, body: Json) -> Json:
        return dict(self._call("POST", "/admin/accounts", body=body))

    def list_accounts(self, *, include_revoked: bool, mode: str | None, domain: str | None,
             stale_days: int | None, limit: int) -> list[Json]:
        params: Json = {"include_revoked": include_revoked}
        params.update({k: v for k, v in (("mode", mode), ("domain", domain),
                                         ("stale_days", stale_days)) if v is not None})
        found: list[Json] = []
        while len(found) < limit:
            page = min(1000, limit - len(found))
            batch = self._call("GET", "/admin/accounts",
                               params={**params, "limit": page, "offset": len(found)})
            found.extend(batch)
            if len(batch) < page:
                break
        return found

    def show(self, username: str) -> Json:
        return dict(self._call("GET", f"/admin/accounts/{username}"))

    def rotate(self, username: str) -> Json:
        # The rotate answer is exactly acme-dns's account JSON; the formats also need the
        # account's domain, so its fields come from a read after the rotation.
        issued = dict(self._call("POST", f"/admin/accounts/{username}/rotate"))
        return {**self.show(username), **issued}

    def change(self, username: str, body: Json) -> Json:
        return dict(self._call("PATCH", f"/admin/accounts/{username}", body=body))

    def revoke(self, username: str, *, purge: bool) -> Json:
        return dict(self._call("DELETE", f"/admin/accounts/{username}",
                               params={"purge": purge}))

    def audit(self, *, since: datetime | None, account: str | None, event: str | None,
              limit: int) -> list[Json]:
        params: Json = {"limit": limit}
        if since is not None:
            params["since"] = since.isoformat()
        params.update({k: v for k, v in (("account", account), ("event", event)) if v})
        return list(reversed(self._call("GET", "/admin/audit", params=params)))

    def check(self, username: str, nameserver: str | None) -> Json:
        params = {"nameserver": nameserver} if nameserver else None
        # The report's "ok" says whether every check holds.
        return dict(self._call("GET", f"/admin/accounts/{username}/check", params=params))


def _error(response: httpx.Response) -> str:
    try:
        code = response.json().get("error")
    except ValueError:
        code = None
    hint = {401: " (check the admin token)", 403: " (the server has no ADMIN_TOKEN set)"}
    return f"{code or 'error'}: HTTP {response.status_code}{hint.get(response.status_code, '')}"


def backend(ctx: click.Context) -> Backend:
    """Remote when ``--server`` (or ACME_DELEGATE_SERVER) is given, else local."""
    from app.cli.common import settings

    options = ctx.find_root().ensure_object(dict)
    if "backend" not in options:
        server = options.get("server")
        options["backend"] = (Remote(server, _admin_token(options.get("token_file")))
                              if server else Local(settings()))
    found: Backend = options["backend"]
    return found


def _admin_token(token_file: str | None) -> str:
    import os
    from pathlib import Path

    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise click.ClickException(f"--token-file: {exc.strerror}: {token_file}") from None
    else:
        token = os.environ.get("ACME_DELEGATE_ADMIN_TOKEN", "").strip()
    if not token:
        raise click.ClickException(
            "--server needs the admin token: ACME_DELEGATE_ADMIN_TOKEN or --token-file FILE")
    return token
