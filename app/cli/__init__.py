"""The ``acme-delegate`` command line, one module per command group.

Every command calls the same services as the HTTP API. Modules import the service
graph (SQLAlchemy, FastAPI, settings) only inside the commands that use it: the certbot
hooks run four times per certificate and need none of it.
"""

from __future__ import annotations

import click

from app.cli import accounts, audit, dns, hooks, maintenance, serve

LOCAL_ONLY = ("serve", "migrate", "reconcile", "import-acme-dns")


@click.group()
@click.version_option(package_name="acme-delegate")
@click.option("--server", envvar="ACME_DELEGATE_SERVER", default=None, metavar="URL",
              help="Act through this running service's admin API instead of the database "
                   "(accounts, audit); the admin token from ACME_DELEGATE_ADMIN_TOKEN or "
                   "--token-file.")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the admin token, for --server.")
@click.pass_context
def main(ctx: click.Context, server: str | None, token_file: str | None) -> None:
    """acme-delegate: ACME DNS-01 credentials bound to one name, over DigitalOcean."""
    given = ctx.get_parameter_source("server") is click.core.ParameterSource.COMMANDLINE
    if given and ctx.invoked_subcommand in LOCAL_ONLY:
        raise click.UsageError(f"{ctx.invoked_subcommand} works on this machine's database; "
                               "--server is for accounts and audit")
    ctx.obj = {"server": server, "token_file": token_file}


main.add_command(serve.serve)
main.add_command(serve.migrate)
main.add_command(accounts.accounts)
main.add_command(audit.audit)
main.add_command(maintenance.reconcile)
main.add_command(maintenance.import_acme_dns)
main.add_command(hooks.hook)
main.add_command(dns.dns_query)

__all__ = ["main"]
