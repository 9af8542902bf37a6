"""The words pacing speaks, shared by the core (which names who is spending, and why)
and the pacing machinery (which decides who goes next). Pure: no I/O here.

- ``Limit``: an abuse limit, counted per client address or per credential.
- ``Lane``: why a DigitalOcean request is made. Lanes are served strictly in order:
  revocations before clients' writes before housekeeping (deferred removals, reconcile
  listings and repairs). Housekeeping spends only spare budget.
- ``spending(lane, key)``: marks the DigitalOcean requests made inside it as spent by
  ``key`` (a credential) in ``lane``; the fair queue serves, within a lane, the key
  that spent least recently before one that spent much.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


class Limit(enum.StrEnum):
    AUTH_FAILURES = "auth_failures"  # per client address
    UPDATES = "updates"  # per credential: update, present, cleanup
    REGISTRATIONS = "registrations"  # per client address
    NEW_VALUES = "new_values"  # per credential: values that cost a DigitalOcean write


class Lane(enum.IntEnum):
    """Lower goes first."""

    REVOCATION = 0
    CLIENT = 1
    HOUSEKEEPING = 2


@dataclass(frozen=True, slots=True)
class Spender:
    lane: Lane
    key: str


# Requests made outside any ``spending`` block (start-up checks, the CLI) are a client's.
_DEFAULT = Spender(Lane.CLIENT, "")
_current: ContextVar[Spender | None] = ContextVar("acme_delegate_spender", default=None)


def current_spender() -> Spender:
    return _current.get() or _DEFAULT


@contextmanager
def spending(lane: Lane, key: str = "") -> Iterator[None]:
    token = _current.set(Spender(lane, key))
    try:
        yield
    finally:
        _current.reset(token)
