"""lego's httpreq protocol: /present and /cleanup with Basic auth."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
import pytest

from tests.conftest import Harness, challenge_value

V1, V2, V3 = challenge_value(1), challenge_value(2), challenge_value(3)


def basic(account: dict[str, Any]) -> httpx.BasicAuth:
    return httpx.BasicAuth(account["username"], account["password"])


async def test_present_and_cleanup_direct_name(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    fqdn = "_acme-challenge.www.example.com."
    response = await harness.client.post("/present", json={"fqdn": fqdn, "value": V1},
                                         auth=basic(account))
    assert response.status_code == 200
    assert harness.txt_at("_acme-challenge.www.example.com") == [V1]
    await harness.client.post("/present", json={"fqdn": fqdn, "value": V2}, auth=basic(account))
    harness.do.clear_requests()
    response = await harness.client.post("/cleanup", json={"fqdn": fqdn, "value": V1},
                                         auth=basic(account))
    assert response.status_code == 200
    # Cleanup retires exactly that value, and spends nothing now: its record waits for the
    # next value (overwritten in place) or for housekeeping.
    assert harness.do_calls() == 0
    rows = await harness.services.store.values_at("_acme-challenge.www.example.com")
    assert [(r.value, r.state.value) for r in rows] == [(V1, "retired"), (V2, "live")]
    await harness.client.post("/present", json={"fqdn": fqdn, "value": V3}, auth=basic(account))
    assert [(e.method, e.status) for e in harness.do.requests()] == [("PUT", 200)]
    assert harness.txt_at("_acme-challenge.www.example.com") == sorted([V2, V3])
    # Housekeeping deletes what is retired.
    await harness.client.post("/cleanup", json={"fqdn": fqdn, "value": V2}, auth=basic(account))
    report = await harness.services.reconciler.run_once()
    assert report.retired == 1
    assert harness.txt_at("_acme-challenge.www.example.com") == [V3]
    rows = await harness.services.store.values_at("_acme-challenge.www.example.com")
    assert [r.value for r in rows] == [V3]


async def test_cleanup_of_an_absent_value_is_harmless(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    response = await harness.client.post(
        "/cleanup", json={"fqdn": "_acme-challenge.www.example.com.", "value": V1},
        auth=basic(account))
    assert response.status_code == 200
    assert response.json()["removed"] is False


async def test_fqdn_is_case_and_dot_insensitive(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    for fqdn in ("_ACME-CHALLENGE.WWW.EXAMPLE.COM.", "_acme-challenge.www.example.com"):
        response = await harness.client.post("/present", json={"fqdn": fqdn, "value": V1},
                                             auth=basic(account))
        assert response.status_code == 200


async def test_delegated_name_arrives_as_the_cname_target(harness: Harness) -> None:
    # lego follows _acme-challenge.www.customer.net -> <label>.acme.example.org first.
    account = await harness.create_account(domain="www.customer.net", delegated=True)
    response = await harness.client.post(
        "/present", json={"fqdn": account["fulldomain"] + ".", "value": V1}, auth=basic(account))
    assert response.status_code == 200
    assert harness.txt_at(account["fulldomain"]) == [V1]


def raw_value(key_auth: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(key_auth.encode()).digest()).rstrip(
        b"=").decode()


async def test_raw_mode_computes_the_value(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    key_auth = "token123.thumbprint456"
    body = {"domain": "www.example.com", "token": "token123", "keyAuth": key_auth}
    response = await harness.client.post("/present", json=body, auth=basic(account))
    assert response.status_code == 200, response.text
    assert harness.txt_at("_acme-challenge.www.example.com") == [raw_value(key_auth)]
    response = await harness.client.post("/cleanup", json=body, auth=basic(account))
    assert response.status_code == 200
    rows = await harness.services.store.values_at("_acme-challenge.www.example.com")
    assert [(r.value, r.state.value) for r in rows] == [(raw_value(key_auth), "retired")]


async def test_raw_mode_for_a_delegated_account_names_its_domain(harness: Harness) -> None:
    account = await harness.create_account(domain="www.customer.net", delegated=True)
    body = {"domain": "www.customer.net", "token": "t", "keyAuth": "t.k"}
    response = await harness.client.post("/present", json=body, auth=basic(account))
    assert response.status_code == 200
    assert harness.txt_at(account["fulldomain"]) == [raw_value("t.k")]


@pytest.mark.parametrize(
    "auth",
    [None, ("nobody", "x" * 40), "wrong-password", "acme-dns-headers"],
)
async def test_present_needs_the_accounts_basic_auth(harness: Harness, auth: Any) -> None:
    account = await harness.create_account(domain="www.example.com")
    kwargs: dict[str, Any] = {}
    if auth == "wrong-password":
        kwargs["auth"] = httpx.BasicAuth(account["username"], "y" * 40)
    elif auth == "acme-dns-headers":
        kwargs["headers"] = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
    elif auth is not None:
        kwargs["auth"] = httpx.BasicAuth(*auth)
    response = await harness.client.post(
        "/present", json={"fqdn": "_acme-challenge.www.example.com.", "value": V1}, **kwargs)
    assert response.status_code == 401
    assert response.json() == {"error": "forbidden"}
    assert harness.txt_at("_acme-challenge.www.example.com") == []


async def test_present_refuses_a_bad_value(harness: Harness) -> None:
    account = await harness.create_account(domain="www.example.com")
    response = await harness.client.post(
        "/present", json={"fqdn": "_acme-challenge.www.example.com.", "value": "nope"},
        auth=basic(account))
    assert response.status_code == 400
    assert response.json() == {"error": "bad_txt"}
