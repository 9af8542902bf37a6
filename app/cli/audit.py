"""``acme-delegate audit``: read the audit trail."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

import click

from app.cli.common import parse_since, run, settings
from app.core.models import AuditEvent, AuditQuery

if TYPE_CHECKING:
    from app.wiring import Services


@click.command()
@click.option("--since", default=None, metavar="ISO-8601|DURATION",
              help="Events at or after this time, or this long ago (30m, 12h, 7d).")
@click.option("--account", default=None, metavar="USERNAME")
@click.option("--event", default=None, help="Only this event (update, auth.failed, …).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100_000))
def audit(since: str | None, account: str | None, event: str | None, limit: int) -> None:
    """Print audit events, oldest first, one JSON object per line."""

    async def work(s: Services) -> list[AuditEvent]:
        start = parse_since(since, s.accounts.now()) if since else None
        return await s.accounts.audit_trail(
            AuditQuery(since=start, username=account.lower() if account else None,
                       event=event, limit=limit))

    for item in reversed(run(settings(), work)):
        record = asdict(item)
        record["at"] = item.at.isoformat()
        record["last_at"] = item.last_at.isoformat() if item.last_at else None
        click.echo(json.dumps(record))
