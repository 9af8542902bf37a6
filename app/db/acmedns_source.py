"""Reading an acme-dns database (SQLite file or PostgreSQL URL), for the import.

acme-dns keeps accounts in ``records(Username, Password, Subdomain, AllowFrom)``:
a bcrypt hash (Go, cost 10) and a JSON list of CIDRs. Unquoted names work on
both backends (PostgreSQL folds them to lower case, as acme-dns created them).
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.importing import SourceAccount
from app.db.engine import async_url
from app.errors import DatabaseUrlError, SourceError


def source_url(location: str) -> str:
    """A path to an acme-dns SQLite file, or a database URL."""
    if "://" in location:
        return location
    path = Path(location)
    if not path.is_file():
        raise SourceError(f"{location}: no such file (give a SQLite file or a postgresql:// URL)")
    return f"sqlite:///{path.resolve()}"


async def read_accounts(location: str) -> list[SourceAccount]:
    try:
        url = async_url(source_url(location))
    except DatabaseUrlError as exc:
        raise SourceError(str(exc)) from exc
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT Username, Password, Subdomain, AllowFrom FROM records ORDER BY Username"
            ))).all()
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise SourceError(f"cannot read acme-dns accounts: {type(cause).__name__}") from exc
    finally:
        await engine.dispose()
    return [SourceAccount(str(r[0]), str(r[1]), str(r[2]), _allowfrom(r[3])) for r in rows]


def _allowfrom(raw: object) -> list[str] | None:
    if raw is None or raw == "":
        return []
    try:
        value = json.loads(str(raw))
    except ValueError:
        return None
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value
