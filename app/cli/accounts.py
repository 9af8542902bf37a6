"""``acme-delegate accounts …``: issue, list, show, rotate, change, revoke and check
credentials, on the database or through ``--server``'s admin API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from app.cli import credentials
from app.cli.backend import Backend, backend
from app.cli.common import parse_expiry
from app.cli.output import OUTPUTS, emit, output_option
from app.core.models import Mode
from app.core.names import parse_allowfrom
from app.errors import InvalidAllowfrom

LIST_COLUMNS = ("username", "state", "mode", "fulldomain", "domain", "last_used_at")
CHECK_COLUMNS = ("check", "ok", "detail", "fix")


def _allowfrom(values: tuple[str, ...]) -> list[str]:
    try:
        return [str(n) for n in parse_allowfrom(list(values))]
    except InvalidAllowfrom:
        raise click.BadParameter("not a CIDR", param_hint="--allow-from") from None


def _state(view: dict[str, Any]) -> str:
    if view.get("revoked_at"):
        return "revoked"
    expires = view.get("expires_at")
    if expires:
        from datetime import UTC, datetime

        if datetime.fromisoformat(expires) <= datetime.now(UTC):
            return "expired"
    return "active"


def _print_credential(ctx: click.Context, issued: dict[str, Any], *, fmt: str,
                      output: str | None, server_url: str | None, secret_name: str,
                      namespace: str | None, merge_into: Path | None) -> None:
    where: Backend = backend(ctx)
    url = server_url or where.public_url
    if merge_into is not None:
        replaced, count = credentials.merge_into(merge_into, issued, server_url=url, fmt=fmt)
        click.echo(f"{'replaced' if replaced else 'added'} {issued['domain']} in {merge_into} "
                   f"({count} domain(s))", err=True)
        return
    document = credentials.render(issued, fmt, server_url=url, secret_name=secret_name,
                                  namespace=namespace)
    if fmt == "env" and output is None:
        click.echo(credentials.env_lines(document))
        return
    emit(document, output or "json")


def credential_options(command: Any) -> Any:
    """``--format`` and where the credential goes: shared by create and rotate."""
    for option in reversed((
        click.option("--format", "fmt", type=click.Choice(credentials.FORMATS),
                     default="acme-dns", show_default=True,
                     help="acme-dns: /register's JSON; cert-manager: its acmeDNS JSON; lego: "
                          "lego's and Caddy's multi-domain file; k8s-secret: a Secret for "
                          "kubectl apply -f -; env: acme.sh and httpreq variables."),
        click.option("-o", "--output", "output", type=click.Choice(OUTPUTS), default=None,
                     help="json (default), yaml or table; --format env prints shell lines "
                          "unless this is given."),
        click.option("--server-url", default=None,
                     help="This service's URL for --format lego and env (default: "
                          "PUBLIC_URL, or --server)."),
        click.option("--secret-name", default=credentials.DEFAULT_SECRET_NAME,
                     show_default=True, help="For --format k8s-secret."),
        click.option("--namespace", default=None, help="For --format k8s-secret."),
        click.option("--merge-into", type=click.Path(path_type=Path, dir_okay=False),
                     default=None, metavar="FILE",
                     help="Add the domain to this cert-manager JSON (or lego file with "
                          "--format lego, or Secret manifest) keeping the others; mode 600."),
    )):
        command = option(command)
    return command


@click.group()
@click.pass_context
def accounts(ctx: click.Context) -> None:
    """Issue, list, show, check and revoke credentials."""


@accounts.command("create")
@click.option("--domain", required=True, help="The domain the certificate is for.")
@click.option("--delegated", is_flag=True, help="Bind a random name under DELEGATION_DOMAIN.")
@click.option("--allow-from", "allow_from", multiple=True, metavar="CIDR",
              help="Client networks allowed to use the credential (repeatable).")
@click.option("--note", default=None, help="A note for people (who, what for).")
@click.option("--expires", default=None, metavar="DURATION|ISO-8601",
              help="When the credential stops working: 90d, 12h, or 2027-01-31T00:00:00Z.")
@click.option("--max-values", type=click.IntRange(1, 20), default=None,
              help="Values kept live at its name (default: MAX_VALUES_PER_NAME); a "
                   "certificate for N names through one delegated name needs N.")
@credential_options
@click.pass_context
def create(ctx: click.Context, domain: str, delegated: bool, allow_from: tuple[str, ...],
           note: str | None, expires: str | None, max_values: int | None, fmt: str,
           output: str | None, server_url: str | None, secret_name: str,
           namespace: str | None, merge_into: Path | None) -> None:
    """Issue a credential and print it once (the key is not stored in clear anywhere)."""
    where: Backend = backend(ctx)
    body: dict[str, Any] = {"domain": domain, "delegated": delegated,
                            "allowfrom": _allowfrom(allow_from), "note": note,
                            "max_values": max_values}
    if expires:
        body["expires_at"] = parse_expiry(expires, where.now()).isoformat()
    issued = where.create(body)
    _print_credential(ctx, issued, fmt=fmt, output=output, server_url=server_url,
                      secret_name=secret_name, namespace=namespace, merge_into=merge_into)
    if issued.get("domain") and issued.get("mode") == "delegated":
        click.echo(
            f"Create this record where {issued['domain']} is hosted:\n"
            f"  _acme-challenge.{issued['domain']}. CNAME {issued['fulldomain']}.",
            err=True,
        )


@accounts.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked accounts.")
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default=None)
@click.option("--domain", default=None, help="Only accounts for this domain.")
@click.option("--stale-days", type=click.IntRange(0, 36500), default=None,
              help="Only accounts unused for this many days.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@output_option("table")
@click.option("--json", "as_json", is_flag=True, hidden=True, help="The same as -o json.")
@click.pass_context
def list_(ctx: click.Context, include_revoked: bool, mode: str | None, domain: str | None,
          stale_days: int | None, limit: int, output: str, as_json: bool) -> None:
    """List accounts, oldest first (never their keys)."""
    where: Backend = backend(ctx)
    found = where.list_accounts(include_revoked=include_revoked, mode=mode, domain=domain,
                                stale_days=stale_days, limit=limit)
    output = "json" if as_json else output
    if output == "table":
        found = [{**view, "state": _state(view)} for view in found]
    emit(found, output, columns=LIST_COLUMNS)


@accounts.command("show")
@click.argument("username")
@output_option("table")
@click.pass_context
def show(ctx: click.Context, username: str, output: str) -> None:
    """Show one account (never its key)."""
    emit(backend(ctx).show(username), output)


@accounts.command("rotate")
@click.argument("username")
@credential_options
@click.pass_context
def rotate(ctx: click.Context, username: str, fmt: str, output: str | None,
           server_url: str | None, secret_name: str, namespace: str | None,
           merge_into: Path | None) -> None:
    """Issue a new key (printed once); the old key stops working at once."""
    issued = backend(ctx).rotate(username)
    _print_credential(ctx, issued, fmt=fmt, output=output, server_url=server_url,
                      secret_name=secret_name, namespace=namespace, merge_into=merge_into)


@accounts.command("set")
@click.argument("username")
@click.option("--allow-from", "allow_from", multiple=True, metavar="CIDR",
              help="Replace the allowed networks (repeatable).")
@click.option("--allow-any", is_flag=True, help="Remove every network restriction.")
@click.option("--note", default=None, help="Replace the note ('' clears it).")
@click.option("--expires", default=None, metavar="DURATION|ISO-8601|never",
              help="When the credential stops working: 90d, 12h, 2027-01-31T00:00:00Z.")
@output_option("table")
@click.pass_context
def set_(ctx: click.Context, username: str, allow_from: tuple[str, ...], allow_any: bool,
         note: str | None, expires: str | None, output: str) -> None:
    """Change an account's allowed networks, note or expiry."""
    if allow_from and allow_any:
        raise click.UsageError("--allow-from and --allow-any exclude each other")
    where: Backend = backend(ctx)
    body: dict[str, Any] = {}
    if allow_from or allow_any:
        body["allowfrom"] = _allowfrom(allow_from)
    if note is not None:
        body["note"] = note or None
    if expires == "never":
        body["expires_at"] = None
    elif expires is not None:
        body["expires_at"] = parse_expiry(expires, where.now()).isoformat()
    emit(where.change(username, body), output)


