"""Fixtures of the persistence tests: the real store on each database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.db.engine import create_engine
from app.db.store import SqlStore


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    """``SqlStore`` on a migrated, empty database of each kind, on its own engine."""
    engine = create_engine(database_url)
    try:
        yield SqlStore(engine)
    finally:
        await engine.dispose()
