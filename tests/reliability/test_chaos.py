"""Replicas, faults, SIGKILL and a rate budget, against real `serve` processes.

Three servers on one PostgreSQL (and one on SQLite, killed and restarted) take
concurrent updates while the DigitalOcean stand-in injects 5xx, ghost writes, latency
and 429s; one server is killed with SIGKILL mid-run. Then one reconcile pass, and:
at most MAX_VALUES_PER_NAME values per name, the newest confirmed value of every name
live, DigitalOcean holding exactly the database's live values (no orphans), nothing at
names we do not own touched, and never more requests a minute than the budget.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.models import ValueState
from app.standin import Faults, RateLimits, Standin
from tests.conftest import ADMIN_TOKEN, DO_TOKEN, challenge_value
from tests.reliability.support import database_state
from tests.support.env import cli_env
from tests.support.processes import Serve, run_cli

BUDGET = 200  # requests a minute we allow ourselves; the stand-in allows 250
SINGLE_WRITERS = 10
PAIRS = 3
UPDATES_PER_WRITER = 8
PAIR_ROUNDS = 5
FAULTS = Faults(error_probability=0.08, ghost_probability=0.08, throttle_probability=0.03,
                latency_ms=15, seed=7)


@dataclass
class Outcome:
    """What the clients saw, per name: confirmed values in the order they were confirmed."""

    confirmed: dict[str, list[str]] = field(default_factory=dict)
    last_round: dict[str, list[str]] = field(default_factory=dict)
    statuses: list[int | str] = field(default_factory=list)


class Cluster:
    """Servers to spread requests over; a dead one is skipped."""

    def __init__(self, servers: list[Serve]) -> None:
        self.servers = servers
        self._turn = itertools.count()

    def pick(self) -> Serve:
        alive = [s for s in self.servers if s.process.poll() is None]
        return alive[next(self._turn) % len(alive)]


async def update(cluster: Cluster, http: httpx.AsyncClient, account: dict[str, Any],
                 value: str, outcome: Outcome) -> bool:
    server = cluster.pick()
    try:
        response = await http.post(
            server.url + "/update", json={"subdomain": account["subdomain"], "txt": value},
            headers={"X-Api-User": account["username"], "X-Api-Key": account["password"]})
    except httpx.TransportError as exc:
        outcome.statuses.append(type(exc).__name__)
        return False
    outcome.statuses.append(response.status_code)
    if response.status_code == 503:
        assert response.headers["retry-after"].isdigit()
    else:
        assert response.status_code == 200, response.text
    return response.status_code == 200


async def hammer(cluster: Cluster, accounts: list[dict[str, Any]], pairs: list[dict[str, Any]],
                 kill: Callable[[], None]) -> Outcome:
    outcome = Outcome()
    values = (challenge_value(n) for n in itertools.count(10_000))

    async def writer(account: dict[str, Any], http: httpx.AsyncClient) -> None:
        name = account["fulldomain"]
        for _ in range(UPDATES_PER_WRITER):
            value = next(values)
            if await update(cluster, http, account, value, outcome):
                outcome.confirmed.setdefault(name, []).append(value)

    async def pair(account: dict[str, Any], http: httpx.AsyncClient) -> None:
        # Apex and wildcard: two values at one name at once, through different servers.
        name = account["fulldomain"]
        for _ in range(PAIR_ROUNDS):
            both = [next(values), next(values)]
            ok = await asyncio.gather(*(update(cluster, http, account, v, outcome)
                                        for v in both))
            outcome.last_round[name] = [v for v, good in zip(both, ok, strict=True) if good]

    async def killer() -> None:
        await asyncio.sleep(3)
        kill()

    async with httpx.AsyncClient(timeout=30) as http:
        await asyncio.gather(killer(), *(writer(a, http) for a in accounts),
                             *(pair(a, http) for a in pairs))
    return outcome




def create_accounts(url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
        singles = [http.post("/admin/accounts", json={"domain": f"n{i}.example.com"}).json()
                   for i in range(SINGLE_WRITERS)]
        pairs = [http.post("/admin/accounts",
                           json={"domain": f"p{i}.customer.test", "delegated": True}).json()
                 for i in range(PAIRS)]
    return singles, pairs


def check(standin: Standin, url: str, env: dict[str, str], outcome: Outcome,
          names: list[str], foreign_before: set[tuple[str, str, str, str]]) -> None:
    result = run_cli("reconcile", env={**env, "ACME_DELEGATE_DO_MAX_WAIT": "90"}, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["skipped"] is False
    state = asyncio.run(database_state(url, names))
    owned = set(names)
    for name in names:
        rows = state[name]
        assert all(s is ValueState.LIVE for _, _, s in rows), (name, rows)
        records = {(r.id, r.data) for r in standin.state.find_records(name, "TXT")}
        assert records == {(rid, value) for rid, value, _ in rows}, name  # no orphan, no gap
        assert len(records) <= 2, name
        live = {value for _, value in records}
        if outcome.confirmed.get(name):
            assert outcome.confirmed[name][-1] in live, name  # the newest confirmed value
        assert set(outcome.last_round.get(name, [])) <= live, name
    foreign_after = {r for r in _all(standin) if not (r[1] == "TXT" and _fqdn(r) in owned)}
    assert foreign_after == foreign_before
    assert standin.state.max_requests_per_window(60) <= BUDGET
    again = run_cli("reconcile", env={**env, "ACME_DELEGATE_DO_MAX_WAIT": "90"}, timeout=180)
    assert json.loads(again.stdout)["repairs"] == 0


def _all(standin: Standin) -> set[tuple[str, str, str, str]]:
    return {(r.zone, r.type, r.name, r.data) for r in standin.state.all_records()}


def _fqdn(record: tuple[str, str, str, str]) -> str:
    zone, _, name, _ = record
    return zone if name == "@" else f"{name}.{zone}"


@pytest.fixture
def standin() -> Iterator[Standin]:
    with Standin(token=DO_TOKEN, zones=["example.com", "example.org", "customer.test"],
                 rate_limits=RateLimits(per_minute=250, per_hour=5000)) as running:
        state = running.state
        # Records that are not ours, next to ours: none may ever change.
        state.add_record("example.com", "A", "www", "192.0.2.10")
        state.add_record("example.com", "TXT", "_acme-challenge", "not-ours")
        state.add_record("example.com", "TXT", "_acme-challenge.n1.example", "not-ours-either")
        state.add_record("example.org", "TXT", "acme", "v=spf1 -all")
        state.add_records("example.com", [("TXT", f"x{i}", "filler") for i in range(230)])
        yield running


def settings_env(standin: Standin, database_url: str) -> dict[str, str]:
    return cli_env(
        database_url=database_url, do_token=DO_TOKEN, do_api_url=standin.api_url,
        delegation_domain="acme.example.org", admin_token=ADMIN_TOKEN,
        do_rate_per_minute=str(BUDGET), do_max_wait="2", do_timeout="5",
        reconcile_interval="3600", log_level="WARNING",
    )


@pytest.mark.postgres
def test_three_replicas_on_postgres_survive_faults_and_a_kill(
    standin: Standin, postgres_url: str, tmp_path: Path
) -> None:
    env = settings_env(standin, postgres_url)
    with ExitStack() as stack:
        servers = [stack.enter_context(Serve(env, tmp_path / f"serve{i}.log"))
                   for i in range(3)]
        singles, pairs = create_accounts(servers[0].url)
        names = [a["fulldomain"] for a in singles + pairs]
        foreign = {r for r in _all(standin) if not (r[1] == "TXT" and _fqdn(r) in set(names))}
        standin.state.clear_requests()
        standin.state.set_faults(FAULTS)
        started = time.monotonic()
        outcome = asyncio.run(hammer(Cluster(servers), singles, pairs,
                                     kill=servers[2].process.kill))
        standin.state.set_faults(Faults())
        assert servers[2].process.wait(5) == -9
        assert time.monotonic() - started < 120
    codes = {str(s) for s in outcome.statuses}
    assert "200" in codes and "503" in codes  # both paths really ran
    assert sum(len(v) for v in outcome.confirmed.values()) >= SINGLE_WRITERS
    check(standin, postgres_url, env, outcome, names, foreign)


def test_one_process_on_sqlite_survives_faults_and_a_kill(
    standin: Standin, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'one.sqlite3'}"
    env = settings_env(standin, url)
    with ExitStack() as stack:
        first = stack.enter_context(Serve(env, tmp_path / "first.log"))
        singles, pairs = create_accounts(first.url)
        names = [a["fulldomain"] for a in singles + pairs]
        foreign = {r for r in _all(standin) if not (r[1] == "TXT" and _fqdn(r) in set(names))}
        # A second server on the same SQLite file is refused.
        clash = run_cli("serve", "--port", "1", env=env)
        assert clash.returncode != 0 and "SQLite takes one process" in clash.stderr
        standin.state.clear_requests()
        standin.state.set_faults(FAULTS)
        cluster = Cluster([first])

        def kill_and_restart() -> None:
            first.process.kill()
            first.process.wait(5)
            cluster.servers.append(stack.enter_context(Serve(env, tmp_path / "second.log")))

        outcome = asyncio.run(hammer(cluster, singles, pairs, kill=kill_and_restart))
        standin.state.set_faults(Faults())
    assert "200" in {str(s) for s in outcome.statuses}
    check(standin, url, env, outcome, names, foreign)
