"""``acme-delegate dns-query``: what a nameserver answers at a name."""

from __future__ import annotations

import asyncio

import click


@click.command("dns-query")
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
