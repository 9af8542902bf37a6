"""``acme-delegate hook certbot-auth|certbot-cleanup``: certbot's manual hooks.

They run four times per certificate, so this module imports no service graph.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from app.errors import HookError


@click.group()
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
    except (HookError, ValueError) as exc:
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
    except HookError as exc:
        raise click.ClickException(str(exc)) from None
