"""The audit trail: who did what to which name, from where, with what outcome.

Values appear only as fingerprints and keys never appear at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from app.core.keys import fingerprint
from app.core.models import Account, AuditEvent
from app.core.names import looks_like_username
from app.core.ports import AuditLog, Unit

# Repeats of one refusal within this window share one audit row with a count.
REFUSAL_WINDOW = timedelta(minutes=10)


class Auditor:
    def __init__(self, store: AuditLog, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    async def __call__(
        self,
        name: str,
        outcome: str,
        *,
        account: Account | None = None,
        client: str | None = None,
        username: object = None,
        value: str | None = None,
        detail: str | None = None,
        unit: Unit | None = None,
    ) -> None:
        """Record one event: in ``unit``, the request's own transaction, when given."""
        await (unit or self._store).audit(self.event(
            name, outcome, account=account, client=client, username=username, value=value,
            detail=detail))

    async def refusal(
        self,
        name: str,
        outcome: str,
        *,
        account: Account | None = None,
        client: str | None = None,
        username: object = None,
        unit: Unit | None = None,
    ) -> None:
        """A refusal, counted on one row per client, event, outcome (and username, name)
        per ``REFUSAL_WINDOW``: whoever repeats one cannot grow the trail. Callers
        throttle before they get here, so beyond an address's allowance a flood costs the
        database nothing at all."""
        await (unit or self._store).audit_repeated(
            self.event(name, outcome, account=account, client=client, username=username),
            REFUSAL_WINDOW)

    def event(
        self,
        name: str,
        outcome: str,
        *,
        account: Account | None = None,
        client: str | None = None,
        username: object = None,
        value: str | None = None,
        detail: str | None = None,
    ) -> AuditEvent:
        """The event, stamped now, for a caller that writes it itself (``Unit.record_repeat``)."""
        if account is not None:
            username = account.username
        return (
            AuditEvent(
                at=self._clock(),
                event=name,
                outcome=outcome,
                # An attempted username is kept only when it is well-formed: no junk stored.
                username=username.lower()
                if isinstance(username, str) and looks_like_username(username)
                else None,
                client=client,
                name=account.name if account else None,
                value_fingerprint=fingerprint(value) if value else None,
                detail=detail,
            )
        )
