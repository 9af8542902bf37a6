"""Putting and removing challenge TXT values: the database leads, DigitalOcean follows.

Order of an update, and why:
1. Under the name's lock, a value already live is only marked newest: no call. When
   nobody else is working on the name, that is done in the request's own unit of work.
2. The value is written down as PENDING *before* DigitalOcean is asked, so a
   crash between "DigitalOcean created it" and "we recorded the id" leaves a
   row that tells the reconciler what to look for.
3. DigitalOcean creates the record; the row becomes LIVE with its id.
4. Only then are the oldest values beyond the window evicted: the newest value
   is never lost, and an eviction that fails leaves a DELETING row to retry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from app.core.access import Authorized
from app.core.audit import Auditor
from app.core.errors import DomainError, ProviderUnavailable, TooManyRequests
from app.core.keys import fingerprint
from app.core.models import Account, TxtValue, ValueState
from app.core.names import check_txt_value
from app.core.ports import (
    DnsProvider,
    Limit,
    ProviderError,
    ProviderRecord,
    Store,
    Throttle,
    Unit,
)
from app.logs import event

log = logging.getLogger("acme_delegate.challenges")


def utcnow() -> datetime:
    return datetime.now(UTC)


class ChallengeService:
    def __init__(
        self,
        store: Store,
        provider: DnsProvider,
        *,
        ttl: int,
        max_values: int,
        throttle: Throttle | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._throttle = throttle
        self._store = store
        self._provider = provider
        self._ttl = ttl
        self._max_values = max_values
        self._clock = clock
        self._audit = Auditor(store, clock)

    async def update(self, who: Authorized, value: object, *, via: str = "update") -> str:
        """Validate and ``put`` a value, with its audit record, success or failure.

        A value already live (a repeat) is the whole request in ``who.unit``: the limit
        counted, the value marked newest, last-used and the audit row, one transaction.
        A new value ends that unit first: DigitalOcean is never called inside one."""
        account, client = who.account, who.client
        unit: Unit | None = who.unit
        checked: str | None = None
        try:
            await self._count(account)
            checked = check_txt_value(value)
            if await self._repeat(who.unit, account.name, checked):
                await who.unit.touch_account(account.id, self._clock())
                await self._audit(via, "ok", account=account, client=client, value=checked,
                                  unit=who.unit)
                return checked
            await who.unit.commit()
            unit = None
            await self.put(account, checked)
        except DomainError as exc:
            await self._audit(via, exc.code, account=account, client=client, value=checked,
                              unit=unit)
            raise
        await self._finish(account, via, "ok", client=client, value=checked)
        return checked

    async def cleanup(self, who: Authorized, value: object) -> bool:
        """Validate and ``remove`` a value, with its audit record."""
        account, client = who.account, who.client
        try:
            await self._count(account)
            checked = check_txt_value(value)
        except DomainError as exc:
            await self._audit("cleanup", exc.code, account=account, client=client,
                              unit=who.unit)
            raise
        await who.unit.commit()
        removed = await self.remove(account, checked)
        await self._finish(account, "cleanup", "ok" if removed else "absent", client=client,
                           value=checked)
        return removed

    async def _repeat(self, unit: Unit, name: str, value: str) -> bool:
        """``value`` is live at ``name``: mark it newest (in ``unit``) and say so. Only when
        nobody else is working on the name; if someone is, ``put`` waits for its turn."""
        if not await unit.try_lock_name(name):
            return False
        if not await unit.bump_live(name, value, self._clock()):
            return False
        event(log, "txt.repeat", logging.DEBUG, name=name, value=fingerprint(value))
        return True

    async def _finish(self, account: Account, via: str, outcome: str, *, client: str | None,
                      value: str) -> None:
        """After DigitalOcean's part: last-used and the audit row, one transaction."""
        async with self._store.unit() as unit:
            await unit.touch_account(account.id, self._clock())
            await self._audit(via, outcome, account=account, client=client, value=value,
                              unit=unit)

    async def _count(self, account: Account) -> None:
        """One more request of this credential; too many a minute is TooManyRequests."""
        if self._throttle is not None:
            wait = await self._throttle.take(Limit.UPDATES, account.username)
            if wait is not None:
                raise TooManyRequests("too many requests for this credential",
                                      retry_after=wait)

    async def put(self, account: Account, value: str) -> None:
        """Make ``value`` live at the account's name; returns once DigitalOcean has it."""
        name = account.name
        async with self._store.name_lock(name):
            current = await self._store.values_at(name)
            existing = next(
                (v for v in current if v.value == value and v.state is ValueState.LIVE), None
            )
            if existing is not None:
                # A repeat: no DigitalOcean call, but it counts as the newest value again.
                await self._store.bump_value(existing.id, self._clock())
                event(log, "txt.repeat", name=name, value=fingerprint(value))
                return
            pending = await self._store.add_value(
                name=name, zone=account.zone, value=value, account_id=account.id, at=self._clock()
            )
            record = await self._create(pending)
            await self._store.mark_live(pending.id, record.id, self._clock())
            event(log, "txt.created", name=name, value=fingerprint(value), record=record.id)
            live = [v for v in current if v.state is ValueState.LIVE and v.value != value]
            # ``current`` is ordered oldest first; keep room for the new value.
            excess = len(live) + 1 - (account.max_values or self._max_values)
            if excess > 0:
                await self.remove_values(live[:excess], reason="evicted")

    async def remove(self, account: Account, value: str) -> bool:
        """Remove one value from the account's name (httpreq cleanup); False if absent."""
        async with self._store.name_lock(account.name):
            targets = [v for v in await self._store.values_at(account.name) if v.value == value]
            if not targets:
                return False
            await self.remove_values(targets, reason="cleanup")
            return True

    async def remove_all(self, account: Account) -> int:
        """Remove every value the account has (revocation); returns how many were removed."""
        async with self._store.name_lock(account.name):
            targets = await self._store.values_of_account(account.id)
            await self.remove_values(targets, reason="revoked")
            return len(targets)

    async def _create(self, pending: TxtValue) -> ProviderRecord:
        try:
            return await self._provider.create_txt(
                pending.zone, pending.name, pending.value, self._ttl
            )
        except ProviderError as exc:
            adopted = await self._recover(pending, exc)
            if adopted is not None:
                return adopted
            raise ProviderUnavailable(
                "DigitalOcean did not create the record", retry_after=exc.retry_after
            ) from exc

    async def _recover(self, pending: TxtValue, exc: ProviderError) -> ProviderRecord | None:
        """After a failed create: adopt the record if it exists after all, else undo the row.

        This is the only place that lists records, and only on a failure path.
        """
        fields = {"name": pending.name, "value": fingerprint(pending.value)}
        if not exc.ambiguous:
            await self._store.delete_values([pending.id])
            event(log, "txt.create_failed", logging.WARNING, **fields, error=str(exc))
            return None
        try:
            found = [
                r
                for r in await self._provider.find_txt(pending.zone, pending.name)
                if r.data == pending.value
            ]
        except ProviderError as lookup_exc:
            # Unknown outcome: the PENDING row stays, so the reconciler removes a ghost later.
            event(log, "txt.create_unknown", logging.WARNING, **fields, error=str(lookup_exc))
            return None
        if not found:
            await self._store.delete_values([pending.id])
            event(log, "txt.create_failed", logging.WARNING, **fields, error=str(exc))
            return None
        keep, *extra = found
        known = {v.record_id for v in await self._store.values_at(pending.name)}
        for duplicate in extra:
            if duplicate.id not in known:
                await self._delete_record(pending.zone, duplicate.id)
        event(log, "txt.adopted", logging.WARNING, **fields, record=keep.id)
        return keep

    async def remove_values(self, values: Sequence[TxtValue], *, reason: str) -> int:
        """Delete values from DigitalOcean then from the database; failures stay DELETING.
        Returns how many are gone for good. The caller holds the name's lock."""
        if not values:
            return 0
        await self._store.set_state([v.id for v in values], ValueState.DELETING)
        done: list[int] = []
        for value in values:
            if await self._delete_value(value):
                done.append(value.id)
                event(log, "txt.deleted", name=value.name, value=fingerprint(value.value),
                      reason=reason)
        await self._store.delete_values(done)
        return len(done)

    async def _delete_value(self, value: TxtValue) -> bool:
        if value.record_id is not None:
            return await self._delete_record(value.zone, value.record_id)
        # A PENDING row whose create never reported back: the record may exist. Look it up.
        try:
            records = await self._provider.find_txt(value.zone, value.name)
        except ProviderError:
            return False
        # Never touch a record another row knows by id (the same value put again later).
        known = {v.record_id for v in await self._store.values_at(value.name) if v.id != value.id}
        results = [
            await self._delete_record(value.zone, r.id)
            for r in records
            if r.data == value.value and r.id not in known
        ]
        return all(results)

    async def _delete_record(self, zone: str, record_id: int) -> bool:
        try:
            await self._provider.delete_record(zone, record_id)
        except ProviderError as exc:
            event(log, "txt.delete_failed", logging.WARNING, zone=zone, record=record_id,
                  error=str(exc))
            return False
        return True
