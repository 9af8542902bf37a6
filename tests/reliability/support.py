"""What the reliability tests read back after the storm: the database's rows per name."""

from __future__ import annotations

from app.core.models import ValueState
from app.db.engine import create_engine
from app.db.store import SqlStore

Rows = list[tuple[int | None, str, ValueState]]


async def database_state(url: str, names: list[str]) -> dict[str, Rows]:
    """(record id, value, state) of every row at each of ``names``, from a fresh engine."""
    engine = create_engine(url)
    try:
        store = SqlStore(engine)
        return {name: [(r.record_id, r.value, r.state) for r in await store.values_at(name)]
                for name in names}
    finally:
        await store.close()
        await engine.dispose()
