"""The ``acme-delegate`` command line. It calls the same services as the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from app.config import Settings
from app.core.errors import DomainError, InvalidAllowfrom
from app.core.models import Account, IssuedAccount
from app.core.names import parse_allowfrom
from app.wiring import Services, StartupError, build_services, check_provider

T = TypeVar("T")
FORMATS = ("acme-dns", "cert-manager", "lego")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "settings"
            lines.append(f"  ACME_DELEGATE_{field.upper()}: {error['msg']}")
        raise click.ClickException("configuration error:\n" + "\n".join(lines)) from None


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("alembic", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _run(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    """Migrate, build the services, run ``work``; domain errors become clean messages."""
    from app.db.migrate import upgrade

    upgrade(settings.database_url)

    async def main() -> T:
        async with build_services(settings) as services:
            return await work(services)

    try:
        return asyncio.run(main())
    except DomainError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from None
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None


def render(issued: IssuedAccount, fmt: str, server_url: str | None) -> dict[str, Any]:
    account = issued.acme_dns_json()
    if fmt == "acme-dns":
        return account
    key = issued.account.domain
    if key is None:
        raise click.ClickException(f"--format {fmt} needs --domain")
    if fmt == "cert-manager":
        # cert-manager's acmeDNS secret: keyed by the bare domain.
        return {key: account}
    lego = {k: account[k] for k in ("fulldomain", "subdomain", "username", "password")}
    if server_url:
        lego["server_url"] = server_url
    return {key: lego}


def account_view(account: Account) -> dict[str, Any]:
    return {
        "username": account.username,
        "fulldomain": account.name,
        "subdomain": account.label,
        "zone": account.zone,
        "mode": account.mode.value,
        "domain": account.domain,
        "allowfrom": [str(n) for n in account.allowfrom],
        "note": account.note,
        "created_at": account.created_at.isoformat(),
        "last_used_at": account.last_used_at.isoformat() if account.last_used_at else None,
        "revoked_at": account.revoked_at.isoformat() if account.revoked_at else None,
    }


@click.group()
@click.version_option(package_name="acme-delegate")
def main() -> None:
    """acme-delegate: ACME DNS-01 credentials bound to one name, over DigitalOcean."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--standin-dns-port", default=8053, show_default=True,
              type=click.IntRange(0, 65535),
              help="Without a DigitalOcean token: the stand-in's DNS port on 127.0.0.1.")
def serve(host: str, port: int, standin_dns_port: int) -> None:
    """Run the API (migrations are applied first).

    Without a DigitalOcean token it runs against a local stand-in of the
    DigitalOcean API and DNS, issues a demo credential and says how to use it.
    """
    import uvicorn

    from app.db.migrate import upgrade
    from app.main import create_app

    settings = _settings()
    _configure_logging(settings)
    with contextlib.ExitStack() as stack:
        demo = settings.token() is None
        if demo:
            from app.demo import start_demo

            settings = stack.enter_context(start_demo(settings, dns_port=standin_dns_port))
        upgrade(settings.database_url)
        _run(settings, check_provider)
        if demo:
            from app.demo import announce

            issued = _run(settings, lambda s: s.accounts.create(
                domain="www.example.com", delegated=False, note="demo", via="demo"))
            announce(settings, issued, api_url=f"http://{host}:{port}",
                     dns_port=standin_dns_port)
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            # Our own X-Forwarded-For handling (TRUSTED_PROXIES) is the only one: uvicorn's
            # would trust 127.0.0.1 by default and let a local proxy choose the client address.
            proxy_headers=False,
            server_header=False,
            log_config=None,
            log_level=settings.log_level.lower(),
        )


@main.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from app.db.migrate import upgrade

    upgrade(_settings().database_url)
    click.echo("database is up to date")


@main.group()
def accounts() -> None:
    """Issue, list, show and revoke credentials."""


@accounts.command("create")
@click.option("--domain", required=True, help="The domain the certificate is for.")
@click.option("--delegated", is_flag=True, help="Bind a random name under DELEGATION_DOMAIN.")
@click.option("--allow-from", "allow_from", multiple=True, metavar="CIDR",
              help="Client networks allowed to use the credential (repeatable).")
@click.option("--note", default=None, help="A note for people (who, what for).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="acme-dns",
              show_default=True)
@click.option("--server-url", default=None,
              help="This service's URL, written into --format lego (default: PUBLIC_URL).")
