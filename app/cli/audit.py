"""``acme-delegate audit``: read the audit trail, on the database or through ``--server``."""

from __future__ import annotations

import click

from app.cli.backend import backend
from app.cli.common import parse_since
from app.cli.output import emit, output_option

COLUMNS = ("at", "event", "outcome", "username", "client", "name", "detail")


@click.command()
@click.option("--since", default=None, metavar="ISO-8601|DURATION",
              help="Events at or after this time, or this long ago (30m, 12h, 7d).")
@click.option("--account", default=None, metavar="USERNAME")
@click.option("--event", default=None, help="Only this event (update, auth.failed, …).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@output_option("table")
@click.pass_context
def audit(ctx: click.Context, since: str | None, account: str | None, event: str | None,
          limit: int, output: str) -> None:
    """Print audit events, oldest first (the newest LIMIT)."""
    where = backend(ctx)
    start = parse_since(since, where.now()) if since else None
    emit(where.audit(since=start, account=account, event=event, limit=limit), output,
         columns=COLUMNS)
