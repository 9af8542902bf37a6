"""Building the service graph from settings: used by the app's lifespan and by the CLI."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app import __version__
from app.config import Settings
from app.core.access import Gate
from app.core.accounts import AccountService
from app.core.challenges import ChallengeService
from app.core.names import bindable
from app.core.reconcile import Reconciler
from app.core.zones import ZoneResolver
from app.db.budget import DatabaseBoard, DatabaseWindow
from app.db.engine import create_engine
from app.db.store import SqlStore
from app.errors import ProviderAuthError, ProviderUnavailable, StartupError, ZoneNotFound
from app.logs import event
from app.observability import Metrics
from app.pacing.budget import RateBudget
from app.pacing.limits import Throttle
from app.propagation import PropagationChecker
from app.providers.digitalocean import DigitalOceanClient

log = logging.getLogger("acme_delegate")


# Connections that may hold a name's advisory lock at once (twice this with overflow);
# further updates wait their turn, holding nothing.
LOCK_POOL = 16
# On PostgreSQL the DigitalOcean budget's rounds and reads have connections of their own:
# one round serves every waiting request of the process, so it must not queue behind
# those requests' own database work for a connection of the pool.
BUDGET_POOL = 2


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    store: SqlStore
    provider: DigitalOceanClient
    budget: RateBudget
    zones: ZoneResolver
    challenges: ChallengeService
    accounts: AccountService
    reconciler: Reconciler
    gate: Gate
    # Which nameservers serve which values: the /update wait and `accounts check`.
    propagation: PropagationChecker


@asynccontextmanager
async def build_services(
    settings: Settings, *, http: httpx.AsyncClient | None = None, metrics: Metrics | None = None
) -> AsyncIterator[Services]:
    """Engine, HTTP client and services; all closed on exit. ``http`` is injectable for tests."""
    token = settings.token()
    if token is None:
        raise StartupError(
            "no DigitalOcean token: set ACME_DELEGATE_DO_TOKEN or ACME_DELEGATE_DO_TOKEN_FILE "
            "(a token with domain:read, domain:create, domain:update and domain:delete)"
        )
    engine = create_engine(settings.database_url)
    # Held advisory locks get their own pool (see SqlStore); SQLite needs none.
    lock_engine = (create_engine(settings.database_url, pool_size=LOCK_POOL)
                   if engine.dialect.name == "postgresql" else None)
    # Not on SQLite: a second connection there writing the window made the request
    # path's transactions meet SQLite's busy handler (a burst of 1,000 answered 700
    # "overloaded"); its one connection, handed out in turn, stays the whole story.
    budget_engine = (create_engine(settings.database_url, pool_size=BUDGET_POOL)
                     if engine.dialect.name == "postgresql" else engine)
    propagation = PropagationChecker(
        settings.nameservers, timeout=settings.dns_timeout,
        on_reachability=metrics.nameserver_reachable if metrics else None,
    )
    own_http = http is None
    client = http or httpx.AsyncClient(
        timeout=httpx.Timeout(settings.do_timeout, connect=5.0),
        headers={"User-Agent": f"acme-delegate/{__version__}"},
        follow_redirects=False,
    )
    try:
        store = SqlStore(engine, on_audit=metrics.audited if metrics else None,
                         lock_engine=lock_engine)
        # The window is kept in the database: replicas, restarts and the CLI all spend
        # from one. Replicas (PostgreSQL) also queue in one fair queue there; one SQLite
        # process keeps its queue in memory.
        budget = (RateBudget(per_minute=settings.do_rate_per_minute,
                             per_hour=settings.do_rate_per_hour,
                             board=DatabaseBoard(budget_engine),
                             patience=settings.do_max_wait)
                  if engine.dialect.name == "postgresql" else
                  RateBudget(per_minute=settings.do_rate_per_minute,
                             per_hour=settings.do_rate_per_hour,
                             window=DatabaseWindow(budget_engine),
                             patience=settings.do_max_wait))
        provider = DigitalOceanClient(
            http=client, token=token, base_url=settings.do_api_url, budget=budget,
            max_wait=settings.do_max_wait,
            observe=metrics.digitalocean_call if metrics else None,
            may_write=lambda name: bindable(name, settings.delegation_domain),
        )
        zones = ZoneResolver(provider, allowed=settings.zones)
        throttle = Throttle(
            storage=settings.limits_storage,
            auth_failures_per_minute=settings.auth_failures_per_minute,
            updates_per_minute=settings.updates_per_minute,
            registrations_per_hour=settings.registrations_per_hour,
            new_values_per_hour=settings.new_values_per_hour,
        )
        challenges = ChallengeService(
            store, provider, ttl=settings.txt_ttl, max_values=settings.max_values_per_name,
            throttle=throttle,
            on_update_forbidden=metrics.update_forbidden if metrics else None,
            on_change=propagation.confirmed.forget,
        )
        accounts = AccountService(
            store,
            zones,
            challenges,
            delegation_domain=settings.delegation_domain,
            registration=settings.registration,
            throttle=throttle,
            max_registered=settings.registration_max_accounts,
        )
        reconciler = Reconciler(store, provider, challenges, lifetime=settings.record_lifetime,
                                ttl=settings.txt_ttl, clock=accounts.now)
        gate = Gate(store, accounts.now, throttle=throttle)
        try:
            yield Services(settings, engine, store, provider, budget, zones, challenges,
                           accounts, reconciler, gate, propagation)
        finally:
            await store.close()
            await budget.close()
            await throttle.close()
    finally:
        await propagation.close()
        if own_http:
            await client.aclose()
        await engine.dispose()
        if budget_engine is not engine:
            await budget_engine.dispose()
        if lock_engine is not None:
            await lock_engine.dispose()


async def check_provider(services: Services) -> None:
    """Fail fast on a wrong token or a delegation domain outside the account's zones.

    A DigitalOcean outage only warns: refusing to start during one would turn
    their bad minute into our outage.
    """
    settings = services.settings
    try:
        zones = await services.zones.zones()
    except ProviderUnavailable as exc:
        cause = exc.__cause__
        if isinstance(cause, ProviderAuthError):
            raise StartupError(
                "DigitalOcean refused the token (401/403): check ACME_DELEGATE_DO_TOKEN and its "
                "scopes (domain:read, domain:create, domain:update, domain:delete)"
            ) from exc
        event(log, "startup.provider_unreachable", logging.WARNING, error=str(cause or exc))
        return
    event(log, "startup.zones", zones=len(zones))
    if settings.delegation_domain:
        try:
            await services.zones.zone_for(settings.delegation_domain)
        except ZoneNotFound as exc:
            listed = ", ".join(zones[:10]) or "none"
            raise StartupError(
                f"ACME_DELEGATE_DELEGATION_DOMAIN={settings.delegation_domain} lies in no zone "
                f"this service may write ({exc.detail}); the account's zones: {listed}"
            ) from exc
    for entry in settings.zones:
        if not any(entry == z or entry.endswith("." + z) for z in zones):
            event(log, "startup.zone_missing", logging.WARNING, zone=entry)


async def check_nameservers(services: Services) -> None:
    """Say once, at start-up, whether the nameservers answer. Unreachable ones (clusters
    often block DNS egress) only warn: waits leave them out, and with none reachable
    /update answers at once, as without ACME_DELEGATE_WAIT_FOR_DNS."""
    settings = services.settings
    if settings.wait_for_dns <= 0:
        event(log, "startup.dns_wait_off")
        return
    zone = settings.delegation_domain or (settings.zones[0] if settings.zones else ".")
    answers = await services.propagation.probe(zone)
    down = [str(a.nameserver) for a in answers if not a.answered]
    refused = [str(a.nameserver) for a in answers if a.answered and a.rcode == "REFUSED"]
    if len(down) == len(answers):
        event(log, "startup.nameservers_unreachable", logging.WARNING,
              nameservers=",".join(down), effect="updates answer without waiting for DNS")
    elif down:
        event(log, "startup.nameservers_unreachable", logging.WARNING,
              nameservers=",".join(down), effect="waits leave them out")
    if refused:
        event(log, "startup.nameservers_refuse_zone", logging.WARNING,
              nameservers=",".join(refused), zone=zone,
              effect="waits for values there end at ACME_DELEGATE_WAIT_FOR_DNS")
    event(log, "startup.nameservers", reachable=len(answers) - len(down),
          configured=len(answers), wait_seconds=settings.wait_for_dns)
