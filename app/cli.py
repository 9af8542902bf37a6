"""The ``acme-delegate`` command line. It calls the same services as the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from app.core.errors import DomainError, InvalidAllowfrom
from app.core.models import (
    Account,
    AccountChanges,
    AccountFilter,
    AuditEvent,
    AuditQuery,
    IssuedAccount,
    Mode,
)
from app.core.names import normalize_domain, parse_allowfrom

if TYPE_CHECKING:
    # The service graph (SQLAlchemy, FastAPI, settings) is imported only by the commands
    # that use it: the certbot hooks run four times per certificate and need none of it.
    from app.config import Settings
    from app.wiring import Services

T = TypeVar("T")
FORMATS = ("acme-dns", "cert-manager", "lego")


def _settings() -> Settings:
    from pydantic import ValidationError

    from app.config import Settings

    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"]) or "settings"
            lines.append(f"  ACME_DELEGATE_{field.upper()}: {error['msg']}")
        raise click.ClickException("configuration error:\n" + "\n".join(lines)) from None


def _configure_logging(settings: Settings) -> None:
    from app import logs

    logs.configure(settings.log_level, settings.log_format)


def _run(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    """Migrate, build the services, run ``work``; domain errors become clean messages."""
    from app.db.migrate import upgrade
    from app.wiring import StartupError, build_services

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


@contextlib.contextmanager
def _sqlite_owner(database_url: str) -> Iterator[None]:
    from app.db.engine import DatabaseBusy, sqlite_owner

    try:
        with sqlite_owner(database_url):
            yield
    except DatabaseBusy as exc:
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
        "expires_at": account.expires_at.isoformat() if account.expires_at else None,
        "max_values": account.max_values,
    }


@click.group()
@click.version_option(package_name="acme-delegate")
def main() -> None:
    """acme-delegate: ACME DNS-01 credentials bound to one name, over DigitalOcean."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Serve HTTPS with this certificate (PEM; or TLS_CERT_FILE).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Its private key (PEM; or TLS_KEY_FILE).")
@click.option("--standin-dns-port", default=8053, show_default=True,
              type=click.IntRange(0, 65535),
              help="Without a DigitalOcean token: the stand-in's DNS port on 127.0.0.1.")
def serve(host: str, port: int, tls_cert: Path | None, tls_key: Path | None,
          standin_dns_port: int) -> None:
    """Run the API (migrations are applied first).

    Without a DigitalOcean token it runs against a local stand-in of the
    DigitalOcean API and DNS, issues a demo credential and says how to use it.
    """
    import uvicorn

    from app.db.migrate import upgrade
    from app.main import create_app
    from app.server import HeadTimeoutProtocol

    settings = _settings()
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_cert is not None:
        settings = settings.model_copy(update={"tls_cert_file": tls_cert,
                                               "tls_key_file": tls_key})
    _configure_logging(settings)
    with contextlib.ExitStack() as stack:
        demo = None
        if settings.token() is None:
            from app.demo import start_demo

            demo = stack.enter_context(start_demo(settings, dns_port=standin_dns_port))
            settings = demo.settings
        stack.enter_context(_sqlite_owner(settings.database_url))
        upgrade(settings.database_url)
        from app.wiring import check_provider

        _run(settings, check_provider)
        if demo is not None:
            from app.demo import announce

            issued = _run(settings, lambda s: s.accounts.create(
                domain="www.example.com", delegated=False, note="demo", via="demo"))
            scheme = "https" if settings.tls_cert_file else "http"
            announce(issued, api_url=f"{scheme}://{host}:{port}",
                     dns_hostport=demo.dns_hostport)
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
            access_log=False,  # ours carries the request id and the real client address
            ssl_certfile=settings.tls_cert_file,
            ssl_keyfile=settings.tls_key_file,
            # Bounded exposure to floods and slow clients: a deadline for request heads
            # (uvicorn has none), header size, idle keep-alive. Load is bounded by requests
            # in flight (MAX_IN_FLIGHT), not connections, so slow senders lock nobody out.
            http=HeadTimeoutProtocol,
            h11_max_incomplete_event_size=16 * 1024,
            timeout_keep_alive=5,
            # On SIGTERM, finish the updates in flight (each ends within DO_TIMEOUT-bounded
            # calls) before the process goes.
            timeout_graceful_shutdown=30,
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
@click.option("--expires", default=None, metavar="ISO-8601",
              help="When the credential stops working, e.g. 2027-01-31T00:00:00Z.")
