"""Databases of a test run or a benchmark: a fresh migrated SQLite file or PostgreSQL
database, made and dropped per run, on the PostgreSQL server named by
ACME_DELEGATE_TEST_POSTGRES_URL (default: postgres on 127.0.0.1:5432, trust auth).

A server whose host is not loopback is refused: tests and benchmarks stay on loopback.
Database names are checked to be plain identifiers before they reach SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.engine import async_url
from app.db.migrate import upgrade
from app.db.tables import Base
from tests.support.env import ROOT
from tests.support.ports import is_loopback

DEFAULT_POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_server_url() -> str:
    """The server to make databases on (a URL whose database we may connect to)."""
    url = os.environ.get("ACME_DELEGATE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_SERVER)
    host = async_url(url).host
    if not is_loopback(host):
        raise ValueError(f"tests and benchmarks only ever talk to loopback, not {host!r}")
    return url


def checkout_database_name(prefix: str = "acme_delegate_test") -> str:
    """A database name of this checkout and of this pytest-xdist worker: two worktrees (or
    two people on one server, or two workers of one run) testing at once must not drop
    each other's database mid-run."""
    name = f"{prefix}_{hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]}"
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return f"{name}_{worker}" if worker else name


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"not a plain database name: {name!r}")
    return name


def postgres_url(name: str) -> str:
    """The URL of database ``name`` on the server (sync driver name, as Settings takes)."""
    return str(async_url(postgres_server_url()).set(drivername="postgresql",
                                                      database=_identifier(name))
               .render_as_string(hide_password=False))


async def _admin(statements: Sequence[str]) -> list[object]:
    """Run ``statements`` on the server outside a transaction; each one's first value."""
    engine = create_async_engine(async_url(postgres_server_url()), isolation_level="AUTOCOMMIT")
    try:
        values: list[object] = []
        async with engine.connect() as conn:
            for statement in statements:
                result = await conn.execute(text(statement))
                values.append(result.scalar() if result.returns_rows else None)
        return values
    finally:
        await engine.dispose()


def _run_admin(statements: Sequence[str], timeout: float) -> list[object]:
    return asyncio.run(asyncio.wait_for(_admin(statements), timeout))


def postgres_problem(timeout: float = 5) -> str | None:
    """None when the server answers, else why not."""
    try:
        _run_admin(["SELECT 1"], timeout)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def postgres_version() -> str:
    try:
        return str(_run_admin(["SHOW server_version"], 10)[0])
    except Exception:
        return "unknown"


def create_postgres(name: str, *, timeout: float = 30) -> str:
    """Database ``name``, dropped if it was there and created empty; its URL. CREATE
    DATABASE copies a template and checkpoints: seconds on a loaded machine (five helpers
    on two cores timed out at 5 s), hence ``timeout``."""
    db = _identifier(name)
    _run_admin([f"DROP DATABASE IF EXISTS {db} WITH (FORCE)", f"CREATE DATABASE {db}"],
               timeout)
    return postgres_url(db)


def drop_postgres(name: str, *, timeout: float = 30) -> None:
    _run_admin([f"DROP DATABASE IF EXISTS {_identifier(name)} WITH (FORCE)"], timeout)


def empty_tables(url: str) -> None:
    """Every table of the schema emptied (identities restarted): a migrated database as
    new, without migrating again."""
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)

    async def truncate() -> None:
        engine = create_async_engine(async_url(url))
        try:
            async with engine.begin() as conn:
                await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY"))
        finally:
            await engine.dispose()

    asyncio.run(truncate())


def _sqlite_files(workdir: Path, name: str) -> list[Path]:
    path = workdir / f"{name}.sqlite3"
    return [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm", ".lock")]


def fresh_database(kind: str, *, workdir: Path, name: str) -> str:
    """An empty, migrated database, its URL: ``sqlite`` (a file in ``workdir``) or
    ``postgres`` (database ``name``, dropped and created)."""
    if kind == "sqlite":
        files = _sqlite_files(workdir, name)
        for path in files:
            path.unlink(missing_ok=True)
        url = f"sqlite:///{files[0]}"
    elif kind == "postgres":
        url = create_postgres(name)
    else:
        raise ValueError(f"unknown database kind {kind!r}")
    upgrade(url)
    return url


def drop_database(kind: str, *, workdir: Path, name: str) -> None:
    """What ``fresh_database`` made gone (quietly: a best effort after a run)."""
    if kind == "postgres":
        with contextlib.suppress(Exception):
            drop_postgres(name)
    else:
        for path in _sqlite_files(workdir, name):
            path.unlink(missing_ok=True)
