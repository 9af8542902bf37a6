"""Alembic environment: async engine, URL from the application's settings."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from app.db.engine import create_engine
from app.db.tables import Base

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    # app.db.migrate passes the URL in; the alembic CLI falls back to the settings.
    url = config.attributes.get("database_url")
    if url:
        return str(url)
    from app.config import Settings

    return Settings().database_url


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    # One connection, closed when done: nothing pooled outlives the migration's event loop.
    engine = create_engine(_database_url(), pool=False)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=str(_database_url()), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