@click.option("--max-values", type=click.IntRange(1, 20), default=None,
              help="Values kept live at its name (default: MAX_VALUES_PER_NAME).")
@click.option("--server-url", default=None,
              help="This service's URL, written into --format lego (default: PUBLIC_URL).")
def create(domain: str, delegated: bool, allow_from: tuple[str, ...], note: str | None,
           fmt: str, expires: str | None, max_values: int | None, server_url: str | None
           ) -> None:
    """Issue a credential and print it once (the key is not stored in clear anywhere)."""
    settings = _settings()
    try:
        allowfrom = parse_allowfrom(list(allow_from))
    except InvalidAllowfrom:
        raise click.BadParameter("not a CIDR", param_hint="--allow-from") from None
    expires_at = _parse_expiry(expires) if expires else None
    issued = _run(settings, lambda s: s.accounts.create(
        domain=domain, delegated=delegated, allowfrom=allowfrom, note=note,
        expires_at=expires_at, max_values=max_values, via="cli"))
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
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default=None)
@click.option("--domain", default=None, help="Only accounts for this domain.")
@click.option("--stale-days", type=click.IntRange(0, 36500), default=None,
              help="Only accounts unused for this many days.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(include_revoked: bool, mode: str | None, domain: str | None, stale_days: int | None,
          limit: int, as_json: bool) -> None:
    """List accounts (never their keys)."""

    async def work(s: Services) -> list[Account]:
        stale = s.accounts.now() - timedelta(days=stale_days) if stale_days is not None else None
        return await s.accounts.list_accounts(AccountFilter(
            include_revoked=include_revoked, mode=Mode(mode) if mode else None,
            domain=normalize_domain(domain) if domain else None, stale_before=stale,
            limit=limit))

    for account in _run(_settings(), work):
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


@accounts.command("rotate")
@click.argument("username")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="acme-dns",
              show_default=True)
@click.option("--server-url", default=None, help="For --format lego (default: PUBLIC_URL).")
def rotate(username: str, fmt: str, server_url: str | None) -> None:
    """Issue a new key (printed once); the old key stops working at once."""
    settings = _settings()
    issued = _run(settings, lambda s: s.accounts.rotate(username, client="cli"))
    click.echo(json.dumps(render(issued, fmt, server_url or settings.public_url)))


@accounts.command("set")
@click.argument("username")
@click.option("--allow-from", "allow_from", multiple=True, metavar="CIDR",
              help="Replace the allowed networks (repeatable).")
@click.option("--allow-any", is_flag=True, help="Remove every network restriction.")
@click.option("--note", default=None, help="Replace the note ('' clears it).")
@click.option("--expires", default=None, metavar="ISO-8601|never",
              help="When the credential stops working, e.g. 2027-01-31T00:00:00Z.")
def set_(username: str, allow_from: tuple[str, ...], allow_any: bool, note: str | None,
         expires: str | None) -> None:
    """Change an account's allowed networks, note or expiry."""
    if allow_from and allow_any:
        raise click.UsageError("--allow-from and --allow-any exclude each other")
    try:
        allowfrom = tuple(parse_allowfrom(list(allow_from))) if allow_from else None
    except InvalidAllowfrom:
        raise click.BadParameter("not a CIDR", param_hint="--allow-from") from None
    changes = AccountChanges(
        allowfrom=() if allow_any else allowfrom,
        note=note or None,
        clear_note=note == "",
        expires_at=_parse_expiry(expires) if expires not in (None, "never") else None,
        clear_expiry=expires == "never",
    )
    account = _run(_settings(), lambda s: s.accounts.change(username, changes, client="cli"))
    click.echo(json.dumps(account_view(account), indent=2))


