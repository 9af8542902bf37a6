"""Abuse limits: failed authentications per address, requests per credential,
registrations per address and in total. Each answer is a clear JSON error."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from app.core.models import AuditQuery
from app.db.tables import AuditRow
from tests.conftest import ADMIN_TOKEN, challenge_value

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

V1 = challenge_value(1)


async def test_an_address_that_keeps_failing_is_held_off(harness_factory: Any) -> None:
    async with harness_factory(auth_failures_per_minute=5, client_ip="198.51.100.9") as h:
        account = await h.create_account(domain="www.example.com")
        wrong = {**account, "password": "w" * 40}
        statuses = [(await h.update(wrong, V1)).status_code for _ in range(5)]
        assert statuses == [401] * 5
        held = await h.update(account, V1)  # the right key, but too late
        assert held.status_code == 429
        assert held.json() == {"error": "too_many_requests"}
        assert 1 <= int(held.headers["retry-after"]) <= 60
        assert h.txt_at(account["fulldomain"]) == []
        audit_rows = await h.services.accounts.audit_trail(AuditQuery(event="auth.failed"))
        # One row counts the five refusals; the held-off attempt cost the database nothing.
        assert [(r.outcome, r.count) for r in audit_rows] == [("forbidden", 5)]
    async with harness_factory(auth_failures_per_minute=5, client_ip="192.0.2.1") as other:
        # Another address (and here another process) is not affected.
        assert (await other.update(account, V1)).status_code == 200


async def test_wrong_names_count_as_failures(harness_factory: Any) -> None:
    async with harness_factory(auth_failures_per_minute=3) as h:
        account = await h.create_account(domain="www.example.com")
        for _ in range(3):
            response = await h.client.post(
                "/present", json={"fqdn": "_acme-challenge.evil.example.com.", "value": V1},
                auth=(account["username"], account["password"]))
            assert response.status_code == 401
        assert (await h.update(account, V1)).status_code == 429


async def test_requests_per_credential_are_limited(harness_factory: Any) -> None:
    async with harness_factory(updates_per_minute=3) as h:
        account = await h.create_account(domain="www.example.com")
        other = await h.create_account(domain="mail.example.com")
        statuses = [(await h.update(account, challenge_value(n))).status_code
                    for n in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert (await h.update(other, V1)).status_code == 200
        trail = await h.client.get("/admin/audit?event=update&limit=10",
                                   headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert [e["outcome"] for e in trail.json()][:2] == ["ok", "too_many_requests"]


async def test_registrations_per_address_are_limited(harness_factory: Any) -> None:
    async with harness_factory(registrations_per_hour=2) as h:
        assert [(await h.client.post("/register")).status_code for _ in range(3)] == [
            201, 201, 429]
        third = await h.client.post("/register")
        assert third.json() == {"error": "too_many_requests"}
        assert int(third.headers["retry-after"]) > 60  # an hourly window


async def test_registration_has_a_total_cap(harness_factory: Any) -> None:
    async with harness_factory(registration_max_accounts=2) as h:
        assert [(await h.client.post("/register")).status_code for _ in range(3)] == [
            201, 201, 403]
        # Operators can still issue credentials.
        await h.create_account(domain="www.example.com")


@pytest.mark.parametrize(("mode", "headers"), [
    ("closed", {}),
    ("token", {"Authorization": "Bearer wrong"}),
    ("token", {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
], ids=["closed", "wrong-token", "admin-token"])
async def test_a_refused_registration_flood_cannot_grow_the_audit_trail(
        harness_factory: Any, mode: str, headers: dict[str, str]) -> None:
    """3,000 refused /register calls from one address: the throttle comes before any
    database write (the first ``registrations_per_hour`` are refused and counted on one
    audit row, the rest are 429s that write nothing), and the operator's real events stay
    at the top of the newest-first trail."""
    allowance = 20
    async with harness_factory(registration=mode, registrations_per_hour=allowance,
                               client_ip="203.0.113.77") as h:
        await h.create_account(domain="www.example.com")  # a real event, before the flood
        statuses: Counter[int] = Counter()
        for _ in range(3000):
            statuses[(await h.client.post("/register", headers=headers)).status_code] += 1
        assert statuses == {403: allowance, 429: 3000 - allowance}, statuses
        async with h.services.engine.connect() as conn:
            rows = (await conn.execute(select(AuditRow.event, AuditRow.outcome, AuditRow.count)
                                       .order_by(AuditRow.id))).all()
        assert [tuple(r) for r in rows] == [("account.create", "ok", 1),
                                            ("register", "registration_closed", allowance)]
        trail = await h.client.get("/admin/audit?limit=2", headers=ADMIN)
        assert [(e["event"], e["count"]) for e in trail.json()] == [
            ("register", allowance), ("account.create", 1)]
        assert trail.json()[0]["client"] == "203.0.113.77"
        assert trail.json()[0]["last_at"] is not None
