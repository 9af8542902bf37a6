"""The operator's CLI: remote mode through the admin API (the same output as local),
one output option everywhere, kubectl-ready secrets, merging into existing files,
durations, binding checks, and read commands that never migrate."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
import yaml

from app.cli.common import parse_duration, parse_expiry, parse_since
from app.standin import Standin
from tests.conftest import ADMIN_TOKEN, DO_TOKEN, challenge_value
from tests.support.env import cli_env
from tests.support.processes import Serve


@pytest.fixture
def standin() -> Iterator[Standin]:
    with Standin(token=DO_TOKEN, zones=["example.com", "example.org", "customer.net"]
                 ) as running:
        yield running


@pytest.fixture
def env(standin: Standin, database_url: str) -> dict[str, str]:
    return cli_env(database_url=database_url, do_token=DO_TOKEN, do_api_url=standin.api_url,
                   delegation_domain="acme.example.org", admin_token=ADMIN_TOKEN,
                   public_url="https://acme.example.net")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI in this process (a subprocess per call costs seconds of imports): the same
    command line, environment, output streams and exit status."""
    from click.testing import CliRunner

    from app.cli import main

    clean = {k: None for k in os.environ if k.startswith("ACME_DELEGATE_")}
    settings = {k: v for k, v in env.items() if k.startswith("ACME_DELEGATE_")}
    result = CliRunner().invoke(main, list(args), env={**clean, **settings})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout,
                                       result.stderr)


