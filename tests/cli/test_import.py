"""Importing accounts from an acme-dns database: old keys keep working."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from app.core.importing import Importer, Outcome
from app.db.acmedns_source import read_accounts
from app.standin import Standin
from tests.conftest import DO_TOKEN, Harness, challenge_value
from tests.support.env import cli_env
from tests.support.processes import run_cli

V1 = challenge_value(1)


def acme_dns_database(path: Path, accounts: list[dict[str, Any]]) -> Path:
    """An acme-dns (v1) SQLite file, its schema as acme-dns creates it."""
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE records(Username TEXT UNIQUE NOT NULL PRIMARY KEY,
                             Password TEXT UNIQUE NOT NULL, Subdomain TEXT UNIQUE NOT NULL,
                             AllowFrom TEXT);
        CREATE TABLE txt(Subdomain TEXT NOT NULL, Value TEXT NOT NULL DEFAULT '',
                         LastUpdate INT);
    """)
    for account in accounts:
        db.execute("INSERT INTO records VALUES (?, ?, ?, ?)",
                   (account["username"], account["hash"], account["subdomain"],
                    account["allowfrom"]))
        db.execute("INSERT INTO txt VALUES (?, '', 0)", (account["subdomain"],))
    db.commit()
    db.close()
    return path


def acme_dns_account(allowfrom: str = "[]") -> dict[str, Any]:
    key = uuid.uuid4().hex[:20] + uuid.uuid4().hex[:20]  # 40 characters, as acme-dns makes
    # Go's bcrypt writes $2a$ at cost 10, as acme-dns stores it.
    hashed = bcrypt.hashpw(key.encode(), bcrypt.gensalt(10)).decode().replace("$2b$", "$2a$", 1)
    return {"username": str(uuid.uuid4()), "password": key, "hash": hashed,
            "subdomain": str(uuid.uuid4()), "allowfrom": allowfrom}


@pytest.fixture
def legacy(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    accounts = [acme_dns_account(), acme_dns_account('["127.0.0.0/8"]'),
                acme_dns_account('["192.0.2.0/24"]')]
    broken = [
        {**acme_dns_account(), "hash": "plaintext"},
        {**acme_dns_account(), "allowfrom": "not json"},
        {**acme_dns_account(), "subdomain": "bad label!"},
        {**acme_dns_account(), "username": "not-a-uuid"},
    ]
    return acme_dns_database(tmp_path / "acme-dns.db", accounts + broken), accounts


async def test_imported_accounts_update_with_their_old_keys(
    harness: Harness, legacy: tuple[Path, list[dict[str, Any]]]
) -> None:
    path, accounts = legacy
    importer = Importer(harness.services.store, harness.services.zones,
                        delegation_domain="acme.example.org", clock=harness.services.accounts.now)
    found = await read_accounts(str(path))
    dry = await importer.run(found, dry_run=True)
    assert dry.count(Outcome.WOULD_IMPORT) == 3 and dry.count(Outcome.INVALID) == 4
    assert await harness.services.store.get_account(accounts[0]["username"]) is None

    report = await importer.run(found, dry_run=False)
    assert report.count(Outcome.IMPORTED) == 3
    assert sorted(d for _, o, d in report.results if o is Outcome.INVALID) == [
        "allowfrom is not a list of CIDRs", "password is not a bcrypt hash",
        "subdomain is not a DNS label", "username is not a UUID"]
    again = await importer.run(found, dry_run=False)
    assert again.count(Outcome.EXISTS) == 3 and again.count(Outcome.IMPORTED) == 0

    first, local, remote = accounts
    client_view = {"username": first["username"], "password": first["password"],
                   "subdomain": first["subdomain"]}
    stored = await harness.services.store.get_account(first["username"])
    assert stored is not None and stored.key_hash.startswith("bcrypt$")
    assert stored.name == f"{first['subdomain']}.acme.example.org"

    wrong = await harness.update({**client_view, "password": "y" * 40}, V1)
    assert wrong.status_code == 401
    ok = await harness.update(client_view, V1)
    assert ok.status_code == 200
    assert harness.txt_at(f"{first['subdomain']}.acme.example.org") == [V1]
    # The first successful use replaced the bcrypt hash with the native one.
    stored = await harness.services.store.get_account(first["username"])
    assert stored is not None and stored.key_hash.startswith("sha256$")
    assert (await harness.update(client_view, challenge_value(2))).status_code == 200
    assert (await harness.update({**client_view, "password": "y" * 40}, V1)).status_code == 401

    # allowfrom came along: 127.0.0.0/8 admits the test client, 192.0.2.0/24 does not.
    for account, status in ((local, 200), (remote, 401)):
        view = {k: account[k] for k in ("username", "password", "subdomain")}
        assert (await harness.update(view, V1)).status_code == status


@pytest.fixture
def standin() -> Iterator[Standin]:
    with Standin(token=DO_TOKEN, zones=["example.org"]) as running:
        yield running


def test_import_command(standin: Standin, database_url: str,
                        legacy: tuple[Path, list[dict[str, Any]]]) -> None:
    path, accounts = legacy
    env = cli_env(database_url=database_url, do_token=DO_TOKEN, do_api_url=standin.api_url,
                  delegation_domain="acme.example.org")
    dry = run_cli("import-acme-dns", str(path), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "dry run, nothing written: 7 acme-dns accounts: 3 would import, 4 invalid" in dry.stderr
    done = run_cli("import-acme-dns", str(path), env=env)
    assert "7 acme-dns accounts: 3 imported, 4 invalid" in done.stderr
    again = run_cli("import-acme-dns", str(path), env=env)
    assert "3 already here, 4 invalid" in again.stderr
    listed = json.loads(run_cli("accounts", "list", "-o", "json", env=env).stdout)
    assert sorted(a["username"] for a in listed) == sorted(a["username"] for a in accounts)
    for account in accounts:
        assert account["password"] not in dry.stdout + done.stdout + again.stdout
        assert account["hash"] not in dry.stdout + done.stdout + again.stdout
    missing = run_cli("import-acme-dns", str(path.with_name("nope.db")), env=env)
    assert missing.returncode != 0 and "no such file" in missing.stderr
    no_delegation = run_cli("import-acme-dns", str(path),
                            env={**env, "ACME_DELEGATE_DELEGATION_DOMAIN": ""})
    assert no_delegation.returncode != 0 and "DELEGATION_DOMAIN" in no_delegation.stderr
