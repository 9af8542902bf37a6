"""The reconciler: makes DigitalOcean match the database, and never touches anything else.

Per zone it reads every TXT record once (pages of 200), keeps only the names this
service owns (bound by an account, or holding one of its values), and per name, under
the same lock updates take:
- removes values past RECORD_LIFETIME (no acme-dns client ever cleans up), values of
  revoked, expired or deleted accounts, and removals that failed before (DELETING);
- settles PENDING values a crash or a lost answer left behind: their client never heard
  "200", so the record, if DigitalOcean made it after all, goes with the row. Creates run
  under the name's lock, which every writer of the database shares (a PostgreSQL
  advisory lock; SQLite is one process, held to it by a lock file), so a PENDING row
  seen under that lock is stale for sure;
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
from app.core.ports import DnsProvider, ProviderError, ProviderRecord, Store
from app.logs import event

log = logging.getLogger("acme_delegate.reconcile")



@dataclass
class ReconcileReport:
    skipped: bool = False  # another replica holds the reconciler lock
    zones: int = 0
    names: int = 0
    expired: int = 0
    revoked: int = 0
    retried: int = 0  # DELETING rows finished
    forgotten: int = 0  # PENDING rows left by a crash or a lost answer
    recreated: int = 0
    ghosts: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def repairs(self) -> int:
        return (self.expired + self.revoked + self.retried + self.forgotten + self.recreated
                + self.ghosts)


def fqdn(record: ProviderRecord, zone: str) -> str:
    return zone if record.name == "@" else f"{record.name.lower()}.{zone}"


class Reconciler:
    def __init__(
        self,
        store: Store,
        provider: DnsProvider,
        challenges: ChallengeService,
        *,
        lifetime: int,
        ttl: int,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._provider = provider
        self._challenges = challenges
        self._lifetime = timedelta(seconds=lifetime)
        self._ttl = ttl
        self._clock = clock

    async def run_once(self) -> ReconcileReport:
        report = ReconcileReport()
        async with self._store.reconcile_lock() as acquired:
            if not acquired:
                report.skipped = True
                return report
            with_values = await self._store.names_with_values()
            for zone, names in sorted((await self._store.owned_names()).items()):
                await self._zone(zone, names, with_values, report)
        if report.repairs or report.failures:
            event(log, "reconcile.done", logging.WARNING if report.failures else logging.INFO,
                  zones=report.zones, names=report.names, expired=report.expired,
                  revoked=report.revoked, retried=report.retried,
                  forgotten=report.forgotten, recreated=report.recreated, ghosts=report.ghosts,
                  failures=len(report.failures))
        return report

    async def _zone(self, zone: str, names: set[str], with_values: set[str],
                    report: ReconcileReport) -> None:
        listed_at = self._clock()
        try:
            records = await self._provider.list_txt(zone)
        except ProviderError as exc:
            report.failures.append(f"list {zone}: {exc}")
            return
        report.zones += 1
        at_name: dict[str, list[ProviderRecord]] = {}
        for record in records:
            at_name.setdefault(fqdn(record, zone), []).append(record)
        # Only names with a row or a record need a look: most bound names hold nothing
        # between renewals (the scale benchmark's 100,000 idle accounts cost minutes).
        for name in sorted(n for n in names if n in with_values or n in at_name):
            report.names += 1
            async with self._store.name_lock(name):
                await self._name(zone, name, at_name.get(name, []), listed_at, report)

    async def _name(self, zone: str, name: str, records: Sequence[ProviderRecord],
                    listed_at: datetime, report: ReconcileReport) -> None:
        now = self._clock()
        rows = await self._store.values_at(name)
        accounts = await self._store.accounts_by_id([r.account_id for r in rows
                                                     if r.account_id is not None])
        listed = {r.id: r for r in records}
        known = {r.record_id for r in rows if r.record_id is not None}
        doomed: dict[str, list[TxtValue]] = {"expired": [], "revoked": [], "retried": []}
        for row in rows:
            account = accounts.get(row.account_id) if row.account_id is not None else None
            if row.state is ValueState.DELETING:
                doomed["retried"].append(row)
            elif account is None or not account.usable_at(now):
                doomed["revoked"].append(row)
            elif row.state is ValueState.LIVE and row.updated_at <= now - self._lifetime:
                doomed["expired"].append(row)
            elif row.state is ValueState.PENDING:
                # Its record, if any, is unknown by id: the ghost sweep below removes it.
                await self._store.delete_values([row.id])
                report.forgotten += 1
            elif (row.state is ValueState.LIVE and row.record_id not in listed
                  and row.updated_at < listed_at):
                await self._recreate(zone, row, report)
        for reason, values in doomed.items():
            if values:
                setattr(report, reason, getattr(report, reason)
                        + await self._challenges.remove_values(values, reason=reason))
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
