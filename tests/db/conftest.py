"""Fixtures of the persistence tests: the real store on each database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.db.store import SqlStore
from tests.db.rows import store_on


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    """``SqlStore`` on a migrated, empty database of each kind, on its own engine."""
    async with store_on(database_url) as store:
        yield store
