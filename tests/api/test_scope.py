"""A credential for www.example.com writes TXT values at _acme-challenge.www.example.com
and nothing else: every other name, every record type, through every endpoint."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, Harness, challenge_value

V = challenge_value(7)
BOUND = "_acme-challenge.www.example.com"

OTHER_NAMES = [
    "www.example.com",
    "example.com",
    "_acme-challenge.example.com",
    "_acme-challenge.mail.example.com",
    "x._acme-challenge.www.example.com",
    "_acme-challenge.www.example.com.evil.test",
    "_acme-challenge.www.example.co",
    "_acme-challenge.wwwexample.com",
    "_acme-challenge-www.example.com",
    "*.www.example.com",
    "_acme-challenge.*.example.com",
    "_acme-challenge..www.example.com",
    "_acme-challenge.www.example.com..",
    "_acme-challenge.www.example.com\x00.evil.test",
    "_acme-challenge.www%2eexample.com",
    "_acme-challenge.ww\u0077.example.com.example.com",
    "xn--_acme-challenge.www.example.com",
    "_acme-challenge.www.example.org",
    "@",
    "",
    ".",
]

OTHER_TYPES = ["A", "AAAA", "CNAME", "NS", "MX", "CAA", "SRV", "SOA", "txt"]


@pytest.fixture
async def bound(harness: Harness) -> dict[str, Any]:
    return await harness.create_account(domain="www.example.com")


def only_the_bound_txt_changed(h: Harness, before: set[tuple[str, str, str, str]]) -> None:
    after = h.snapshot()
    changed = before ^ after
    assert all(
        zone == "example.com" and rtype == "TXT" and name == "_acme-challenge.www"
        for zone, rtype, name, _ in changed
    ), changed


@pytest.mark.parametrize("name", OTHER_NAMES)
async def test_present_refuses_every_other_name(harness: Harness, bound: dict[str, Any],
                                                name: str) -> None:
    before = harness.snapshot()
    response = await harness.client.post(
        "/present", json={"fqdn": name, "value": V},
        auth=httpx.BasicAuth(bound["username"], bound["password"]))
    assert response.status_code == 401, name
    assert response.json() == {"error": "forbidden"}
    assert harness.snapshot() == before


@pytest.mark.parametrize("domain", ["example.com", "mail.example.com", "www.example.com.evil.test",
                                    "evil.test", "*.example.com", "sub.www.example.com"])
async def test_raw_mode_refuses_every_other_domain(harness: Harness, bound: dict[str, Any],
                                                   domain: str) -> None:
    before = harness.snapshot()
    response = await harness.client.post(
        "/present", json={"domain": domain, "token": "t", "keyAuth": "t.k"},
        auth=httpx.BasicAuth(bound["username"], bound["password"]))
    assert response.status_code == 401
    assert harness.snapshot() == before


@pytest.mark.parametrize("subdomain", ["www", "_acme-challenge.www", BOUND, "example.com",
                                       "acme.example.org", "*", "", "..", None])
async def test_update_refuses_every_other_subdomain(harness: Harness, bound: dict[str, Any],
                                                    subdomain: object) -> None:
    before = harness.snapshot()
    response = await harness.client.post(
        "/update", json={"subdomain": subdomain, "txt": V},
        headers={"X-Api-User": bound["username"], "X-Api-Key": bound["password"]})
    assert response.status_code == 401
    assert harness.snapshot() == before


@pytest.mark.parametrize("rtype", OTHER_TYPES)
async def test_no_endpoint_lets_a_client_choose_a_record_type(harness: Harness,
                                                              bound: dict[str, Any],
                                                              rtype: str) -> None:
    before = harness.snapshot()
    extra = {"type": rtype, "name": "www", "data": "192.0.2.66", "ttl": 30}
    headers = {"X-Api-User": bound["username"], "X-Api-Key": bound["password"]}
    await harness.client.post("/update", json={"subdomain": bound["subdomain"], "txt": V, **extra},
                              headers=headers)
    await harness.client.post("/present", json={"fqdn": BOUND + ".", "value": V, **extra},
                              auth=httpx.BasicAuth(bound["username"], bound["password"]))
    only_the_bound_txt_changed(harness, before)
    assert {r.type for r in harness.do.find_records(BOUND)} == {"TXT"}


async def test_an_account_cannot_use_the_admin_api_or_reach_digitalocean(
    harness: Harness, bound: dict[str, Any]
) -> None:
    before = harness.snapshot()
    as_basic = "Basic " + base64.b64encode(
        f"{bound['username']}:{bound['password']}".encode()).decode()
    for headers in (
        {"Authorization": f"Bearer {bound['password']}"},
        {"Authorization": as_basic},
        {"X-Api-User": bound["username"], "X-Api-Key": bound["password"]},
    ):
        for method, path, body in [
            ("POST", "/admin/accounts", {"domain": "mail.example.com"}),
            ("GET", "/admin/accounts", None),
            ("DELETE", f"/admin/accounts/{bound['username']}", None),
            ("POST", "/v2/domains/example.com/records", {"type": "A", "name": "x", "data": "1"}),
        ]:
            response = await harness.client.request(method, path, json=body, headers=headers)
            assert response.status_code in (401, 404, 405), (method, path)
    assert harness.snapshot() == before


async def test_register_hands_out_names_only_under_the_delegation_domain(harness: Harness
                                                                          ) -> None:
    before = harness.snapshot()
    for body in ({"fulldomain": "www.example.com"}, {"subdomain": "_acme-challenge.www"},
                 {"zone": "example.com", "name": "@"}):
        response = await harness.client.post("/register", json=body)
        account = response.json()
        assert account["fulldomain"].endswith(".acme.example.org")
        headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
        await harness.client.post("/update", json={"subdomain": account["subdomain"], "txt": V},
                                  headers=headers)
    changed = harness.snapshot() ^ before
    assert changed and all(z == "example.org" and t == "TXT" and n.endswith(".acme")
                           for z, t, n, _ in changed)


async def test_one_active_account_per_name(harness: Harness, bound: dict[str, Any]) -> None:
    response = await harness.client.post(
        "/admin/accounts", json={"domain": "WWW.Example.COM."},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 409
    assert response.json() == {"error": "name_in_use"}


async def test_direct_names_need_a_zone_of_the_account(harness: Harness) -> None:
    response = await harness.client.post(
        "/admin/accounts", json={"domain": "www.not-ours.test"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 422
    assert response.json() == {"error": "zone_not_found"}


async def test_zones_allow_list_narrows_what_may_be_bound(harness_factory: Any) -> None:
    async with harness_factory(zones="example.org") as h:
        response = await h.client.post(
            "/admin/accounts", json={"domain": "www.example.com"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 422
