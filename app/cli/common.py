"""What the commands share: settings with readable errors, running work against the
service graph, the SQLite single-writer guard, time parsing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import click

from app.core.names import in_utc
from app.errors import DatabaseBusy, DomainError, OperatorError

if TYPE_CHECKING:
    from app.config import Settings
    from app.wiring import Services

T = TypeVar("T")


def settings() -> Settings:
    """The settings from the environment; a wrong one is a message naming it."""
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


def configure_logging(settings: Settings) -> None:
    from app import logs

    logs.configure(settings.log_level, settings.log_format)


def clean_errors(work: Callable[[], T]) -> T:
    """Run ``work``; the errors of ``app.errors`` meant for a person (domain answers,
    configuration and operator errors) become messages, not tracebacks."""
    try:
        return work()
    except DomainError as exc:
        raise click.ClickException(f"{exc.code}: {exc}") from None
    except OperatorError as exc:
        raise click.ClickException(str(exc)) from None


def run(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    """Migrate, build the services once, run ``work`` on them."""
    from app.db.migrate import upgrade
    from app.wiring import build_services

    upgrade(settings.database_url)

    async def main() -> T:
        async with build_services(settings) as services:
            return await work(services)

    return clean_errors(lambda: asyncio.run(main()))


@contextlib.contextmanager
def sqlite_owner(database_url: str) -> Iterator[None]:
    """The one process that may write a SQLite database (a no-op for PostgreSQL)."""
    from app.db.engine import sqlite_owner

    try:
        with sqlite_owner(database_url):
            yield
    except DatabaseBusy as exc:
        raise click.ClickException(str(exc)) from None


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta | None:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w``; None if ``text`` is not one."""
    text = text.strip()
    number, unit = text[:-1], text[-1:].lower()
    if not (number.isascii() and number.isdigit()) or unit not in DURATION_UNITS:
        return None
    seconds = int(number) * DURATION_UNITS[unit]
    if seconds > 100 * 365 * 86400:  # beyond any credential's life, and datetime's range
        return None
    return timedelta(seconds=seconds)


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """``--expires``: a duration from now (``90d``, ``12h``) or an ISO-8601 time with a
    time zone."""
    duration = parse_duration(text)
    if duration is not None:
        if not duration:
            raise click.BadParameter("a duration longer than 0", param_hint="--expires")
        return (now or datetime.now(UTC)) + duration
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("a duration (90d, 12h, 30m) or an ISO-8601 time such as "
                                 "2027-01-31T00:00:00Z", param_hint="--expires") from None
    if when.tzinfo is None:
        raise click.BadParameter("give a time zone (Z or +hh:mm)", param_hint="--expires")
    return _in_utc(when, "--expires")


def parse_since(text: str, now: datetime) -> datetime:
    duration = parse_duration(text)
    if duration is not None:
        return now - duration
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("a time (ISO-8601) or a duration (30m, 12h, 7d)",
                                 param_hint="--since") from None
    return _in_utc(when if when.tzinfo else when.replace(tzinfo=UTC), "--since")


def _in_utc(when: datetime, option: str) -> datetime:
    """``when`` in UTC; one the admin API would refuse is a usage error, not a
    traceback."""
    try:
        return in_utc(when)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