def ok(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = run_cli(*args, env=env)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def remote_env(url: str, **extra: str) -> dict[str, str]:
    """No database, no DigitalOcean: only the server's URL and the admin token."""
    return cli_env(server=url, admin_token=ADMIN_TOKEN, **extra)


# --- remote mode ---------------------------------------------------------------------


def test_remote_cli_prints_what_local_prints(env: dict[str, str], tmp_path: Path) -> None:
    web = json.loads(ok("accounts", "create", "--domain", "www.example.com", "--note", "web",
                        env=env).stdout)
    ok("accounts", "create", "--domain", "www.customer.net", "--delegated", env=env)
    with Serve(env, tmp_path / "serve.log") as served:
        remote = remote_env(served.url)
        for args in (["accounts", "list"], ["accounts", "show", web["username"]],
                     ["audit", "--event", "account.create"]):
            for output in ("json", "yaml", "table"):
                local = ok(*args, "-o", output, env=env).stdout
                assert ok(*args, "-o", output, env=remote).stdout == local, (args, output)
        # Writes too, and the token from a file.
        token_file = tmp_path / "admin-token"
        token_file.write_text(ADMIN_TOKEN + "\n")
        by_file = cli_env(server=served.url)
        created = json.loads(ok("--token-file", str(token_file), "accounts", "create",
                                "--domain", "mail.example.com", "--expires", "12h",
                                env=by_file).stdout)
        assert len(created["password"]) == 40
        changed = json.loads(ok("accounts", "set", created["username"], "--note", "mail",
                                "-o", "json", env=remote).stdout)
        assert changed["note"] == "mail"
        rotated = json.loads(ok("accounts", "rotate", created["username"], "--format",
                                "cert-manager", env=remote).stdout)["mail.example.com"]
        assert rotated["password"] != created["password"]
        revoked = json.loads(ok("accounts", "revoke", created["username"], "-o", "json",
                                env=remote).stdout)
        assert revoked["revoked_at"] and revoked["removed_values"] == 0
        # The key never in the listings, remote or not.
        listed = ok("accounts", "list", "--all", "-o", "json", env=remote).stdout
        assert rotated["password"] not in listed and web["password"] not in listed

        wrong = run_cli("accounts", "list", env=cli_env(server=served.url,
                                                        admin_token="x" * 40))
        assert wrong.returncode != 0 and "admin token" in wrong.stderr
        assert "Traceback" not in wrong.stderr
        missing = run_cli("accounts", "list", env=cli_env(server=served.url))
        assert missing.returncode != 0 and "--token-file" in missing.stderr
        unknown = run_cli("accounts", "show", "00000000-0000-4000-8000-000000000000",
                          env=remote)
        assert unknown.returncode != 0 and "account_not_found" in unknown.stderr
    refused = run_cli("--server", "http://127.0.0.1:1", "serve", env=env)
    assert refused.returncode != 0 and "--server is for accounts" in refused.stderr


def test_read_commands_never_migrate(tmp_path: Path, standin: Standin) -> None:
    database = tmp_path / "fresh.sqlite3"
    env = cli_env(database_url=f"sqlite:///{database}", do_token=DO_TOKEN,
                  do_api_url=standin.api_url)
    for args in (["accounts", "list"], ["audit"],
                 ["accounts", "show", "00000000-0000-4000-8000-000000000000"]):
        result = run_cli(*args, env=env)
        assert result.returncode != 0 and "acme-delegate migrate" in result.stderr, args
    import sqlite3

    with sqlite3.connect(database) as db:
        tables = db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    assert tables == []  # nothing created, not even alembic_version
    ok("migrate", env=env)
    assert ok("accounts", "list", "-o", "json", env=env).stdout.strip() == "[]"


# --- output formats --------------------------------------------------------------------


def test_every_printing_command_speaks_json_yaml_and_table(env: dict[str, str]) -> None:
    created = json.loads(ok("accounts", "create", "--domain", "www.example.com", env=env)
                         .stdout)
    username = created["username"]
    commands = [["accounts", "list"], ["accounts", "list", "--all"],
                ["accounts", "show", username], ["audit"],
                ["accounts", "set", username, "--note", "n"]]
    for args in commands:
        as_json = json.loads(ok(*args, "-o", "json", env=env).stdout)  # one document
        as_yaml = yaml.safe_load(ok(*args, "-o", "yaml", env=env).stdout)
        assert as_yaml == as_json, args
        lines = ok(*args, "-o", "table", env=env).stdout.splitlines()
        header = lines[0].split()
        assert header == [h for h in header if h.isupper()] and header, (args, lines[0])
        rows = as_json if isinstance(as_json, list) else list(as_json)
        assert len(lines) == 1 + len(rows), args
    listing = ok("accounts", "list", env=env).stdout.splitlines()
    assert listing[0].split() == ["USERNAME", "STATE", "MODE", "FULLDOMAIN", "DOMAIN",
                                  "LAST_USED_AT"]
    assert listing[1].split()[:3] == [username, "active", "direct"]
    rotated = ok("accounts", "rotate", username, "-o", "yaml", env=env).stdout
    assert yaml.safe_load(rotated)["username"] == username
    revoked = json.loads(ok("accounts", "revoke", username, "-o", "json", env=env).stdout)
    assert revoked["username"] == username and revoked["revoked_at"]
    assert "FIELD" in ok("accounts", "revoke", username, "--purge", env=env).stdout


# --- secrets for Kubernetes, env, merging ---------------------------------------------

DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
SECRET_DATA_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def assert_valid_secret(manifest: dict[str, Any]) -> None:
    """Kubernetes' validation of a v1 Secret (ValidateSecret), for what we emit."""
    assert set(manifest) <= {"apiVersion", "kind", "metadata", "type", "data", "stringData",
                             "immutable"}
    assert (manifest["apiVersion"], manifest["kind"]) == ("v1", "Secret")
    meta = manifest["metadata"]
    assert set(meta) <= {"name", "namespace", "labels", "annotations"}
    assert len(meta["name"]) <= 253 and DNS1123_SUBDOMAIN.fullmatch(meta["name"])
    if "namespace" in meta:
        assert len(meta["namespace"]) <= 63 and DNS1123_LABEL.fullmatch(meta["namespace"])
    assert manifest.get("type", "Opaque") == "Opaque"
    data = manifest.get("stringData", {})
    assert data and all(isinstance(v, str) for v in data.values())
    assert all(SECRET_DATA_KEY.fullmatch(k) and len(k) <= 253 for k in data)


def kubectl_parses(manifest_path: Path, tmp_path: Path) -> dict[str, Any]:
    """kubectl's own decoding (client-side dry run against the fake API server)."""
    from tests.deploy.fake_kube import fake_kube

    with fake_kube(tmp_path) as kube:
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(kube.kubeconfig), "create", "--dry-run=client",
             "-o", "json", "-f", str(manifest_path)],
            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_k8s_secret_manifest(env: dict[str, str], tmp_path: Path) -> None:
    out = ok("accounts", "create", "--domain", "www.example.com", "--format", "k8s-secret",
             "--secret-name", "acme-delegate-www", "--namespace", "cert-manager", "-o", "yaml",
             env=env).stdout
    manifest = yaml.safe_load(out)
    assert_valid_secret(manifest)
    assert manifest["metadata"] == {"name": "acme-delegate-www", "namespace": "cert-manager"}
    accounts = json.loads(manifest["stringData"]["acmedns.json"])
    assert set(accounts) == {"www.example.com"}
    assert set(accounts["www.example.com"]) == {"username", "password", "fulldomain",
                                                "subdomain", "allowfrom"}
    path = tmp_path / "secret.yaml"
    path.write_text(out)
    assert kubectl_parses(path, tmp_path)["stringData"] == manifest["stringData"]
    # JSON is a manifest kubectl takes as well.
    as_json = json.loads(ok("accounts", "create", "--domain", "mail.example.com", "--format",
                            "k8s-secret", env=env).stdout)
    assert_valid_secret(as_json)
    assert as_json["metadata"] == {"name": "acme-dns"}


def test_env_format_for_acme_sh_and_httpreq(env: dict[str, str]) -> None:
    out = ok("accounts", "create", "--domain", "www.example.com", "--format", "env",
             env=env).stdout
    variables = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())
    assert variables["ACMEDNS_BASE_URL"] == "https://acme.example.net"
    assert variables["HTTPREQ_ENDPOINT"] == "https://acme.example.net"
    assert variables["ACMEDNS_USERNAME"] == variables["HTTPREQ_USERNAME"]
    assert len(variables["ACMEDNS_PASSWORD"]) == 40
    as_json = json.loads(ok("accounts", "create", "--domain", "mail.example.com", "--format",
                            "env", "-o", "json", env=env).stdout)
    assert set(as_json) == set(variables)
    no_url = {k: v for k, v in env.items() if k != "ACME_DELEGATE_PUBLIC_URL"}
    result = run_cli("accounts", "create", "--domain", "x.example.com", "--format", "env",
                     env=no_url)
    assert result.returncode != 0 and "--server-url" in result.stderr


def test_merge_into_keeps_the_other_domains(env: dict[str, str], tmp_path: Path) -> None:
    existing = {d: {"username": f"u-{d}", "password": "p" * 40, "fulldomain": f"x.{d}",
                    "subdomain": "s", "allowfrom": []} for d in ("a.example.net",
                                                                  "b.example.net")}
    plain = tmp_path / "acmedns.json"
    plain.write_text(json.dumps(existing))
    result = ok("accounts", "create", "--domain", "www.example.com", "--merge-into",
                str(plain), env=env)
    assert result.stdout == ""  # the key went into the file only
    assert "added www.example.com" in result.stderr
    merged = json.loads(plain.read_text())
    assert set(merged) == {"a.example.net", "b.example.net", "www.example.com"}
    assert merged["a.example.net"] == existing["a.example.net"]
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600
    # Rotating into the same file replaces that domain's entry only.
    username = merged["www.example.com"]["username"]
    rotated = ok("accounts", "rotate", username, "--merge-into", str(plain), env=env)
    assert "replaced www.example.com" in rotated.stderr
    again = json.loads(plain.read_text())
    assert again["www.example.com"]["password"] != merged["www.example.com"]["password"]
    assert {k: v for k, v in again.items() if k != "www.example.com"} == existing

    # A Secret manifest, YAML, with its accounts under data (base64) as kubectl writes it.
    import base64

    secret = tmp_path / "secret.yaml"
    secret.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "acme-dns", "namespace": "cert-manager"},
        "data": {"acmedns.json": base64.b64encode(json.dumps(existing).encode()).decode(),
                 "other": base64.b64encode(b"keep me").decode()}}))
    ok("accounts", "create", "--domain", "mail.example.com", "--merge-into", str(secret),
       env=env)
    manifest = yaml.safe_load(secret.read_text())
    assert_valid_secret({**manifest, "data": None} if False else
                        {k: v for k, v in manifest.items() if k != "data"})
    assert manifest["data"] == {"other": base64.b64encode(b"keep me").decode()}
    accounts = json.loads(manifest["stringData"]["acmedns.json"])
    assert set(accounts) == {"a.example.net", "b.example.net", "mail.example.com"}
    assert kubectl_parses(secret, tmp_path)["metadata"]["namespace"] == "cert-manager"


