"""What the reconciler's and the rotation's crash tests share: a reconciler on the
harness's services, a simulated kill at any awaited call, and the consistency check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.core.models import ValueState
from app.core.reconcile import Reconciler
from tests.conftest import Harness


def reconciler(h: Harness, *, later: timedelta = timedelta(0), lifetime: int = 3600
               ) -> Reconciler:
    """A reconciler whose clock runs ``later`` ahead."""
    s = h.services
    return Reconciler(s.store, s.provider, s.challenges, lifetime=lifetime, ttl=30,
                      clock=lambda: datetime.now(UTC) + later)


def consistent(h: Harness, rows: list[Any], name: str) -> None:
    """DigitalOcean holds exactly the database's live values at ``name``, by id."""
    live = {(r.record_id, r.value) for r in rows if r.state is ValueState.LIVE}
    assert all(r.state is ValueState.LIVE for r in rows)
    assert {(r.id, r.data) for r in h.do.find_records(name, "TXT")} == live


class Crash(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler of ours catches it."""


class CrashAt:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch

    def __call__(self, obj: Any, method: str, *, after: bool = False) -> None:
        real = getattr(obj, method)

        async def dying(*args: Any, **kwargs: Any) -> Any:
            if after:
                await real(*args, **kwargs)
            raise Crash(method)

        self._monkeypatch.setattr(obj, method, dying)

    def restart(self) -> None:
        """The process comes back: the code is whole again."""
        self._monkeypatch.undo()
