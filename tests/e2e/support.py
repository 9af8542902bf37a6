"""Helpers of the end-to-end tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.standin import Record, Standin
from tests.support.processes import Serve, run_cli

#: Seconds the stand-in's DNS lags its API in every flow (conftest's ``service``): every
#: client issues through real propagation timing.
PROPAGATION_DELAY = 3.0


def record_key(record: Record) -> tuple[Any, ...]:
    return (record.id, record.zone, record.type, record.name, record.data, record.ttl)


def assert_only_txt_changed(before: Iterable[Record], after: Iterable[Record],
                            bound_names: Iterable[str]) -> None:
    """Between two ``all_records()`` snapshots nothing changed but TXT records at
    ``bound_names``, and no TXT record exists anywhere but at ``bound_names``."""
    names = {n.rstrip(".").lower() for n in bound_names}
    old = {record_key(r): r for r in before}
    new = {record_key(r): r for r in after}
    changed = [old[k] for k in old.keys() - new.keys()] + [new[k] for k in new.keys() - old.keys()]
    stray = [r for r in changed if r.type != "TXT" or r.fqdn not in names]
    assert not stray, f"records changed outside the bound names {sorted(names)}: {stray}"
    elsewhere = [r for r in new.values() if r.type == "TXT" and r.fqdn not in names]
    assert not elsewhere, f"TXT records outside the bound names {sorted(names)}: {elsewhere}"


@dataclass
class Service:
    """One ``acme-delegate serve`` process and everything around it."""

    url: str
    env: dict[str, str]
    standin: Standin
    database: Path
    served: Serve

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=self.env)

    def create_account(self, domain: str, *, fmt: str = "acme-dns", delegated: bool = False,
                       server_url: str | None = None) -> dict[str, Any]:
        args = ["accounts", "create", "--domain", domain, "--format", fmt]
        if delegated:
            args.append("--delegated")
        if server_url:
            args += ["--server-url", server_url]
        result = self.cli(*args)
        assert result.returncode == 0, result.stderr
        created: dict[str, Any] = json.loads(result.stdout)
        return created

    def accounts(self) -> list[dict[str, Any]]:
        result = self.cli("accounts", "list", "--all", "-o", "json")
        assert result.returncode == 0, result.stderr
        listed: list[dict[str, Any]] = json.loads(result.stdout)
        return listed

    def audit(self) -> list[dict[str, Any]]:
        result = self.cli("audit", "--limit", "1000", "-o", "json")
        assert result.returncode == 0, result.stderr
        events: list[dict[str, Any]] = json.loads(result.stdout)
        return events

    def records(self) -> list[Record]:
        return self.standin.state.all_records()

    def txt_at(self, fqdn: str) -> list[str]:
        return sorted(r.data for r in self.standin.state.find_records(fqdn, "TXT"))

    def all_txt(self) -> list[Record]:
        return [r for r in self.records() if r.type == "TXT"]

    def value_rows(self) -> list[tuple[str, str, str]]:
        """(name, value, state) of every row of the service's ``txt_values`` table."""
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT name, value, state FROM txt_values ORDER BY id").fetchall()
        conn.close()
        return [(str(n), str(v), str(s)) for n, v, s in rows]

    def cleaned_up(self, timeout: float = 40) -> None:
        """Wait for what a cleanup leaves to housekeeping: every value it retired (no longer
        wanted, its record still in place) deleted from DigitalOcean and forgotten."""
        rows = self.value_rows()
        assert all(state == "retired" for _, _, state in rows), rows
        deadline = time.monotonic() + timeout
        while rows and time.monotonic() < deadline:
            time.sleep(0.5)
            rows = self.value_rows()
        assert rows == [], f"housekeeping left {rows} after {timeout} s"

    def do_writes(self) -> list[str]:
        """Every write the service sent to the DigitalOcean stand-in, as 'METHOD path'."""
        return [f"{e.method} {e.path}" for e in self.standin.state.requests()
                if e.method not in ("GET", "HEAD")]

    def log(self) -> str:
        return self.served.log()


def customer_cname(standin: Standin, zone: str, name: str, target: str) -> None:
    """The customer's CNAME to the delegated name, made long ago: already served by DNS
    (the propagation delay is for the records the service writes)."""
    delay = standin.state.propagation_delay
    standin.state.set_propagation_delay(0)
    standin.state.add_record(zone, "CNAME", name, target)
    standin.state.set_propagation_delay(delay)


def write_private_json(path: Path, data: object) -> Path:
    """Write ``data`` as JSON with mode 600 (credentials files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    return path
