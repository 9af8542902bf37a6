"""A real SIGKILL on the in-place path (issue 17): a full name's new value is written down,
its PUT (the overwrite of the oldest record) is on its way to DigitalOcean, and the
process dies. The PUT then either lands (the answer is lost with the process) or never
does. A new process and one reconcile pass must leave the name as the clients saw it:
every row live, DigitalOcean holding exactly the database's values, at most
MAX_VALUES_PER_NAME of them, the last value a client was told about among them, nothing
else touched. The in-process crash points (tests/api/test_rotation.py) stop the code at
each step; this is the same moment with a real process and a real kill.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.core.models import ValueState
from app.standin import Faults, Standin
from tests.conftest import ADMIN_TOKEN, DO_TOKEN, challenge_value
from tests.reliability.support import database_state
from tests.support.env import cli_env
from tests.support.processes import Serve, run_cli

NAME = "_acme-challenge.www.example.com"
PUT_DELAY_S = 4.0  # long enough to be killed in; the stand-in sleeps before it applies


@pytest.fixture
def standin() -> Iterator[Standin]:
    with Standin(token=DO_TOKEN, zones=["example.com"]) as running:
        # Not ours, next to ours: must never change.
        running.state.add_record("example.com", "TXT", "_acme-challenge", "not-ours")
        running.state.add_record("example.com", "A", "www", "192.0.2.10")
        yield running


def records(standin: Standin) -> set[tuple[int, str]]:
    return {(r.id, r.data) for r in standin.state.find_records(NAME, "TXT")}


def record_writes(standin: Standin) -> list[str]:
    return [e.method for e in standin.state.requests() if e.method in ("POST", "PUT", "DELETE")]


@pytest.mark.parametrize("put", ["lands", "never-lands"])
def test_killed_while_the_overwrite_is_in_flight(
    standin: Standin, database_url: str, tmp_path: Path, put: str
) -> None:
    env = cli_env(database_url=database_url, do_token=DO_TOKEN, do_api_url=standin.api_url,
                  admin_token=ADMIN_TOKEN, wait_for_dns="0", reconcile_interval="3600",
                  log_level="WARNING")
    v1, v2, v3, v4 = (challenge_value(n) for n in range(4))
    foreign = {(r.zone, r.type, r.name, r.data) for r in standin.state.all_records()}

    first = Serve(env, tmp_path / "first.log")
    try:
        with httpx.Client(base_url=first.url, timeout=30) as http:
            account = http.post("/admin/accounts", json={"domain": "www.example.com"},
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
            auth = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
            for value in (v1, v2):
                assert http.post("/update", headers=auth, json={
                    "subdomain": account["subdomain"], "txt": value}).status_code == 200
        full = records(standin)
        assert {data for _, data in full} == {v1, v2}

        # The next value overwrites v1's record in place; its PUT waits in the stand-in.
        standin.state.set_faults(Faults(methods=["PUT"], latency_ms=PUT_DELAY_S * 1000))
        outcome: list[object] = []

        def third() -> None:
            try:
                with httpx.Client(base_url=first.url, timeout=30) as http:
                    outcome.append(http.post("/update", headers=auth, json={
                        "subdomain": account["subdomain"], "txt": v3}).status_code)
            except httpx.HTTPError as exc:
                outcome.append(type(exc).__name__)

        client = threading.Thread(target=third)
        client.start()
        written_down = time.monotonic() + 20
        while v3 not in {v for _, v, _ in asyncio.run(database_state(database_url, [NAME]))[
                NAME]}:
            assert time.monotonic() < written_down, "the new value was never written down"
            time.sleep(0.02)
        assert records(standin) == full  # written down, not yet at DigitalOcean
        sent = time.monotonic() + 20
        while not standin.state.stalled():  # the PUT has arrived and sleeps
            assert time.monotonic() < sent, "the overwrite was never sent"
            time.sleep(0.02)
        first.process.kill()
        assert first.process.wait(5) == -9
    finally:
        first.stop()
    client.join(30)
    assert outcome and not isinstance(outcome[0], int), outcome  # the client got no answer

    # The PUT the dead process sent is still sleeping in the stand-in: let it land, or
    # fail it (a 500 changes nothing), then wait until it has had its turn.
    standin.state.set_faults(Faults(methods=["PUT"], error_next=1 if put == "never-lands"
                                    else 0))
    deadline = time.monotonic() + PUT_DELAY_S + 10
    while not any(e.method == "PUT" for e in standin.state.requests()):
        assert time.monotonic() < deadline, "the stalled PUT was never answered"
        time.sleep(0.05)
    standin.state.set_faults(Faults())
    landed = {data for _, data in records(standin)}
    assert landed == ({v2, v3} if put == "lands" else {v1, v2})

    # One reconcile pass (a process of its own: SQLite takes one process at a time).
    result = run_cli("reconcile", env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = asyncio.run(database_state(database_url, [NAME]))[NAME]
    assert all(state is ValueState.LIVE for _, _, state in rows), rows
    assert records(standin) == {(rid, value) for rid, value, _ in rows}  # no orphan, no gap
    live = {value for _, value, _ in rows}
    assert len(live) <= 2 and v2 in live  # the last value a client was told about
    assert live == landed  # what DigitalOcean serves is what the database says

    # A new process serves the name on: the next value is one call, and the window holds.
    with Serve(env, tmp_path / "second.log") as second, \
            httpx.Client(base_url=second.url, timeout=30) as http:
        writes = len(record_writes(standin))
        assert http.post("/update", headers=auth, json={
            "subdomain": account["subdomain"], "txt": v4}).status_code == 200
        assert record_writes(standin)[writes:] == ["PUT"]
    assert v4 in {data for _, data in records(standin)} and len(records(standin)) == 2
    again = run_cli("reconcile", env=env, timeout=120)
    assert json.loads(again.stdout)["repairs"] == 0, again.stdout
    after = {(r.zone, r.type, r.name, r.data) for r in standin.state.all_records()}
    assert {r for r in after if r[2] != "_acme-challenge.www"} == \
        {r for r in foreign if r[2] != "_acme-challenge.www"}
