"""Credential lifecycle through the admin API: expiry, rotation, edits, revocation,
deletion, stale listings, and the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.core.models import AccountChanges
from tests.conftest import ADMIN_TOKEN, Harness, challenge_value

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
V1, V2, V3 = (challenge_value(n) for n in (1, 2, 3))


def soon(**delta: float) -> str:
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


async def test_rotation_refuses_the_old_key_at_once_and_keeps_the_records(harness: Harness
                                                                          ) -> None:
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    response = await harness.client.post(f"/admin/accounts/{account['username']}/rotate",
                                         headers=AUTH)
    assert response.status_code == 200
    rotated = response.json()
    assert set(rotated) == {"username", "password", "fulldomain", "subdomain", "allowfrom"}
    assert rotated["username"] == account["username"]
    assert rotated["fulldomain"] == account["fulldomain"]
    assert rotated["password"] != account["password"]
    old = await harness.update(account, V2)
    assert old.status_code == 401 and old.json() == {"error": "forbidden"}
    assert harness.txt_at(account["fulldomain"]) == [V1]  # untouched by the rotation
    new = await harness.update(rotated, V2)
    assert new.status_code == 200
    assert harness.txt_at(account["fulldomain"]) == sorted([V1, V2])


async def test_a_revoked_account_cannot_be_rotated(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    await harness.client.delete(f"/admin/accounts/{account['username']}", headers=AUTH)
    response = await harness.client.post(f"/admin/accounts/{account['username']}/rotate",
                                         headers=AUTH)
    assert response.status_code == 404


async def test_expired_credentials_are_refused(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com", expires_at=soon(hours=1))
    assert account["expires_at"] is not None
    assert (await harness.update(account, V1)).status_code == 200
    # Move the expiry into the past behind the API's back (the API refuses past times).
    await harness.services.store.update_account(
        account["username"], AccountChanges(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    refused = await harness.update(account, V2)
    assert refused.status_code == 401 and refused.json() == {"error": "forbidden"}
    trail = (await harness.client.get("/admin/audit?event=auth.failed", headers=AUTH)).json()
    assert [e["outcome"] for e in trail] == ["expired"]


async def test_expiry_must_be_in_the_future_and_zoned(harness: Harness) -> None:
    for expires in (soon(hours=-1), "2030-01-01T00:00:00"):
        response = await harness.client.post(
            "/admin/accounts", json={"domain": "www.example.com", "expires_at": expires},
            headers=AUTH)
        assert response.status_code == 400, expires


async def test_edit_allowfrom_note_and_expiry(harness_factory: Any) -> None:
    async with harness_factory(client_ip="198.51.100.7") as h:
        account = await h.create_account(domain="www.example.com", allowfrom=["192.0.2.0/24"],
                                         note="old", expires_at=soon(days=1))
        assert (await h.update(account, V1)).status_code == 401
        response = await h.client.patch(
            f"/admin/accounts/{account['username']}",
            json={"allowfrom": ["198.51.100.0/24"], "note": "new", "expires_at": None},
            headers=AUTH)
        assert response.status_code == 200
        body = response.json()
        assert (body["allowfrom"], body["note"], body["expires_at"]) == (
            ["198.51.100.0/24"], "new", None)
        assert (await h.update(account, V1)).status_code == 200
        # Fields not given stay as they are; null clears the note.
        response = await h.client.patch(f"/admin/accounts/{account['username']}",
                                        json={"note": None}, headers=AUTH)
        assert response.json()["allowfrom"] == ["198.51.100.0/24"]
        assert response.json()["note"] is None
        bad = await h.client.patch(f"/admin/accounts/{account['username']}",
                                   json={"allowfrom": ["nope"]}, headers=AUTH)
        assert bad.status_code == 400 and bad.json() == {"error": "invalid_allowfrom_cidr"}


async def test_per_account_window(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com", max_values=1)
    for value in (V1, V2):
        await harness.update(account, value)
    assert harness.txt_at(account["fulldomain"]) == [V2]


async def test_listing_filters_and_pages(harness: Harness) -> None:
    direct = [await harness.create_account(domain=f"h{n}.example.com") for n in range(5)]
    delegated = await harness.create_account(domain="www.customer.net", delegated=True)
    await harness.client.delete(f"/admin/accounts/{direct[0]['username']}", headers=AUTH)

    async def names(query: str) -> list[str]:
        response = await harness.client.get(f"/admin/accounts?{query}", headers=AUTH)
        assert response.status_code == 200
        return [a["username"] for a in response.json()]

    assert await names("") == [a["username"] for a in direct[1:]] + [delegated["username"]]
    assert await names("mode=delegated") == [delegated["username"]]
    assert await names("domain=H2.Example.com") == [direct[2]["username"]]
    assert await names("include_revoked=true&limit=2") == [a["username"] for a in direct[:2]]
    assert await names("include_revoked=true&limit=2&offset=2") == [
        a["username"] for a in direct[2:4]]
    # Stale: unused for 0 days is everyone not used at all yet but created before now.
    await harness.update(direct[1], V1)
    stale_now = await names("stale_days=0")
    assert direct[1]["username"] not in stale_now or len(stale_now) == 5
    assert await names("stale_days=30") == []
    bad = await harness.client.get("/admin/accounts?limit=0", headers=AUTH)
    assert bad.status_code == 400


async def test_purge_deletes_the_account_but_not_its_audit_trail(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    await harness.update(account, V1)
    response = await harness.client.delete(
        f"/admin/accounts/{account['username']}?purge=true", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"username": account["username"], "deleted": True,
                               "removed_values": 1, "pending_removal": 0}
    assert harness.txt_at(account["fulldomain"]) == []
    assert (await harness.client.get(f"/admin/accounts/{account['username']}",
                                     headers=AUTH)).status_code == 404
    assert (await harness.update(account, V2)).status_code == 401
    trail = (await harness.client.get(f"/admin/audit?account={account['username']}",
                                      headers=AUTH)).json()
    assert [e["event"] for e in reversed(trail)] == [
        "account.create", "update", "account.revoke", "account.delete", "auth.failed"]


async def test_audit_trail_records_every_action_and_failure_and_no_secret(
    harness: Harness,
) -> None:
    account = await harness.create_account(domain="www.example.com", note="n")
    registered = (await harness.client.post("/register")).json()
    basic = httpx.BasicAuth(account["username"], account["password"])
    fqdn = "_acme-challenge.www.example.com."
    await harness.update(account, V1)
    await harness.update(account, "bad")
    await harness.update({**account, "password": "x" * 40}, V1)
    await harness.client.post("/present", json={"fqdn": fqdn, "value": V2}, auth=basic)
    await harness.client.post("/present", json={"fqdn": "example.com.", "value": V2},
                              auth=basic)
    await harness.client.post("/cleanup", json={"fqdn": fqdn, "value": V2}, auth=basic)
    # V3 overwrites the retired V2 in place; that PUT fails.
    harness.do.update_faults(methods=["PUT"], error_next=1)
    await harness.update(account, V3)
    await harness.client.patch(f"/admin/accounts/{account['username']}",
                               json={"note": "m"}, headers=AUTH)
    rotated = (await harness.client.post(f"/admin/accounts/{account['username']}/rotate",
                                         headers=AUTH)).json()
    await harness.client.delete(f"/admin/accounts/{registered['username']}", headers=AUTH)
    response = await harness.client.get("/admin/audit?limit=1000", headers=AUTH)
    trail = list(reversed(response.json()))
    seen = [(e["event"], e["outcome"]) for e in trail]
    assert seen == [
        ("account.create", "ok"),
        ("account.create", "ok"),  # /register
        ("update", "ok"),
        ("update", "bad_txt"),
        ("auth.failed", "forbidden"),
        ("present", "ok"),
        ("auth.failed", "wrong_name"),
        ("cleanup", "ok"),
        ("update", "dns_provider_unavailable"),
        ("account.change", "ok"),
        ("account.rotate", "ok"),
        ("account.revoke", "ok"),
    ]
    assert trail[1]["detail"] == "register"
    assert [e["event"] for e in trail if e["client"] != "127.0.0.1"] == []
    fingerprints = {e["outcome"]: e["value_fingerprint"] for e in trail if e["event"] == "update"}
    assert len(fingerprints["ok"]) == len(fingerprints["dns_provider_unavailable"]) == 16
    assert fingerprints["bad_txt"] is None  # junk is not fingerprinted, nor stored
    assert trail[4]["username"] == account["username"]  # the attempted, well-formed username
    for secret in (account["password"], registered["password"], rotated["password"],
                   ADMIN_TOKEN, V1, V2, V3):
        assert secret not in response.text


async def test_audit_filters(harness: Harness) -> None:
    one = await harness.create_account(domain="one.example.com")
    await harness.create_account(domain="two.example.com")
    await harness.update(one, V1)
    since = datetime.now(UTC).isoformat()
    await harness.update(one, V2)
    by_account = (await harness.client.get(f"/admin/audit?account={one['username']}",
                                           headers=AUTH)).json()
    assert {e["username"] for e in by_account} == {one["username"]}
    recent = (await harness.client.get("/admin/audit", params={"since": since},
                                       headers=AUTH)).json()
    # The read of the trail just before is itself in the trail.
    assert [e["event"] for e in recent] == ["admin.read", "update"]
    assert recent[0]["detail"] == "audit"
    newest = (await harness.client.get("/admin/audit?limit=1&event=update",
                                       headers=AUTH)).json()
    assert len(newest) == 1 and newest[0]["event"] == "update"


@pytest.mark.parametrize("path", ["/admin/audit", "/admin/accounts/x/rotate"])
async def test_new_admin_routes_need_the_token(harness: Harness, path: str) -> None:
    method = "POST" if path.endswith("rotate") else "GET"
    response = await harness.client.request(method, path)
    assert response.status_code == 401
