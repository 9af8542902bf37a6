"""Shared helpers for the stand-in tests."""

from __future__ import annotations

TOKEN = "dop_v1_test"
BASE = "http://standin.test"


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds
