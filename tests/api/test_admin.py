"""The admin API and the two binding modes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN, Harness, challenge_value

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
V1, V2 = challenge_value(1), challenge_value(2)


async def test_direct_mode_binds_the_challenge_name_in_its_zone(harness: Harness) -> None:
    account = await harness.create_account(domain="WWW.Example.com.", note="web frontend")
    assert account["fulldomain"] == "_acme-challenge.www.example.com"
    assert account["zone"] == "example.com" and account["mode"] == "direct"
    response = await harness.update(account, V1)
    assert response.status_code == 200
    records = harness.do.find_records("_acme-challenge.www.example.com", "TXT")
    assert [(r.zone, r.name, r.data) for r in records] == [("example.com", "_acme-challenge.www",
                                                            V1)]


async def test_direct_mode_picks_the_longest_zone(harness: Harness) -> None:
    harness.do.add_zone("shop.example.com")
    harness.services.zones._zones = None  # the zone list is cached; a new zone appeared
    account = await harness.create_account(domain="www.shop.example.com")
    assert account["zone"] == "shop.example.com"
    await harness.update(account, V1)
    assert [r.zone for r in harness.do.find_records(account["fulldomain"])] == ["shop.example.com"]


async def test_unicode_domains_are_bound_as_punycode(harness: Harness) -> None:
    account = await harness.create_account(domain="bücher.example.com")
    assert account["fulldomain"] == "_acme-challenge.xn--bcher-kva.example.com"


async def test_delegated_mode_binds_a_random_name(harness: Harness) -> None:
    one = await harness.create_account(domain="www.customer.net", delegated=True)
    two = await harness.create_account(domain="www.customer.net", delegated=True)
    assert one["fulldomain"].endswith(".acme.example.org") and one["zone"] == "example.org"
    assert one["fulldomain"] != two["fulldomain"]
    assert one["domain"] == "www.customer.net"


async def test_delegated_mode_needs_a_delegation_domain(harness_factory: Any) -> None:
    async with harness_factory(delegation_domain=None, registration="closed") as h:
        response = await h.client.post("/admin/accounts", json={"delegated": True}, headers=AUTH)
        assert response.status_code == 501
        assert response.json() == {"error": "not_configured"}


@pytest.mark.parametrize("body", [{"domain": "bad..name"}, {"domain": "a" * 300},
                                  {"domain": "-x.example.com"}, {"domain": "192.0.2.1"},
                                  {"domain": "x.example.com", "allowfrom": ["nope"]},
                                  {"domain": "x.example.com", "unknown": 1},
                                  {"domain": "x.example.com", "note": "a\x00b"}, {}])
async def test_create_refuses_bad_input(harness: Harness, body: dict[str, Any]) -> None:
    response = await harness.client.post("/admin/accounts", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}
    assert harness.do_calls("POST") == 0


async def test_list_and_show_never_show_the_key(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    listed = await harness.client.get("/admin/accounts", headers=AUTH)
    shown = await harness.client.get(f"/admin/accounts/{account['username']}", headers=AUTH)
    assert listed.status_code == shown.status_code == 200
    assert [a["username"] for a in listed.json()] == [account["username"]]
    for text in (listed.text, shown.text):
        assert account["password"] not in text
        assert "password" not in text and "key" not in text.replace("keys", "")


async def test_show_unknown_account_is_404(harness: Harness) -> None:
    for username in ("00000000-0000-4000-8000-000000000000", "not-a-uuid"):
        response = await harness.client.get(f"/admin/accounts/{username}", headers=AUTH)
        assert response.status_code == 404
        assert response.json() == {"error": "account_not_found"}


async def test_revoke_refuses_at_once_and_deletes_its_records(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    await harness.update(account, V2)
    assert len(harness.txt_at(account["fulldomain"])) == 2
    response = await harness.client.delete(f"/admin/accounts/{account['username']}",
                                           headers=AUTH)
    assert response.status_code == 200
    assert response.json()["removed_values"] == 2
    assert response.json()["pending_removal"] == 0
    assert response.json()["revoked_at"] is not None
    assert harness.txt_at(account["fulldomain"]) == []
    assert await harness.services.store.values_at(account["fulldomain"]) == []


async def test_revoke_reports_what_is_still_pending_removal(harness: Harness) -> None:
    """A failed DigitalOcean delete is reported as pending, not as removed."""
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, challenge_value(1))
    await harness.update(account, challenge_value(2))
    # The first delete fails every attempt (4), the second goes through.
    harness.do.update_faults(methods=["DELETE"], error_next=4)
    response = await harness.client.delete(f"/admin/accounts/{account['username']}",
                                           headers=AUTH)
    assert response.status_code == 200
    assert (response.json()["removed_values"], response.json()["pending_removal"]) == (1, 1)
    assert len(harness.txt_at(account["fulldomain"])) == 1  # really still there
    assert (await harness.services.reconciler.run_once()).retried == 1
    assert harness.txt_at(account["fulldomain"]) == []
    refused = await harness.update(account, V1)
    assert refused.status_code == 401 and refused.json() == {"error": "forbidden"}
    listed = await harness.client.get("/admin/accounts", headers=AUTH)
    assert listed.json() == []
    everything = await harness.client.get("/admin/accounts?include_revoked=true", headers=AUTH)
    assert [a["username"] for a in everything.json()] == [account["username"]]
    # The name is free again.
    again = await harness.create_account(domain="www.example.com")
    assert again["fulldomain"] == account["fulldomain"]


async def test_revoke_when_digitalocean_fails_still_revokes(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    harness.do.update_faults(methods=["DELETE"], error_next=100)
    response = await harness.client.delete(f"/admin/accounts/{account['username']}",
                                           headers=AUTH)
    assert response.status_code == 200
    harness.do.update_faults(error_next=0)
    assert (await harness.update(account, V2)).status_code == 401
    rows = await harness.services.store.values_at(account["fulldomain"])
    assert [r.state.value for r in rows] == ["deleting"]  # the reconciler finishes it


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": ADMIN_TOKEN},
                                     {"Authorization": f"Bearer {ADMIN_TOKEN}x"}])
async def test_admin_api_needs_the_admin_token(harness: Harness, headers: dict[str, str]) -> None:
    for method, path in [("GET", "/admin/accounts"), ("POST", "/admin/accounts"),
                         ("DELETE", "/admin/accounts/00000000-0000-4000-8000-000000000000")]:
        response = await harness.client.request(method, path, headers=headers,
                                                json={"domain": "x.example.com"})
        assert response.status_code == 401
        assert response.json() == {"error": "forbidden"}


async def test_admin_api_is_off_without_an_admin_token(harness_factory: Any) -> None:
    async with harness_factory(admin_token=None, registration="open") as h:
        response = await h.client.get("/admin/accounts", headers=AUTH)
        assert response.status_code == 403
        assert response.json() == {"error": "admin_api_disabled"}


# Edges of every input the admin API takes: a 4xx, never a 500 (whose traceback would log
# SQL, and once logged SQL parameters, key hashes among them).

@pytest.mark.parametrize("query", [
    "offset=9223372036854775808", "offset=9223372036854775807", "offset=1000000001",
    "offset=-1", "limit=0", "limit=1001", "limit=99999999999999999999", "stale_days=-1",
    "stale_days=36501", "stale_days=99999999999999999999", "mode=other",
    "domain=" + "a" * 301, "domain=bad..name"])
async def test_account_listing_refuses_out_of_range_input(harness: Harness, query: str) -> None:
    response = await harness.client.get(f"/admin/accounts?{query}", headers=AUTH)
    assert 400 <= response.status_code < 500, (query, response.status_code, response.text)
    assert set(response.json()) == {"error"}


async def test_account_listing_takes_the_largest_offset_it_allows(harness: Harness) -> None:
    from app.api.admin import MAX_OFFSET

    response = await harness.client.get(f"/admin/accounts?offset={MAX_OFFSET}", headers=AUTH)
    assert response.status_code == 200 and response.json() == []


EDGE_TIMES = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00",
              "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01"]


@pytest.mark.parametrize("since", [*EDGE_TIMES, "0001-01-01T00:00:00", "10000-01-01T00:00:00Z",
                                   "2026-13-01T00:00:00Z", "yesterday"])
async def test_audit_refuses_times_outside_the_utc_range(harness: Harness, since: str) -> None:
    response = await harness.client.get("/admin/audit", params={"since": since}, headers=AUTH)
    assert response.status_code == 400, (since, response.text)
    assert response.json() == {"error": "bad_request"}


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00-12:00",
                                   "9999-12-31T23:59:59Z", "9999-12-31T23:59:59+14:00"])
async def test_audit_takes_times_at_the_edges_of_the_range(harness: Harness, since: str) -> None:
    response = await harness.client.get("/admin/audit", params={"since": since}, headers=AUTH)
    assert response.status_code == 200, (since, response.text)


@pytest.mark.parametrize("expires_at", EDGE_TIMES)
async def test_expiry_outside_the_utc_range_is_refused(harness: Harness, expires_at: str
                                                       ) -> None:
    created = await harness.client.post("/admin/accounts", headers=AUTH, json={
        "domain": "edge.example.com", "expires_at": expires_at})
    assert created.status_code == 400, created.text
    account = await harness.create_account(domain="www.example.com")
    changed = await harness.client.patch(f"/admin/accounts/{account['username']}",
                                         headers=AUTH, json={"expires_at": expires_at})
    assert changed.status_code == 400, changed.text


async def test_expiry_at_the_end_of_the_range_is_taken(harness: Harness) -> None:
    created = await harness.client.post("/admin/accounts", headers=AUTH, json={
        "domain": "edge.example.com", "expires_at": "9999-12-31T23:59:59+14:00"})
    assert created.status_code == 201, created.text
    assert created.json()["expires_at"].startswith("9999-12-31T09:59:59")
    shown = await harness.client.get(f"/admin/accounts/{created.json()['username']}",
                                     headers=AUTH)
    assert shown.json()["expires_at"].startswith("9999-12-31T09:59:59")


async def test_usernames_are_one_account_in_any_letter_case(harness: Harness) -> None:
    """/update takes an upper-case username; so does every admin look-up and the audit
    filter, so an operator finds what an attacker did however it was spelt."""
    account = await harness.create_account(domain="www.example.com")
    upper = account["username"].upper()
    shouted = {**account, "username": upper}
    assert (await harness.update(shouted, V1)).status_code == 200
    refused = await harness.client.post(
        "/update", json={"subdomain": account["subdomain"], "txt": V2},
        headers={"X-Api-User": upper, "X-Api-Key": "k" * 40})
    assert refused.status_code == 401
    shown = await harness.client.get(f"/admin/accounts/{upper}", headers=AUTH)
    assert shown.status_code == 200 and shown.json()["username"] == account["username"]
    trail = await harness.client.get("/admin/audit", params={"account": upper}, headers=AUTH)
    events = [(e["event"], e["outcome"]) for e in trail.json()]
    assert ("update", "ok") in events and ("auth.failed", "forbidden") in events, events
    assert all(e["username"] == account["username"] for e in trail.json())
    changed = await harness.client.patch(f"/admin/accounts/{upper}", headers=AUTH,
                                         json={"note": "found"})
    assert changed.status_code == 200
    rotated = await harness.client.post(f"/admin/accounts/{upper}/rotate", headers=AUTH)
    assert rotated.status_code == 200 and rotated.json()["username"] == account["username"]
    revoked = await harness.client.delete(f"/admin/accounts/{upper}?purge=true", headers=AUTH)
    assert revoked.status_code == 200 and revoked.json()["username"] == account["username"]
