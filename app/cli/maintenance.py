"""``acme-delegate reconcile`` and ``import-acme-dns``: repairs and migration from acme-dns."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from app.cli.common import run, settings, sqlite_owner

if TYPE_CHECKING:
    from app.wiring import Services


@click.command()
def reconcile() -> None:
    """Run one reconcile pass now and print what it repaired (JSON)."""
    config = settings()
    with sqlite_owner(config.database_url):
        report = run(config, lambda s: s.reconciler.run_once())
    click.echo(json.dumps({**asdict(report), "repairs": report.repairs}))
    if report.failures:
        raise SystemExit(1)


@click.command("import-acme-dns")
@click.argument("database")
@click.option("--dry-run", is_flag=True, help="Show what would be imported; change nothing.")
def import_acme_dns(database: str, dry_run: bool) -> None:
    """Import the accounts of an acme-dns DATABASE (SQLite file or postgresql:// URL).

    Each becomes a delegated name <subdomain>.<DELEGATION_DOMAIN> with its username, key
    and allowfrom, so existing clients and CNAMEs keep working. Safe to re-run.
    """
    from app.core.importing import Importer
    from app.db.acmedns_source import read_accounts

    async def work(s: Services) -> str:
        found = await read_accounts(database)  # a SourceError is a message (clean_errors)
        importer = Importer(s.store, s.zones, delegation_domain=s.settings.delegation_domain,
                            clock=s.accounts.now)
        report = await importer.run(found, dry_run=dry_run)
        for username, outcome, detail in report.results:
            click.echo(f"{username}  {outcome.value:13}  {detail}")
        return report.summary()

    summary = run(settings(), work)
    click.echo(("dry run, nothing written: " if dry_run else "") + summary, err=True)
    click.echo("challenge values are not imported: clients put fresh ones at their next "
               "renewal", err=True)