def create(domain: str, delegated: bool, allow_from: tuple[str, ...], note: str | None,
           fmt: str, server_url: str | None) -> None:
    """Issue a credential and print it once (the key is not stored in clear anywhere)."""
    settings = _settings()
    try:
        allowfrom = parse_allowfrom(list(allow_from))
    except InvalidAllowfrom:
        raise click.BadParameter("not a CIDR", param_hint="--allow-from") from None
    issued = _run(settings, lambda s: s.accounts.create(
        domain=domain, delegated=delegated, allowfrom=allowfrom, note=note, via="cli"))
    click.echo(json.dumps(render(issued, fmt, server_url or settings.public_url)))
    account = issued.account
    if account.domain and account.mode.value == "delegated":
        click.echo(
            f"Create this record where {account.domain} is hosted:\n"
            f"  _acme-challenge.{account.domain}. CNAME {account.name}.",
            err=True,
        )


@accounts.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked accounts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(include_revoked: bool, as_json: bool) -> None:
    """List accounts (never their keys)."""
    found = _run(_settings(), lambda s: s.accounts.list(include_revoked=include_revoked))
    for account in found:
        if as_json:
            click.echo(json.dumps(account_view(account)))
        else:
            state = "revoked" if account.revoked_at else "active"
            click.echo(f"{account.username}  {state:7}  {account.mode.value:9}  {account.name}"
                       f"  {account.domain or '-'}")


@accounts.command("show")
@click.argument("username")
def show(username: str) -> None:
    """Show one account (never its key)."""
    account = _run(_settings(), lambda s: s.accounts.get(username))
    click.echo(json.dumps(account_view(account), indent=2))


@accounts.command("revoke")
@click.argument("username")
def revoke(username: str) -> None:
    """Revoke an account at once and delete its TXT records."""
    account, removed = _run(_settings(), lambda s: s.accounts.revoke(username, client="cli"))
    click.echo(f"revoked {account.username} ({account.name}); {removed} value(s) removed")


@main.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def audit(limit: int) -> None:
    """Print the newest audit events, one JSON object per line."""
    events = _run(_settings(), lambda s: s.store.audit_events(limit=limit))
    for item in reversed(events):
        click.echo(json.dumps({
            "at": item.at.isoformat(), "event": item.event, "outcome": item.outcome,
            "username": item.username, "client": item.client, "name": item.name,
            "value": item.value_fingerprint, "detail": item.detail,
        }))


@main.group()
def hook() -> None:
    """certbot --manual-auth-hook / --manual-cleanup-hook commands."""


_server_option = click.option("--server", required=True, help="acme-delegate's base URL.")
_credentials_option = click.option(
    "--credentials", required=True, type=click.Path(path_type=Path, dir_okay=False),
    help='JSON file {"<domain>": {username, password, fulldomain, subdomain}}, mode 600.')


@hook.command("certbot-auth")
@_server_option
@_credentials_option
@click.option("--nameserver", default=None, metavar="HOST:PORT",
              help="Ask this nameserver instead of the name's authoritative ones.")
@click.option("--timeout", default=120.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Seconds to wait for the value to be visible.")
def certbot_auth(server: str, credentials: Path, nameserver: str | None, timeout: float
                 ) -> None:
    """Put CERTBOT_VALIDATION, return once the nameservers answer it."""
    from app import hooks
    from app.dnscheck import parse_nameserver

    try:
        where = parse_nameserver(nameserver) if nameserver else None
        asyncio.run(hooks.auth(server=server, credentials=credentials, nameserver=where,
                               timeout=timeout))
    except (hooks.HookError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@hook.command("certbot-cleanup")
@_server_option
@_credentials_option
@click.option("--nameserver", default=None, hidden=True)
def certbot_cleanup(server: str, credentials: Path, nameserver: str | None) -> None:
    """Remove CERTBOT_VALIDATION again."""
    from app import hooks

    try:
        hooks.cleanup(server=server, credentials=credentials)
    except hooks.HookError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("dns-query")
@click.argument("name")
@click.option("--nameserver", required=True, metavar="HOST:PORT")
def dns_query(name: str, nameserver: str) -> None:
    """Print the TXT values a nameserver answers at NAME."""
    from app.dnscheck import parse_nameserver, txt_values

    try:
        values = asyncio.run(txt_values(name, parse_nameserver(nameserver)))
    except Exception as exc:
        raise click.ClickException(f"query failed: {type(exc).__name__}: {exc}") from None
    for value in sorted(values):
        click.echo(value)
