"""The console's server side, in process: where it is served, its headers, and the admin
API additions it reads (health, search and expiring filters)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.api.console import CSP
from app.observability import REPAIR_KINDS
from tests.conftest import ADMIN_TOKEN, Harness, challenge_value

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_console_is_served_with_a_strict_policy(harness: Harness) -> None:
    for path in ("/console/", "/console"):
        page = await harness.client.get(path)
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["x-frame-options"] == "DENY"
        assert "set-cookie" not in page.headers
        assert '<script type="module" src="/console/assets/app.js">' in page.text
        assert "<style" not in page.text and " style=" not in page.text
        assert "<script>" not in page.text  # no inline script: only src= scripts
    for asset, kind in (("app.js", "javascript"), ("console.css", "text/css"),
                        ("icon.svg", "image/svg+xml")):
        answer = await harness.client.get(f"/console/assets/{asset}")
        assert answer.status_code == 200, asset
        assert kind in answer.headers["content-type"]
        assert answer.headers["content-security-policy"] == CSP
    missing = await harness.client.get("/console/assets/nope.js")
    assert missing.status_code == 404
    assert missing.headers["content-security-policy"] == CSP
    # Each answer is counted under its route, not as "unmatched".
    metrics = harness.metrics.render().decode()
    assert 'route="/console/assets/{name}",status="200"' in metrics
    assert 'route="unmatched"' not in metrics


def test_policy_allows_nothing_from_elsewhere_and_nothing_inline() -> None:
    directives = dict(part.strip().split(" ", 1) for part in CSP.split(";"))
    assert directives["default-src"] == "'self'"
    for name in ("script-src", "style-src", "connect-src", "img-src"):
        assert directives[name] == "'self'", name
    assert "unsafe" not in CSP and "http" not in CSP and "data:" not in CSP
    assert directives["frame-ancestors"] == "'none'"


async def test_assets_stay_inside_the_package(harness: Harness) -> None:
    for path in ("/console/assets/../index.html", "/console/assets/%2e%2e/%2e%2e/config.py",
                 "/console/assets/..%2f..%2fapi%2fconsole.py"):
        answer = await harness.client.get(path)
        assert answer.status_code == 404, path
        assert b"import" not in answer.content


@pytest.mark.parametrize("overrides", [{"console": False}, {"admin_token": None,
                                                            "registration": "closed"}])
async def test_console_off_without_admin_token_or_when_switched_off(
        harness_factory: Any, overrides: dict[str, Any]) -> None:
    async with harness_factory(**overrides) as h:
        for path in ("/console/", "/console/assets/app.js"):
            answer = await h.client.get(path)
            assert answer.status_code == 404, path
            assert answer.json() == {"error": "not_found"}


async def test_health_needs_the_admin_token(harness: Harness) -> None:
    assert (await harness.client.get("/admin/health")).status_code == 401
    wrong = {"Authorization": "Bearer " + ADMIN_TOKEN[:-1] + "x"}
    assert (await harness.client.get("/admin/health", headers=wrong)).status_code == 401


async def test_health_reports_database_budget_digitalocean_and_reconciler(
        harness: Harness) -> None:
    before = (await harness.client.get("/admin/health", headers=AUTH)).json()
    assert before["database"]["ok"] is True and before["database"]["ms"] >= 0
    assert before["digitalocean"]["reachable"] is None  # nothing asked yet
    assert before["reconcile"]["last_at"] is None and before["reconcile"]["outcome"] is None
    assert before["budget"]["per_minute"] == 240 and before["budget"]["per_hour"] == 4800
    account = await harness.create_account(domain="www.example.com")
    assert (await harness.update(account, challenge_value(1))).status_code == 200
    calls = harness.do_calls()
    health = (await harness.client.get("/admin/health", headers=AUTH)).json()
    assert health["budget"]["used_last_minute"] == calls == health["budget"]["used_last_hour"]
    assert calls >= 2  # the zone list and the create
    assert health["digitalocean"]["reachable"] is True
    assert health["digitalocean"]["last_status"] == "201"
    assert health["digitalocean"]["last_operation"] == "create_record"
    # A reconcile pass, as the loop runs it, is what the page shows next.
    report = await harness.services.reconciler.run_once()
    harness.metrics.reconciled(report, 0.25)
    health = (await harness.client.get("/admin/health", headers=AUTH)).json()
    assert health["reconcile"]["outcome"] == "ok" and health["reconcile"]["seconds"] == 0.25
    assert set(health["reconcile"]["repairs"]) == set(REPAIR_KINDS)
    harness.metrics.reconciled(None, 1.0)
    failed = (await harness.client.get("/admin/health", headers=AUTH)).json()
    assert failed["reconcile"]["outcome"] == "failed"


async def test_health_probe_asks_digitalocean_and_reports_an_outage(harness: Harness) -> None:
    calls = harness.do_calls()
    health = (await harness.client.get("/admin/health?probe=true", headers=AUTH)).json()
    assert harness.do_calls() == calls + 1
    assert health["digitalocean"]["reachable"] is True
    assert health["digitalocean"]["last_operation"] == "list_zones"
    harness.do.update_faults(error_next=10, error_status=503)
    health = (await harness.client.get("/admin/health?probe=true", headers=AUTH)).json()
    assert health["digitalocean"]["reachable"] is False
    assert health["digitalocean"]["last_status"] == "503"


async def test_health_is_not_audited(harness: Harness) -> None:
    await harness.client.get("/admin/health", headers=AUTH)
    trail = (await harness.client.get("/admin/audit", headers=AUTH)).json()
    assert trail == []  # the trail records its own read after answering


async def _names(h: Harness, **query: Any) -> list[str]:
    answer = await h.client.get("/admin/accounts", params=query, headers=AUTH)
    assert answer.status_code == 200, answer.text
    return [a["fulldomain"] for a in answer.json()]


async def test_search_matches_name_domain_username_and_note_as_literal_text(
        harness: Harness) -> None:
    web = await harness.create_account(domain="www.example.com", note="Web 100% frontend")
    api = await harness.create_account(domain="api.example.com", note="backend_a")
    await harness.create_account(domain="mail.example.com", note="backendxa")
    assert await _names(harness, q="WWW.EXAMPLE") == [web["fulldomain"]]
    assert await _names(harness, q="100%") == [web["fulldomain"]]
    assert await _names(harness, q="100%25") == []
    assert await _names(harness, q="end_a") == [api["fulldomain"]]  # "_" is no wildcard
    assert await _names(harness, q=web["username"][:13]) == [web["fulldomain"]]
    assert len(await _names(harness, q="  ")) == 3
    for bad in ("a\x00b", "x" * 101, "line\nbreak"):
        answer = await harness.client.get("/admin/accounts", params={"q": bad}, headers=AUTH)
        assert answer.status_code == 400, bad


async def test_expiring_filter(harness: Harness) -> None:
    now = datetime.now(UTC)
    soon = await harness.create_account(domain="a.example.com",
                                        expires_at=(now + timedelta(days=3)).isoformat())
    later = await harness.create_account(domain="b.example.com",
                                         expires_at=(now + timedelta(days=60)).isoformat())
    await harness.create_account(domain="c.example.com")
    assert await _names(harness, expiring_days=7) == [soon["fulldomain"]]
    assert await _names(harness, expiring_days=90) == [soon["fulldomain"], later["fulldomain"]]
    assert await _names(harness, expiring_days=0) == []
    bad = await harness.client.get("/admin/accounts?expiring_days=-1", headers=AUTH)
    assert bad.status_code == 400
