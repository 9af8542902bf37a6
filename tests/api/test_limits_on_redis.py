"""The abuse limits on Redis: two replicas sharing ``LIMITS_STORAGE=redis://…`` enforce
one limit together (with memory counters each would allow the full amount)."""

from __future__ import annotations

import secrets
import socket
from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN, challenge_value
from tests.strict_ci import IN_CI

REDIS_URL = "redis://127.0.0.1:6379/0"
V1 = challenge_value(1)


def require_redis() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                return
    except OSError:
        pass
    message = ("Redis is not running on 127.0.0.1:6379 (apt-get install redis-server; "
               ".ci/run starts it)")
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def fresh_address() -> str:
    """A client address no earlier run has counted against (the counters live on)."""
    return f"2001:db8:{secrets.token_hex(2)}::{secrets.token_hex(2)}"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_two_replicas_share_one_failure_limit(harness_factory: Any) -> None:
    require_redis()
    address = fresh_address()
    shared = {"limits_storage": REDIS_URL, "auth_failures_per_minute": 4,
              "client_ip": address}
    async with harness_factory(**shared) as one, harness_factory(**shared) as two:
        account = await one.create_account(domain="www.example.com")
        wrong = {**account, "password": "w" * 40}
        # Two failures at each replica: four in all, the shared limit.
        statuses = [(await replica.update(wrong, V1)).status_code
                    for replica in (one, two, one, two)]
        assert statuses == [401] * 4
        for replica in (one, two):
            held = await replica.update(account, V1)  # the right key, held off everywhere
            assert held.status_code == 429, held.text
            assert int(held.headers["retry-after"]) >= 1
    async with harness_factory(**{**shared, "client_ip": fresh_address()}) as other:
        assert (await other.update(account, V1)).status_code == 200  # another address


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_two_replicas_share_one_registration_limit(harness_factory: Any) -> None:
    require_redis()
    shared = {"limits_storage": REDIS_URL, "registrations_per_hour": 3,
              "client_ip": fresh_address()}
    async with harness_factory(**shared) as one, harness_factory(**shared) as two:
        statuses = [(await replica.client.post("/register")).status_code
                    for replica in (one, two, one, two)]
        assert statuses == [201, 201, 201, 429]
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert (await two.client.get("/admin/accounts", headers=admin)).status_code == 200
