"""``acme-delegate accounts …``: issue, list, show, rotate, change and revoke credentials."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from app.cli.common import parse_expiry, run, settings
from app.core.errors import InvalidAllowfrom
from app.core.models import Account, AccountChanges, AccountFilter, IssuedAccount, Mode
from app.core.names import normalize_domain, parse_allowfrom

if TYPE_CHECKING:
    from app.wiring import Services

FORMATS = ("acme-dns", "cert-manager", "lego")


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
    config = settings()
    try:
        allowfrom = parse_allowfrom(list(allow_from))
    except InvalidAllowfrom:
        raise click.BadParameter("not a CIDR", param_hint="--allow-from") from None
    expires_at = parse_expiry(expires) if expires else None
    issued = run(config, lambda s: s.accounts.create(
        domain=domain, delegated=delegated, allowfrom=allowfrom, note=note,
        expires_at=expires_at, max_values=max_values, via="cli"))
    click.echo(json.dumps(render(issued, fmt, server_url or config.public_url)))
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

    for account in run(settings(), work):
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
    account = run(settings(), lambda s: s.accounts.get(username))
    click.echo(json.dumps(account_view(account), indent=2))


@accounts.command("rotate")
@click.argument("username")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="acme-dns",
              show_default=True)
@click.option("--server-url", default=None, help="For --format lego (default: PUBLIC_URL).")
def rotate(username: str, fmt: str, server_url: str | None) -> None:
    """Issue a new key (printed once); the old key stops working at once."""
    config = settings()
    issued = run(config, lambda s: s.accounts.rotate(username, client="cli"))
    click.echo(json.dumps(render(issued, fmt, server_url or config.public_url)))


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
        expires_at=parse_expiry(expires) if expires not in (None, "never") else None,
        clear_expiry=expires == "never",
    )
    account = run(settings(), lambda s: s.accounts.change(username, changes, client="cli"))
    click.echo(json.dumps(account_view(account), indent=2))


@accounts.command("revoke")
@click.argument("username")
@click.option("--purge", is_flag=True, help="Also delete the account (the audit trail stays).")
def revoke(username: str, purge: bool) -> None:
    """Revoke an account at once and delete its TXT records."""
    if purge:
        removed = run(settings(), lambda s: s.accounts.delete(username, client="cli"))
        click.echo(f"deleted {username}; {removed.removed} value(s) removed, "
                   f"{removed.pending} pending removal")
        return
    account, removed = run(settings(), lambda s: s.accounts.revoke(username, client="cli"))
    click.echo(f"revoked {account.username} ({account.name}); {removed.removed} value(s) "
               f"removed, {removed.pending} pending removal")
