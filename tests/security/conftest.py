"""Fixtures of the security tests: the app with its lifespan (like ``harness``), abuse
limits raised, and the ASGI app exposed for raw requests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.config import Settings
from app.standin import StandinState
from tests.security.support import AppHarness, app_harness_factory


@pytest.fixture
def sec_factory(make_settings: Callable[..., Settings], do_state: StandinState
                ) -> Callable[..., Any]:
    """``async with sec_factory(**settings) as h``: an ``AppHarness``."""
    return app_harness_factory(make_settings, do_state)


@pytest.fixture
async def sec(sec_factory: Callable[..., Any]) -> AsyncIterator[AppHarness]:
    async with sec_factory() as h:
        yield h