@accounts.command("revoke")
@click.argument("username")
@click.option("--purge", is_flag=True, help="Also delete the account (the audit trail stays).")
def revoke(username: str, purge: bool) -> None:
    """Revoke an account at once and delete its TXT records."""
    if purge:
        removed = _run(_settings(), lambda s: s.accounts.delete(username, client="cli"))
        click.echo(f"deleted {username}; {removed} value(s) removed")
        return
    account, removed = _run(_settings(), lambda s: s.accounts.revoke(username, client="cli"))
    click.echo(f"revoked {account.username} ({account.name}); {removed} value(s) removed")


@main.command()
@click.option("--since", default=None, metavar="ISO-8601|DURATION",
              help="Events at or after this time, or this long ago (30m, 12h, 7d).")
@click.option("--account", default=None, metavar="USERNAME")
@click.option("--event", default=None, help="Only this event (update, auth.failed, …).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
def audit(since: str | None, account: str | None, event: str | None, limit: int) -> None:
    """Print audit events, oldest first, one JSON object per line."""

    async def work(s: Services) -> list[AuditEvent]:
        start = _parse_since(since, s.accounts.now()) if since else None
        return await s.accounts.audit_trail(
            AuditQuery(since=start, username=account, event=event, limit=limit))

    for item in reversed(_run(_settings(), work)):
        record = asdict(item)
        record["at"] = item.at.isoformat()
        click.echo(json.dumps(record))


def _parse_expiry(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("an ISO-8601 time such as 2027-01-31T00:00:00Z",
                                 param_hint="--expires") from None
    if when.tzinfo is None:
        raise click.BadParameter("give a time zone (Z or +hh:mm)", param_hint="--expires")
    return when


def _parse_since(text: str, now: datetime) -> datetime:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return now - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("a time (ISO-8601) or a duration (30m, 12h, 7d)",
                                 param_hint="--since") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@main.command()
def reconcile() -> None:
    """Run one reconcile pass now and print what it repaired (JSON)."""
    settings = _settings()
    with _sqlite_owner(settings.database_url):
        report = _run(settings, lambda s: s.reconciler.run_once())
    click.echo(json.dumps({**asdict(report), "repairs": report.repairs}))
    if report.failures:
        raise SystemExit(1)


@main.command("import-acme-dns")
@click.argument("database")
@click.option("--dry-run", is_flag=True, help="Show what would be imported; change nothing.")
def import_acme_dns(database: str, dry_run: bool) -> None:
    """Import the accounts of an acme-dns DATABASE (SQLite file or postgresql:// URL).

    Each becomes a delegated name <subdomain>.<DELEGATION_DOMAIN> with its username, key
    and allowfrom, so existing clients and CNAMEs keep working. Safe to re-run.
    """
    from app.core.importing import Importer
    from app.db.acmedns_source import SourceError, read_accounts

    async def work(s: Services) -> str:
        try:
            found = await read_accounts(database)
        except SourceError as exc:
            raise click.ClickException(str(exc)) from None
        importer = Importer(s.store, s.zones, delegation_domain=s.settings.delegation_domain,
                            clock=s.accounts.now)
        report = await importer.run(found, dry_run=dry_run)
        for username, outcome, detail in report.results:
            click.echo(f"{username}  {outcome.value:13}  {detail}")
        return report.summary()

    summary = _run(_settings(), work)
    click.echo(("dry run, nothing written: " if dry_run else "") + summary, err=True)
    click.echo("challenge values are not imported: clients put fresh ones at their next "
               "renewal", err=True)


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
    from app.propagation import parse_nameserver

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
    from app.propagation import PropagationChecker, parse_nameserver

    try:
        checker = PropagationChecker([parse_nameserver(nameserver)])
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    (answer,) = asyncio.run(checker.answers(name))
    if not answer.answered:
        raise click.ClickException(f"query failed: {answer.error}")
    for value in sorted(answer.values):
        click.echo(value)
