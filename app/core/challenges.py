"""Putting and removing challenge TXT values: the database leads, DigitalOcean follows.

A name holds at most its window (``MAX_VALUES_PER_NAME``) of records. Order of an update,
and why:
1. Under the name's lock, a value already there is only marked newest: no call. When
   nobody else is working on the name, that is done in the request's own unit of work.
2. A new value costs the credential one of its hourly new values (429 past the quota,
   before any budget is spent).
3. The value is written down as PENDING *before* DigitalOcean is asked, so a crash
   between the call and "we recorded it" leaves a row that tells the reconciler what to
   look for.
4. When the name's records fill its window, the oldest (a retired one first) is
   overwritten in place: one call per new value, the physical minimum. The PENDING row
   names the record it overwrites; a lost answer is resolved by reading that record by
   id, never by sending again. A record deleted behind our back (404) is created afresh;
   a token without ``domain:update`` (403) falls back to create + delete for good.
5. Otherwise DigitalOcean creates the record; the row becomes LIVE with its id, and only
   then is anything beyond the window evicted: the newest value is never lost, and an
   eviction that fails leaves a DELETING row to retry.

Removals that can wait do wait: a cleaned-up value is RETIRED (its record stays until
the next value overwrites it, or housekeeping deletes it from spare budget). Revocations
delete at once, in the most urgent lane.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from app.core.access import Authorized
from app.core.audit import Auditor
from app.core.keys import fingerprint
from app.core.models import Account, TxtValue, ValueState
from app.core.names import check_txt_value
from app.core.ports import (
    ChallengeStore,
    DnsProvider,
    Limit,
    ProviderRecord,
    Throttle,
    Unit,
)
from app.errors import (
    DomainError,
    NotPermitted,
    ProviderError,
    ProviderUnavailable,
    RecordMissing,
    TooManyRequests,
)
from app.logs import event
from app.pacing.terms import Lane, spending

log = logging.getLogger("acme_delegate.challenges")


def utcnow() -> datetime:
    return datetime.now(UTC)


class _FallBack(Exception):
    """DigitalOcean refused an update for want of scope: create + delete instead."""


@dataclass(frozen=True, slots=True)
class Removal:
    """What a removal did: ``removed`` are gone from DigitalOcean and the database;
    ``pending`` failed and stay DELETING until the reconciler finishes them."""

    removed: int = 0
    pending: int = 0


class ChallengeService:
    def __init__(
        self,
        store: ChallengeStore,
        provider: DnsProvider,
        *,
        ttl: int,
        max_values: int,
        throttle: Throttle | None = None,
        clock: Callable[[], datetime] = utcnow,
        rotate_in_place: bool = True,
        on_update_forbidden: Callable[[], None] | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._throttle = throttle
        # False once DigitalOcean refused an update (403): the token lacks domain:update.
        self.rotate_in_place = rotate_in_place
        self._on_update_forbidden = on_update_forbidden or (lambda: None)
        # Told of every write to a name's records: its values are no longer confirmed
        # served (app.propagation.ConfirmedValues).
        self._on_change = on_change or (lambda name: None)
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
            if await self._repeat(who.unit, account, checked, via=via, client=client):
                return checked
            await who.unit.commit()
            unit = None
            finished = False

            async def finish(settling: Unit) -> None:
                nonlocal finished
                await settling.touch_account(account.id, self._clock())
                await self._audit(via, "ok", account=account, client=client, value=checked,
                                  unit=settling)
                finished = True

            await self.put(account, checked, then=finish)
        except DomainError as exc:
            await self._audit(via, exc.code, account=account, client=client, value=checked,
                              unit=unit)
            raise
        if not finished:  # no DigitalOcean write after all (a repeat found under the lock)
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

    async def _repeat(self, unit: Unit, account: Account, value: str, *, via: str,
                      client: str | None) -> bool:
        """``value`` is live at the account's name: mark it newest, with last-used and the
        audit row, in ``unit`` (one call of the port), and say so. Only when nobody else is
        working on the name; if someone is, ``put`` waits for its turn."""
        done = self._audit.event(via, "ok", account=account, client=client, value=value)
        if not await unit.record_repeat(account.name, value, done.at, account_id=account.id,
                                        event=done):
            return False
        event(log, "txt.repeat", logging.DEBUG, name=account.name, value=done.value_fingerprint)
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

    def window(self, account: Account | None) -> int:
        """How many records the account's name may hold at once."""
        return (account.max_values if account is not None and account.max_values
                else self._max_values)

    async def put(self, account: Account, value: str, *,
                  then: Callable[[Unit], Awaitable[None]] | None = None) -> None:
        """Make ``value`` live at the account's name; returns once DigitalOcean has it.
        ``then`` adds the request's bookkeeping to the transaction that records a new
        value live (not called for a value that was live already)."""
        name = account.name
        async with self._store.name_lock(name):
            current = await self._store.values_at(name)
            existing = next(
                (v for v in current if v.value == value and v.record_id is not None
                 and v.state in (ValueState.LIVE, ValueState.RETIRED)), None
            )
            if existing is not None:
                # A repeat: no DigitalOcean call, but it counts as the newest value again.
                await self._store.bump_value(existing.id, self._clock())
                event(log, "txt.repeat", name=name, value=fingerprint(value))
                return
            with self._changing(name):
                await self._take_quota(account)
                # Records in place, oldest first, unwanted ones (being deleted, retired) before
                # live ones: what a new value may overwrite or must evict.
                occupants = ([v for v in current if v.record_id is not None
                              and v.state in (ValueState.DELETING, ValueState.RETIRED)]
                             + [v for v in current if v.state is ValueState.LIVE])
                window = self.window(account)
                with spending(Lane.CLIENT, account.username):
                    if self.rotate_in_place and len(occupants) >= window:
                        target = occupants[0]
                        try:
                            if await self._overwrite(account, target, value, then):
                                await self._evict(occupants[1:], window - 1)
                                return
                            occupants = occupants[1:]  # gone behind our back (404): removed
                        except _FallBack:
                            pass  # no domain:update: create, then evict, as before
                    pending = await self._store.add_value(
                        name=name, zone=account.zone, value=value, account_id=account.id,
                        at=self._clock())
                    record = await self._create(pending)
                    await self._settle(pending.id, record.id, then=then)
                    event(log, "txt.created", name=name, value=fingerprint(value), record=record.id)
                    await self._evict(occupants, window - 1)

    def changed(self, name: str) -> None:
        """Say that ``name``'s records change (the reconciler's repairs too)."""
        self._on_change(name)

    @contextmanager
    def _changing(self, *names: str) -> Iterator[None]:
        """Around a write to the names' records: said before (what was confirmed there
        may go) and after (a wait that ran meanwhile may have seen the old records)."""
        for name in names:
            self.changed(name)
        try:
            yield
        finally:
            for name in names:
                self.changed(name)

    async def _take_quota(self, account: Account) -> None:
        if self._throttle is not None:
            wait = await self._throttle.take(Limit.NEW_VALUES, account.username)
            if wait is not None:
                raise TooManyRequests("too many new values for this credential this hour",
                                      retry_after=wait)

    async def _evict(self, occupants: Sequence[TxtValue], keep: int) -> None:
        """Remove the oldest ``occupants`` beyond ``keep`` (a client's write: its lane)."""
        excess = len(occupants) - keep
        if excess > 0:
            await self.remove_values(occupants[:excess], reason="evicted")

    async def _settle(self, value_id: int, record_id: int, *, replaces: int | None = None,
                      then: Callable[[Unit], Awaitable[None]] | None = None) -> None:
        """DigitalOcean has the value: the row LIVE and the request's bookkeeping, one
        transaction. If it fails, the row stays PENDING for the reconciler (as after a
        crash at this point) and the client gets an error: no success goes unaudited."""
        async with self._store.unit() as unit:
            await unit.settle(value_id, record_id, self._clock(), replaces=replaces)
            if then is not None:
                await then(unit)
            await unit.commit()

    async def _overwrite(self, account: Account, target: TxtValue, value: str,
                         then: Callable[[Unit], Awaitable[None]] | None = None) -> bool:
        """Put ``value`` into ``target``'s record in place. True when it is live; False when
        the record was gone (its row is removed, the caller creates instead); raises
        ProviderUnavailable when DigitalOcean did not (or may not have) take it."""
        assert target.record_id is not None
        name, zone, record_id = account.name, account.zone, target.record_id
        fields = {"name": name, "value": fingerprint(value), "record": record_id}
        pending = await self._store.add_value(
            name=name, zone=zone, value=value, account_id=account.id, at=self._clock(),
            record_id=record_id)
        try:
            record: ProviderRecord | None = await self._provider.update_txt(
                zone, name, record_id, value)
        except RecordMissing:
            record = None
        except NotPermitted as exc:
            await self._store.delete_values([pending.id])
            self._update_forbidden()
            raise _FallBack from exc
        except ProviderError as exc:
            if not exc.ambiguous:
                await self._store.delete_values([pending.id])
                event(log, "txt.update_failed", logging.WARNING, **fields, error=str(exc))
                raise ProviderUnavailable("DigitalOcean did not update the record",
                                          retry_after=exc.retry_after) from exc
            # The answer was lost: read the record to learn what happened.
            try:
                record = await self._provider.get_record(zone, record_id)
            except ProviderError as lookup_exc:
                # Unknown: the PENDING row stays; the reconciler compares it with the listing.
                event(log, "txt.update_unknown", logging.WARNING, **fields,
                      error=str(lookup_exc))
                raise ProviderUnavailable("DigitalOcean's answer was lost",
                                          retry_after=exc.retry_after) from exc
            if record is not None and record.data != value:
                await self._store.delete_values([pending.id])
                event(log, "txt.update_failed", logging.WARNING, **fields, error=str(exc))
                raise ProviderUnavailable("DigitalOcean did not update the record",
                                          retry_after=exc.retry_after) from exc
            if record is not None:
                event(log, "txt.update_confirmed", logging.WARNING, **fields)
        if record is None:
            # Deleted behind our back: neither row has a record any more.
            await self._store.delete_values([pending.id, target.id])
            event(log, "txt.update_missing", logging.WARNING, **fields)
            return False
        await self._settle(pending.id, record_id, replaces=target.id, then=then)
        event(log, "txt.rotated", **fields)
        return True

    def _update_forbidden(self) -> None:
        if self.rotate_in_place:
            self.rotate_in_place = False
            event(log, "txt.update_forbidden", logging.WARNING,
                  detail="the DigitalOcean token lacks domain:update: new values now cost a "
                         "create and a delete; add the scope and restart")
            self._on_update_forbidden()

    async def remove(self, account: Account, value: str) -> bool:
        """Retire one value at the account's name (httpreq cleanup); False if absent.

        Nothing is deleted now: the record waits for the next value to overwrite it, or
        for housekeeping to delete it from spare budget (a value nobody wants any more is
        harmless for the minutes it stays; deleting it at once would cost a call now and a
        create at the next renewal)."""
        async with self._store.name_lock(account.name):
            targets = [v for v in await self._store.values_at(account.name) if v.value == value]
            if not targets:
                return False
            self.changed(account.name)
            await self._store.set_state([v.id for v in targets if v.state is ValueState.LIVE],
                                        ValueState.RETIRED)
            event(log, "txt.retired", name=account.name, value=fingerprint(value),
                  reason="cleanup")
            return True

    async def remove_all(self, account: Account) -> Removal:
        """Remove every value the account has (revocation: urgent)."""
        async with self._store.name_lock(account.name):
            targets = await self._store.values_of_account(account.id)
            with spending(Lane.REVOCATION, account.username):
                removed = await self.remove_values(targets, reason="revoked")
            return Removal(removed=removed, pending=len(targets) - removed)

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
        with self._changing(*{v.name for v in values}):
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
