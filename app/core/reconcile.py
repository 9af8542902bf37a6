"""The reconciler: makes DigitalOcean match the database, and never touches anything else.

Every pass, from the database alone (no listing), per name holding values and under the
same lock updates take:
- retires values past RECORD_LIFETIME (no acme-dns client ever cleans up) and deletes
  retired records from spare budget (housekeeping: never ahead of a client's write);
- removes values of revoked, expired or deleted accounts (urgent, like a revocation), and
  removals that failed before (DELETING);
- brings the name back within its window (MAX_VALUES_PER_NAME), oldest first, whatever
  crash left it over.
A zone's TXT records are listed (pages of 200) only when that is worth a request: when a
PENDING row there (a crash or a lost answer) needs settling, and otherwise once per
``verify_every`` seconds while the zone holds values. A zone holding none of our values
is never listed: nothing of ours can be there (every record is written down before it is
asked for, and its row goes only once its deletion is confirmed). With a listing, per name:
- settles PENDING rows: a create's record, if DigitalOcean made it after all, goes with
  the row (the client never heard "200"); an in-place overwrite is settled by reading its
  record by id under the lock (a listing may predate a later overwrite of that record):
  adopted if it landed, forgotten if not. Creates run under the name's lock, which every writer
  of the database shares (a PostgreSQL advisory lock; SQLite is one process, held to it
  by a lock file), so a PENDING row seen under that lock is stale for sure;
- re-creates live values deleted behind our back;
- deletes records at owned names that no row knows: ghosts and duplicates.
Only one replica reconciles at a time; a crashed one's lock is released with its
connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.core.challenges import ChallengeService
from app.core.keys import fingerprint
from app.core.models import TxtValue, ValueState
from app.core.ports import DnsProvider, ProviderRecord, ReconcileStore
from app.errors import ProviderError
from app.logs import event
from app.pacing.terms import Lane, spending

log = logging.getLogger("acme_delegate.reconcile")



@dataclass
class ReconcileReport:
    skipped: bool = False  # another replica holds the reconciler lock
    zones: int = 0
    names: int = 0
    expired: int = 0
    revoked: int = 0
    retried: int = 0  # DELETING rows finished
    retired: int = 0  # retired records deleted from spare budget
    trimmed: int = 0  # records beyond a name's window
    adopted: int = 0  # in-place overwrites that landed though their answer was lost
    listings: int = 0  # zone listings made (each one or more requests)
    forgotten: int = 0  # PENDING rows left by a crash or a lost answer
    recreated: int = 0
    ghosts: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def repairs(self) -> int:
        return (self.expired + self.revoked + self.retried + self.forgotten + self.recreated
                + self.ghosts + self.trimmed + self.adopted)


def fqdn(record: ProviderRecord, zone: str) -> str:
    return zone if record.name == "@" else f"{record.name.lower()}.{zone}"


class Reconciler:
    def __init__(
        self,
        store: ReconcileStore,
        provider: DnsProvider,
        challenges: ChallengeService,
        *,
        lifetime: int,
        ttl: int,
        clock: Callable[[], datetime],
        verify_every: float | None = None,
    ) -> None:
        self._store = store
        self._provider = provider
        self._challenges = challenges
        self._lifetime = timedelta(seconds=lifetime)
        self._ttl = ttl
        self._clock = clock
        # A value lives RECORD_LIFETIME: checking more often that nobody deleted it behind
        # our back buys little.
        self._verify_every = timedelta(seconds=lifetime if verify_every is None
                                       else verify_every)
        self._verified: dict[str, datetime] = {}

    async def run_once(self, *, full: bool = False) -> ReconcileReport:
        """One pass; ``full`` lists every zone holding values, due or not."""
        report = ReconcileReport()
        async with self._store.reconcile_lock() as acquired:
            if not acquired:
                report.skipped = True
                return report
            with spending(Lane.HOUSEKEEPING, "reconcile"):
                with_values = await self._store.names_with_values()
                for zone, names in sorted((await self._store.owned_names()).items()):
                    ours = sorted(n for n in names if n in with_values)
                    if ours:
                        await self._zone(zone, ours, names, report, full=full)
        if report.repairs or report.failures:
            event(log, "reconcile.done", logging.WARNING if report.failures else logging.INFO,
                  zones=report.zones, names=report.names, expired=report.expired,
                  revoked=report.revoked, retried=report.retried, retired=report.retired,
                  trimmed=report.trimmed, forgotten=report.forgotten,
                  adopted=report.adopted, recreated=report.recreated, ghosts=report.ghosts,
                  failures=len(report.failures))
        return report

    async def _zone(self, zone: str, names: list[str], owned: set[str],
                    report: ReconcileReport, *, full: bool) -> None:
        report.zones += 1
        for name in names:
            report.names += 1
            async with self._store.name_lock(name):
                await self._tidy(name, report)
        pending = False
        for name in names:
            pending = pending or any(r.state is ValueState.PENDING
                                     for r in await self._store.values_at(name))
        last = self._verified.get(zone)
        due = last is None or self._clock() - last >= self._verify_every
        if not (full or pending or due):
            return
        listed_at = self._clock()
        try:
            records = await self._provider.list_txt(zone)
        except ProviderError as exc:
            report.failures.append(f"list {zone}: {exc}")
            return
        report.listings += 1
        self._verified[zone] = listed_at
        at_name: dict[str, list[ProviderRecord]] = {}
        for record in records:
            at_name.setdefault(fqdn(record, zone), []).append(record)
        # A listing costs the same whatever it is used for: it also settles owned names
        # that hold no value any more but still show records (a ghost whose row is gone),
        # which no pass would look at otherwise. Idle owned names cost nothing.
        for name in sorted(set(names) | (owned & at_name.keys())):
            async with self._store.name_lock(name):
                await self._name(zone, name, at_name.get(name, []), listed_at, report)

    async def _tidy(self, name: str, report: ReconcileReport) -> None:
        """What the database alone says must go: no listing needed."""
        now = self._clock()
        rows = await self._store.values_at(name)
        accounts = await self._store.accounts_by_id([r.account_id for r in rows
                                                     if r.account_id is not None])
        doomed: dict[str, list[TxtValue]] = {"revoked": [], "retried": []}
        expired: list[TxtValue] = []
        for row in rows:
            account = accounts.get(row.account_id) if row.account_id is not None else None
            if row.state is ValueState.DELETING:
                doomed["retried"].append(row)
            elif account is None or not account.usable_at(now):
                doomed["revoked"].append(row)
            elif row.state is ValueState.LIVE and row.updated_at <= now - self._lifetime:
                expired.append(row)
        if expired:
            await self._store.set_state([r.id for r in expired], ValueState.RETIRED)
            report.expired += len(expired)
        for reason, values in doomed.items():
            if values:
                # A revoked credential's records go as urgently as a revocation's.
                with spending(Lane.REVOCATION if reason == "revoked" else Lane.HOUSEKEEPING,
                              "reconcile"):
                    setattr(report, reason, getattr(report, reason)
                            + await self._challenges.remove_values(values, reason=reason))
        rows = await self._store.values_at(name)
        retired = [r for r in rows if r.state is ValueState.RETIRED]
        live = [r for r in rows if r.state is ValueState.LIVE]
        if retired:
            report.retired += await self._challenges.remove_values(retired, reason="retired")
        # Over the window (a crash between a create and its eviction, a replica on an old
        # window): the oldest live values go. Rows count as records: each LIVE row has one.
        account = next((accounts[r.account_id] for r in live
                        if r.account_id in accounts), None)
        excess = len(live) - self._challenges.window(account)
        if excess > 0:
            report.trimmed += await self._challenges.remove_values(live[:excess],
                                                                   reason="trimmed")

    async def _name(self, zone: str, name: str, records: Sequence[ProviderRecord],
                    listed_at: datetime, report: ReconcileReport) -> None:
        rows = await self._store.values_at(name)
        listed = {r.id: r for r in records}
        for row in rows:
            if row.state is ValueState.PENDING and row.record_id is not None:
                # An in-place overwrite whose answer never came. The zone's listing may be
                # older than a later overwrite of the same record (this name's lock was
                # free in between), so ask for that record now: one call, on this rare path.
                try:
                    record = await self._provider.get_record(zone, row.record_id)
                except ProviderError as exc:
                    report.failures.append(f"read {row.record_id}: {exc}")
                    continue
                old = next((r for r in rows if r.id != row.id and r.record_id == row.record_id
                            and r.state is not ValueState.PENDING), None)
                self._challenges.changed(name)
                if record is not None and record.data == row.value and old is not None:
                    await self._store.replace_value(old.id, row.id, row.record_id,
                                                    self._clock())
                    report.adopted += 1
                else:
                    await self._store.delete_values([row.id])
                    report.forgotten += 1
            elif row.state is ValueState.PENDING and row.created_at < listed_at:
                # Its record, if any, is unknown by id: the ghost sweep below removes it.
                # (A row younger than the listing waits for the next pass, which lists
                # again for it: its record may be missing from this listing.)
                await self._store.delete_values([row.id])
                report.forgotten += 1
        for row in await self._store.values_at(name):
            if row.state is not ValueState.LIVE or row.updated_at >= listed_at:
                continue
            if row.record_id not in listed:
                await self._recreate(zone, row, report)
            elif listed[row.record_id].data != row.value:
                # The record holds another value, by the listing. Read it again before
                # believing that (the listing may predate a change made since).
                try:
                    fresh = await self._provider.get_record(zone, row.record_id)
                except ProviderError as exc:
                    report.failures.append(f"read {row.record_id}: {exc}")
                    continue
                if fresh is None or fresh.data != row.value:
                    # Overwritten behind our back: the record is a ghost now, and our
                    # value needs a record again.
                    await self._recreate(zone, row, report)
        # Records at our name that no row knows by id: ghosts of lost answers, duplicates.
        known = {r.record_id for r in await self._store.values_at(name)
                 if r.record_id is not None}
        for record in records:
            if record.id not in known:
                try:
                    await self._provider.delete_record(zone, record.id)
                except ProviderError as exc:
                    report.failures.append(f"delete ghost {record.id}: {exc}")
                    continue
                event(log, "txt.ghost_deleted", name=name, record=record.id,
                      value=fingerprint(record.data))
                report.ghosts += 1

    async def _recreate(self, zone: str, row: TxtValue, report: ReconcileReport) -> None:
        try:
            record = await self._provider.create_txt(zone, row.name, row.value, self._ttl)
        except ProviderError as exc:
            report.failures.append(f"re-create at {row.name}: {exc}")
            return
        self._challenges.changed(row.name)  # it was gone: the nameservers lag again
        await self._store.set_record_id(row.id, record.id)
        event(log, "txt.recreated", logging.WARNING, name=row.name,
              value=fingerprint(row.value), record=record.id)
        report.recreated += 1


class ReconcileLoop:
    """Runs the reconciler at start-up and every ``interval`` seconds until stopped."""

    def __init__(self, reconciler: Reconciler, interval: float,
                 on_pass: Callable[[ReconcileReport | None, float], None] | None = None) -> None:
        self._reconciler = reconciler
        self._interval = interval
        self._on_pass = on_pass or (lambda report, seconds: None)
        self._task: asyncio.Task[None] | None = None
        self.last: ReconcileReport | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="acme-delegate-reconciler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.last = await self._reconciler.run_once()
                self._on_pass(self.last, time.monotonic() - started)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed pass must never stop the next one
                self._on_pass(None, time.monotonic() - started)
                event(log, "reconcile.failed", logging.ERROR, error=type(exc).__name__)
                log.debug("reconcile pass failed", exc_info=exc)
            await asyncio.sleep(self._interval)
