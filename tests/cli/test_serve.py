"""``acme-delegate serve`` and the CLI as real processes against the stand-in on loopback,
and the promise that no secret reaches a log line or a response it should not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.core.keys import hash_key
from app.standin import Standin
from tests.conftest import ADMIN_TOKEN, DO_TOKEN, challenge_value
from tests.support.env import cli_env
from tests.support.processes import Serve, run_cli


@pytest.fixture
def standin() -> Iterator[Standin]:
    with Standin(token=DO_TOKEN, zones=["example.com", "example.org"]) as running:
        yield running


@pytest.fixture
def env(standin: Standin, database_url: str) -> dict[str, str]:
    return cli_env(
        database_url=database_url,
        do_token=DO_TOKEN,
        do_api_url=standin.api_url,
        delegation_domain="acme.example.org",
        registration="open",
        admin_token=ADMIN_TOKEN,
        log_level="DEBUG",
    )


def test_cli_accounts_lifecycle(env: dict[str, str], standin: Standin) -> None:
    created = run_cli("accounts", "create", "--domain", "www.example.com", "--note", "web",
                      "--allow-from", "127.0.0.0/8", "--format", "cert-manager", env=env)
    assert created.returncode == 0, created.stderr
    secret = json.loads(created.stdout)
    account = secret["www.example.com"]
    assert account["fulldomain"] == "_acme-challenge.www.example.com"
    assert account["allowfrom"] == ["127.0.0.0/8"]
    assert len(account["password"]) == 40

    listed = run_cli("accounts", "list", "-o", "json", env=env)
    assert listed.returncode == 0
    rows = json.loads(listed.stdout)
    assert [r["username"] for r in rows] == [account["username"]]

    shown = run_cli("accounts", "show", account["username"], "-o", "json", env=env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["note"] == "web"
    for output in (listed, shown):
        assert account["password"] not in output.stdout + output.stderr

    delegated = run_cli("accounts", "create", "--domain", "www.customer.net", "--delegated",
                        "--format", "lego", "--server-url", "https://acme.example.net", env=env)
    assert delegated.returncode == 0, delegated.stderr
    lego = json.loads(delegated.stdout)["www.customer.net"]
    assert lego["server_url"] == "https://acme.example.net"
    assert lego["fulldomain"].endswith(".acme.example.org")
    assert f"_acme-challenge.www.customer.net. CNAME {lego['fulldomain']}." in delegated.stderr

    revoked = run_cli("accounts", "revoke", account["username"], env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout

    audit = run_cli("audit", "-o", "json", env=env)
    events = [event["event"] for event in json.loads(audit.stdout)]
    assert events.count("account.create") == 2 and "account.revoke" in events


def test_cli_errors_are_messages_not_tracebacks(env: dict[str, str]) -> None:
    for args in (["accounts", "create", "--domain", "www.not-ours.test"],
                 ["accounts", "create", "--domain", "bad..name"],
                 ["accounts", "show", "00000000-0000-4000-8000-000000000000"],
                 ["accounts", "create", "--domain", "x.example.com", "--allow-from", "nope"]):
        result = run_cli(*args, env=env)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr
        assert "Error" in result.stderr or "error" in result.stderr


def test_configuration_errors_name_the_setting(env: dict[str, str]) -> None:
    bad = {**env, "ACME_DELEGATE_TXT_TTL": "5", "ACME_DELEGATE_REGISTRATION": "sometimes"}
    result = run_cli("accounts", "list", env=bad)
    assert result.returncode != 0
    assert "ACME_DELEGATE_TXT_TTL" in result.stderr
    assert "ACME_DELEGATE_REGISTRATION" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_delegation_domain_outside_the_account(env: dict[str, str],
                                                               tmp_path: Path) -> None:
    bad = {**env, "ACME_DELEGATE_DELEGATION_DOMAIN": "acme.elsewhere.test"}
    result = run_cli("serve", "--port", "1", env=bad, timeout=60)
    assert result.returncode != 0
    assert "acme.elsewhere.test lies in no zone" in result.stderr
    assert DO_TOKEN not in result.stderr


def test_serve_refuses_a_wrong_token(env: dict[str, str]) -> None:
    bad = {**env, "ACME_DELEGATE_DO_TOKEN": "dop_v1_wrong"}
    result = run_cli("serve", "--port", "1", env=bad, timeout=60)
    assert result.returncode != 0
    assert "refused the token" in result.stderr
    assert "dop_v1_wrong" not in result.stderr


def test_full_run_leaks_no_secret(env: dict[str, str], standin: Standin, tmp_path: Path) -> None:
    """Everything a run does, at DEBUG: the token and keys appear in no log line, and
    each key only in the one response that issued it. Neither do challenge values or key
    hashes (SQL parameters and result rows, which SQLAlchemy logs at DEBUG unless told
    not to): values appear in logs only as fingerprints."""
    keys: list[str] = []
    bodies: list[tuple[str, str]] = []  # (which response, its text)
    created = run_cli("accounts", "create", "--domain", "www.example.com", env=env)
    assert created.returncode == 0
    cli_account = json.loads(created.stdout)
    keys.append(cli_account["password"])
    with Serve(env, tmp_path / "serve.log") as served, httpx.Client(base_url=served.url) as http:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        registered = http.post("/register").json()
        keys.append(registered["password"])
        issued = http.post("/admin/accounts", json={"domain": "mail.example.com"},
                           headers=admin).json()
        keys.append(issued["password"])

        def record(label: str, response: httpx.Response) -> None:
            bodies.append((label, response.text + json.dumps(dict(response.headers))))

        for n, account in enumerate((cli_account, registered, issued)):
            headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
            body = {"subdomain": account["subdomain"], "txt": challenge_value(n)}
            record("update", http.post("/update", json=body, headers=headers))
            record("update-wrong-key", http.post(
                "/update", json=body, headers={**headers, "X-Api-Key": "k" * 40}))
            record("present", http.post(
                "/present", json={"fqdn": account["fulldomain"], "value": challenge_value(9)},
                auth=(account["username"], account["password"])))
            record("cleanup", http.post(
                "/cleanup", json={"fqdn": account["fulldomain"], "value": challenge_value(9)},
                auth=(account["username"], account["password"])))
        standin.state.update_faults(methods=["POST"], error_next=1)
        headers = {"X-Api-User": issued["username"], "X-Api-Key": issued["password"]}
        record("update-do-failing", http.post(
            "/update", json={"subdomain": issued["subdomain"], "txt": challenge_value(5)},
            headers=headers))
        record("list", http.get("/admin/accounts", headers=admin))
        record("show", http.get(f"/admin/accounts/{issued['username']}", headers=admin))
        record("revoke", http.delete(f"/admin/accounts/{registered['username']}",
                                     headers=admin))
        record("health", http.get("/health"))
        record("bad-admin", http.get("/admin/accounts", headers={"Authorization": "Bearer x"}))
    log = served.log()
    # Every line a JSON object (the default LOG_FORMAT), with the events of the run.
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    events = {line.get("event") for line in lines}
    assert {"txt.created", "txt.deleted", "http.request", "account.created"} <= events
    access = [line for line in lines if line.get("event") == "http.request"]
    assert all(line["fields"]["client"] == "127.0.0.1" and line["request_id"] for line in access)
    audit = run_cli("audit", "--limit", "1000", env=env)
    listed = run_cli("accounts", "list", "--all", "-o", "json", env=env)
    for secret in (DO_TOKEN, ADMIN_TOKEN, *keys):
        assert secret not in log
        assert secret not in audit.stdout + audit.stderr
        assert secret not in listed.stdout
        for label, text in bodies:
            assert secret not in text, label
    assert "DEBUG" in log  # the scan below means something only if DEBUG lines were written
    for n in (0, 1, 2, 5, 9):
        assert challenge_value(n) not in log, f"challenge value {n} in the log"
    for key in keys:
        digest = hash_key(key).partition("$")[2]
        assert digest not in log, "a key hash in the log"


def test_cli_rotate_set_purge_and_audit_filters(env: dict[str, str]) -> None:
    created = json.loads(run_cli("accounts", "create", "--domain", "www.example.com",
                                 "--expires", "2099-01-01T00:00:00Z", "--max-values", "3",
                                 env=env).stdout)
    username = created["username"]
    rotated = run_cli("accounts", "rotate", username, "--format", "cert-manager", env=env)
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)["www.example.com"]
    assert new["username"] == username and new["password"] != created["password"]

    changed = run_cli("accounts", "set", username, "--allow-from", "192.0.2.0/24",
                      "--note", "moved", "--expires", "never", "-o", "json", env=env)
    assert changed.returncode == 0, changed.stderr
    view = json.loads(changed.stdout)
    assert (view["allowfrom"], view["note"], view["expires_at"], view["max_values"]) == (
        ["192.0.2.0/24"], "moved", None, 3)
    assert new["password"] not in changed.stdout
    bad = run_cli("accounts", "set", username, "--expires", "tomorrow", env=env)
    assert bad.returncode != 0 and "--expires" in bad.stderr

    stale = run_cli("accounts", "list", "--stale-days", "0", "-o", "json", env=env)
    assert username in stale.stdout
    purged = run_cli("accounts", "revoke", username, "--purge", env=env)
    assert purged.returncode == 0 and "deleted" in purged.stdout
    assert run_cli("accounts", "show", username, env=env).returncode != 0

    trail = run_cli("audit", "--account", username, "--since", "1h", "-o", "json", env=env)
    events = [event["event"] for event in json.loads(trail.stdout)]
    assert events == ["account.create", "account.rotate", "account.change", "account.revoke",
                      "account.delete"]
    assert run_cli("audit", "--since", "yesterday", env=env).returncode != 0


def test_serve_migrates_and_builds_the_service_graph_once(
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider check and the app share one service graph; migrations run once."""
    from contextlib import asynccontextmanager
    from typing import Any

    from click.testing import CliRunner
    from fastapi import FastAPI

    import app.db.migrate
    import app.wiring
    from app.cli import main
    from app.server import Server

    counts = {"upgrade": 0, "build": 0, "app_used_ours": 0}
    real_upgrade, real_build = app.db.migrate.upgrade, app.wiring.build_services
    built: list[Any] = []

    def upgrade(url: str) -> None:
        counts["upgrade"] += 1
        real_upgrade(url)

    @asynccontextmanager
    async def build(*args: Any, **kwargs: Any) -> Any:
        counts["build"] += 1
        async with real_build(*args, **kwargs) as services:
            built.append(services)
            yield services

    async def fake_serve(self: Server, sockets: Any = None) -> None:
        # Run the app's lifespan as uvicorn would, without listening.
        application = self.config.app
        assert isinstance(application, FastAPI)
        async with application.router.lifespan_context(application):
            counts["app_used_ours"] += application.state.services is built[0]
        self.started = True

    monkeypatch.setattr(app.db.migrate, "upgrade", upgrade)
    monkeypatch.setattr(app.wiring, "build_services", build)
    monkeypatch.setattr(Server, "serve", fake_serve)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(main, ["serve", "--port", "0"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert counts == {"upgrade": 1, "build": 1, "app_used_ours": 1}