# --- durations -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("90d", timedelta(days=90)), ("12h", timedelta(hours=12)), ("30m", timedelta(minutes=30)),
    ("45s", timedelta(seconds=45)), ("2w", timedelta(weeks=2)), ("12H", timedelta(hours=12)),
    ("0d", timedelta(0)), ("d", None), ("12", None), ("1.5h", None), ("-3d", None),
    ("12x", None), ("٣d", None), ("36501d", None), ("", None),
])
def test_duration_parsing(text: str, expected: timedelta | None) -> None:
    assert parse_duration(text) == expected


def test_expires_takes_durations_and_iso_times() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry("90d", now) == datetime(2026, 4, 1, tzinfo=UTC)
    assert parse_expiry("12h", now) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert parse_expiry("2027-01-31T00:00:00Z", now) == datetime(2027, 1, 31, tzinfo=UTC)
    assert parse_expiry("2027-01-31T02:00:00+02:00", now) == datetime(2027, 1, 31, tzinfo=UTC)
    for bad in ("0d", "tomorrow", "2027-01-31T00:00:00", "1.5h",
                # instants with no UTC spelling in years 1 to 9999
                "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"):
        with pytest.raises(click.BadParameter):
            parse_expiry(bad, now)


def test_since_takes_durations_and_iso_times() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_since("12h", now) == datetime(2025, 12, 31, 12, tzinfo=UTC)
    assert parse_since("2025-12-01T00:00:00", now) == datetime(2025, 12, 1, tzinfo=UTC)
    assert parse_since("2025-12-01T01:00:00+01:00", now) == datetime(2025, 12, 1, tzinfo=UTC)
    for bad in ("yesterday", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"):
        with pytest.raises(click.BadParameter):
            parse_since(bad, now)


def test_cli_expires_in_90_days(env: dict[str, str]) -> None:
    before = datetime.now(UTC)
    created = json.loads(ok("accounts", "create", "--domain", "www.example.com", "--expires",
                            "90d", env=env).stdout)
    shown = json.loads(ok("accounts", "show", created["username"], "-o", "json", env=env)
                       .stdout)
    expires = datetime.fromisoformat(shown["expires_at"])
    assert before + timedelta(days=90) <= expires <= datetime.now(UTC) + timedelta(days=90)
    changed = json.loads(ok("accounts", "set", created["username"], "--expires", "12h",
                            "-o", "json", env=env).stdout)
    assert datetime.fromisoformat(changed["expires_at"]) < expires


# --- accounts check ----------------------------------------------------------------------


def findings(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {f["check"]: f for f in json.loads(result.stdout)["findings"]}


def test_accounts_check_on_the_standin(env: dict[str, str], standin: Standin,
                                       tmp_path: Path, request: pytest.FixtureRequest
                                       ) -> None:
    """CNAME missing, wrong and right; the live value served or not; both modes."""
    ns = standin.dns_hostport
    created = ok("accounts", "create", "--domain", "www.customer.net", "--delegated",
                 env=env)
    account = json.loads(created.stdout)
    user = account["username"]
    do = httpx.Client(base_url=standin.api_url,
                      headers={"Authorization": f"Bearer {DO_TOKEN}"})
    request.addfinalizer(do.close)

    missing = run_cli("accounts", "check", user, "--nameserver", ns, "-o", "json", env=env)
    assert missing.returncode == 1, missing.stderr
    found = findings(missing)
    assert found["zone_delegated"]["ok"] and found["account"]["ok"]
    assert not found["cname"]["ok"] and "has no CNAME" in found["cname"]["detail"]
    assert found["cname"]["fix"].endswith(
        f"_acme-challenge.www.customer.net. CNAME {account['fulldomain']}.")

    record = do.post("/v2/domains/customer.net/records", json={
        "type": "CNAME", "name": "_acme-challenge.www", "data": "elsewhere.example.org.",
        "ttl": 60}).json()["domain_record"]
    wrong = run_cli("accounts", "check", user, "--nameserver", ns, "-o", "json", env=env)
    assert wrong.returncode == 1
    assert "points at elsewhere.example.org" in findings(wrong)["cname"]["detail"]

    do.delete(f"/v2/domains/customer.net/records/{record['id']}").raise_for_status()
    do.post("/v2/domains/customer.net/records", json={
        "type": "CNAME", "name": "_acme-challenge.www", "data": account["fulldomain"] + ".",
        "ttl": 60}).raise_for_status()
    right = run_cli("accounts", "check", user, "--nameserver", ns, env=env)
    assert right.returncode == 0, right.stdout + right.stderr
    assert right.stdout.splitlines()[0].split() == ["CHECK", "OK", "DETAIL", "FIX"]

    with Serve(env, tmp_path / "serve.log") as served:
        http = httpx.Client(base_url=served.url)
        request.addfinalizer(http.close)
        put = http.post("/update", json={"subdomain": account["subdomain"],
                                         "txt": challenge_value(1)},
                        headers={"X-Api-User": user, "X-Api-Key": account["password"]})
        assert put.status_code == 200, put.text
        remote = remote_env(served.url)
        served_ok = run_cli("accounts", "check", user, "--nameserver", ns, "-o", "json",
                            env=remote)
        assert served_ok.returncode == 0, served_ok.stdout + served_ok.stderr
        assert "1 live value(s) served" in findings(served_ok)["values_served"]["detail"]
        local = run_cli("accounts", "check", user, "--nameserver", ns, "-o", "json", env=env)
        assert local.stdout == served_ok.stdout

        # The record vanishes from DigitalOcean behind the service's back: not served.
        name = account["fulldomain"].removesuffix(".example.org")
        records = do.get("/v2/domains/example.org/records",
                         params={"type": "TXT", "name": account["fulldomain"]}).json()
        for txt in records["domain_records"]:
            assert txt["name"] == name
            do.delete(f"/v2/domains/example.org/records/{txt['id']}").raise_for_status()
        gone = run_cli("accounts", "check", user, "--nameserver", ns, "-o", "json",
                       env=remote)
        assert gone.returncode == 1
        value = findings(gone)["values_served"]
        assert not value["ok"] and "not served by" in value["detail"]
        assert "reconcile" in value["fix"]
        answer = http.get(f"/admin/accounts/{user}/check", params={"nameserver": ns},
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert answer.status_code == 200 and answer.json()["ok"] is False
        bad = http.get(f"/admin/accounts/{user}/check", params={"nameserver": "a b"},
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert bad.status_code == 400


def test_accounts_check_a_zone_not_on_digitalocean(database_url: str) -> None:
    from app.standin.state import StandinState

    state = StandinState(nameservers=("ns1.elsewhere.test", "ns2.elsewhere.test"))
    with Standin(token=DO_TOKEN, zones=["example.com"], state=state) as standin:
        env = cli_env(database_url=database_url, do_token=DO_TOKEN,
                      do_api_url=standin.api_url)
        user = json.loads(ok("accounts", "create", "--domain", "www.example.com", env=env)
                          .stdout)["username"]
        result = run_cli("accounts", "check", user, "--nameserver", standin.dns_hostport,
                         "-o", "json", env=env)
    assert result.returncode == 1
    zone = findings(result)["zone_delegated"]
    assert not zone["ok"] and "ns1.elsewhere.test" in zone["detail"]
    assert "ns1.digitalocean.com" in zone["fix"]
    assert "cname" not in findings(result)  # a direct name needs none
