"""The ``acme-delegate`` command line, one module per command group.

Every command calls the same services as the HTTP API. Modules import the service
graph (SQLAlchemy, FastAPI, settings) only inside the commands that use it: the certbot
hooks run four times per certificate and need none of it.
"""

from __future__ import annotations

import click

from app.cli import accounts, audit, dns, hooks, maintenance, serve


@click.group()
@click.version_option(package_name="acme-delegate")
def main() -> None:
    """acme-delegate: ACME DNS-01 credentials bound to one name, over DigitalOcean."""


main.add_command(serve.serve)
main.add_command(serve.migrate)
main.add_command(accounts.accounts)
main.add_command(audit.audit)
main.add_command(maintenance.reconcile)
main.add_command(maintenance.import_acme_dns)
main.add_command(hooks.hook)
main.add_command(dns.dns_query)

__all__ = ["main"]
