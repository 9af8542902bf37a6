"""PostgreSQL itself fails: the service runs on a PostgreSQL instance of its own (initdb
in a temporary directory, a free port), which is stopped during load and started again.

While it is down every answer is a JSON 503 with Retry-After (never a hang, never a
500); once it is back the same process serves again within seconds, without a restart;
no value a client was told is live (200) is lost; and after one reconcile pass the
database and DigitalOcean (the stand-in) hold exactly the same values."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.models import ValueState
from app.standin import Standin
from tests.conftest import ADMIN_TOKEN, DO_TOKEN, challenge_value
from tests.reliability.support import database_state
from tests.strict_ci import IN_CI
from tests.support.env import cli_env
from tests.support.ports import free_port
from tests.support.processes import Serve, run_cli

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ACCOUNTS = 24


def _as_postgres(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """PostgreSQL refuses to run as root: its tools run as the postgres user."""
    command = list(args)
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          check=False)


@dataclass
class Postgres:
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        result = _as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.data / "log"), "-w",
            "-t", "60", "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.data} -c fsync=off", "start")
        assert result.returncode == 0, result.stdout + result.stderr

    def stop(self) -> None:
        result = _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                              "-w", "-t", "60", "stop")
        assert result.returncode == 0, result.stdout + result.stderr


@contextmanager
def own_postgres() -> Iterator[Postgres]:
    if not (PG_BIN / "initdb").exists():
        message = f"no PostgreSQL binaries in {PG_BIN} (apt-get install postgresql-15)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    # Not under pytest's tmp_path: its parents are private to root, the server is not root.
    data = Path(tempfile.mkdtemp(prefix="acme-delegate-pg-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        data.chmod(0o700)
        result = _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                              "-A", "trust", "--no-sync", timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        server = Postgres(data, free_port())
        server.start()
        try:
            yield server
        finally:
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
    finally:
        shutil.rmtree(data, ignore_errors=True)


@dataclass
class Load:
    """Clients putting values, one name each, two values a name at most (so every
    acknowledged value must stay live: MAX_VALUES_PER_NAME is 2)."""

    url: str
    accounts: list[dict[str, Any]]
    acknowledged: dict[str, list[str]] = field(default_factory=dict)
    answers: list[tuple[float, int | str, str, str | None, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=20) as http:
            n = 0
            while not self.stop.is_set():
                for round_ in (0, 1):
                    for account in self.accounts:
                        if self.stop.is_set():
                            return
                        name = account["fulldomain"]
                        if len(self.acknowledged.get(name, [])) > round_:
                            continue  # this round's value is in already
                        n += 1
                        value = challenge_value(100_000 + n)
                        started = time.monotonic()
                        try:
                            response = http.post("/update", json={
                                "subdomain": account["subdomain"], "txt": value}, headers={
                                "X-Api-User": account["username"],
                                "X-Api-Key": account["password"]})
                            status: int | str = response.status_code
                            body = response.text
                            retry = response.headers.get("retry-after")
                        except httpx.HTTPError as exc:
                            status, body, retry = type(exc).__name__, "", None
                        self.answers.append((started, status, body, retry,
                                             time.monotonic() - started))
                        if status == 200:
                            self.acknowledged.setdefault(name, []).append(value)
                        self.stop.wait(0.05)
                if all(len(v) >= 2 for v in self.acknowledged.values()) and len(
                        self.acknowledged) == len(self.accounts):
                    return




@pytest.mark.postgres
def test_postgres_stopped_during_load_and_started_again(tmp_path: Path, capsys: Any) -> None:
    with own_postgres() as pg, Standin(token=DO_TOKEN, zones=["example.com"]) as standin:
        env = cli_env(database_url=pg.url, do_token=DO_TOKEN, do_api_url=standin.api_url,
                      admin_token=ADMIN_TOKEN, reconcile_interval="3600", do_timeout="5",
                      do_max_wait="5", log_level="WARNING",
                      auth_failures_per_minute="100000", updates_per_minute="100000")
        with Serve(env, tmp_path / "serve.log") as served:
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            with httpx.Client(base_url=served.url, headers=admin, timeout=30) as http:
                accounts = [http.post("/admin/accounts",
                                      json={"domain": f"n{i}.example.com"}).json()
                            for i in range(ACCOUNTS)]
            load = Load(served.url, accounts)
            worker = threading.Thread(target=load.run, daemon=True)
            worker.start()
            while len(load.answers) < 10:  # load under way, against a healthy database
                time.sleep(0.05)
            pg.stop()
            down_at = time.monotonic()
            with httpx.Client(base_url=served.url, timeout=20) as probe:
                while len([a for a in load.answers if a[0] > down_at]) < 10:
                    time.sleep(0.1)
                down_answers = {p: probe.get(p) for p in ("/readyz", "/health", "/livez")}
                down_list = probe.get("/admin/accounts", headers=admin)
                up_at = time.monotonic()
                pg.start()
                recovered_after = None
                while time.monotonic() - up_at < 30:
                    if probe.get("/readyz").status_code == 200:
                        recovered_after = time.monotonic() - up_at
                        break
                    time.sleep(0.2)
            worker.join(90)
            load.stop.set()
            assert served.process.poll() is None, "the server died"
            log = served.log()
        during = [a for a in load.answers if down_at <= a[0] and a[0] + a[4] < up_at]
        result = run_cli("reconcile", env={**env, "ACME_DELEGATE_DO_MAX_WAIT": "60"},
                         timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        names = [a["fulldomain"] for a in accounts]
        rows = asyncio.run(database_state(pg.url, names))
    with capsys.disabled():
        statuses: dict[str, int] = {}
        for _, status, _, _, _ in load.answers:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        print(f"\n[PostgreSQL stopped under load] {len(load.answers)} updates {statuses}; "
              f"{len(during)} while down, slowest {max(a[4] for a in during):.2f}s; "
              f"ready again {recovered_after}s after the start")
    # While down: JSON 503s with Retry-After, quickly; never a 500 or a hang.
    assert during, "no request was answered while the database was down"
    for _, status, body, retry, seconds in during:
        assert status == 503, (status, body)
        assert json.loads(body) == {"error": "database_unavailable"}
        assert retry is not None and int(retry) >= 1
        assert seconds < 10
    assert not [a for a in load.answers if not isinstance(a[1], int)
                or (a[1] >= 500 and a[1] != 503)], "a 5xx other than 503, or no answer"
    assert down_answers["/livez"].status_code == 200
    for path in ("/readyz", "/health"):
        assert down_answers[path].status_code == 503, path
        assert down_answers[path].json() == {"error": "database_unavailable"}
    assert (down_list.status_code, down_list.json()) == (503, {"error": "database_unavailable"})
    assert "Traceback" not in log
    # Back without a restart, within seconds; every name got its two values.
    assert recovered_after is not None and recovered_after < 15, recovered_after
    assert len(load.acknowledged) == ACCOUNTS
    assert all(len(v) == 2 for v in load.acknowledged.values()), load.acknowledged
    # No acknowledged value lost; database and DigitalOcean equal after one reconcile.
    for name in names:
        records = {(r.id, r.data) for r in standin.state.find_records(name, "TXT")}
        assert all(state is ValueState.LIVE for _, _, state in rows[name]), rows[name]
        assert records == {(rid, value) for rid, value, _ in rows[name]}, name
        assert set(load.acknowledged[name]) <= {value for _, value in records}, name