@accounts.command("revoke")
@click.argument("username")
@click.option("--purge", is_flag=True, help="Also delete the account (the audit trail stays).")
@output_option("table")
@click.pass_context
def revoke(ctx: click.Context, username: str, purge: bool, output: str) -> None:
    """Revoke an account at once and delete its TXT records."""
    emit(backend(ctx).revoke(username, purge=purge), output)


@accounts.command("check")
@click.argument("username")
@click.option("--nameserver", default=None, metavar="HOST:PORT",
              help="Ask this nameserver every question (default: the resolver for NS and "
                   "CNAME, DigitalOcean's nameservers for the values).")
@output_option("table")
@click.pass_context
def check(ctx: click.Context, username: str, nameserver: str | None, output: str) -> None:
    """Check that the binding works end to end: zone delegated to DigitalOcean, the
    CNAME (delegated names), live values served. Exit status 0 only when all hold."""
    if nameserver:
        from app.propagation import parse_nameserver

        try:
            parse_nameserver(nameserver)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--nameserver") from None
    report = backend(ctx).check(username, nameserver)
    if output == "table":
        emit(report["findings"], "table", columns=CHECK_COLUMNS)
        click.echo(f"{username}: {'OK' if report['ok'] else 'FAILING'}", err=True)
    else:
        emit(report, output)
    if not report["ok"]:
        raise SystemExit(1)
