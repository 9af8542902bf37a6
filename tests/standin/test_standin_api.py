"""The /v2 endpoints behave like DigitalOcean's Domains API."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.standin import RateLimits, StandinState, create_standin_app
from app.standin.state import FIRST_RECORD_ID

from .support import BASE, TOKEN

RECORD_KEYS = {"id", "type", "name", "data", "priority", "port", "ttl", "weight", "flags", "tag"}


def txt(name: str, data: str = "token-value", ttl: int = 30) -> dict[str, Any]:
    return {"type": "TXT", "name": name, "data": data, "ttl": ttl}


def assert_do_error(response: httpx.Response, status: int, error_id: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert body["id"] == error_id
    assert isinstance(body["message"], str) and body["message"]
    uuid.UUID(body["request_id"])


async def test_new_zone_lists_do_default_records(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/domains/example.com/records")
    assert response.status_code == 200
    records = response.json()["domain_records"]
    assert [(r["type"], r["name"]) for r in records] == [("SOA", "@")] + [("NS", "@")] * 3
    assert {r["data"] for r in records if r["type"] == "NS"} == {
        "ns1.digitalocean.com.",
        "ns2.digitalocean.com.",
        "ns3.digitalocean.com.",
    }
    assert records[0]["id"] == FIRST_RECORD_ID


async def test_list_domains(client: httpx.AsyncClient, state: StandinState) -> None:
    state.add_record("example.com", "TXT", "_acme-challenge", "abc", ttl=30)
    response = await client.get("/v2/domains")
    assert response.status_code == 200
    body = response.json()
    assert body["meta"] == {"total": 1}
    assert body["links"] == {}
    (domain,) = body["domains"]
    assert domain["name"] == "example.com"
    assert domain["ttl"] == 1800
    assert "IN SOA ns1.digitalocean.com. hostmaster.example.com." in domain["zone_file"]
    assert '_acme-challenge.example.com. 30 IN TXT "abc"' in domain["zone_file"]


async def test_get_domain_and_unknown_zone(client: httpx.AsyncClient) -> None:
    response = await client.get("/v2/domains/example.com")
    assert response.status_code == 200
    assert response.json()["domain"]["name"] == "example.com"
    assert_do_error(await client.get("/v2/domains/example.org"), 404, "not_found")
    assert_do_error(await client.get("/v2/domains/example.org/records"), 404, "not_found")
    assert_do_error(
        await client.post("/v2/domains/example.org/records", json=txt("a")), 404, "not_found"
    )


async def test_unknown_route_has_do_error_body(client: httpx.AsyncClient) -> None:
    assert_do_error(await client.get("/v2/droplets"), 404, "not_found")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
)
async def test_auth_refused(state: StandinState, headers: dict[str, str]) -> None:
    app = create_standin_app(state, token=TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        response = await c.get("/v2/domains", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["id"] == "unauthorized"
    assert body["message"] == "Unable to authenticate you"
    assert state.records("example.com")  # nothing touched
    assert state.requests()[-1].status == 401


async def test_create_relative_txt(client: httpx.AsyncClient, state: StandinState) -> None:
    response = await client.post(
        "/v2/domains/example.com/records", json=txt("_acme-challenge.www", "v1")
    )
    assert response.status_code == 201
    record = response.json()["domain_record"]
    assert set(record) == RECORD_KEYS
    assert record["name"] == "_acme-challenge.www"
    assert record["data"] == "v1"
    assert record["ttl"] == 30
    assert record["id"] > FIRST_RECORD_ID
    assert all(record[k] is None for k in ("priority", "port", "weight", "flags", "tag"))
    stored = state.get_record("example.com", record["id"])
    assert stored is not None and stored.fqdn == "_acme-challenge.www.example.com"
    second = await client.post("/v2/domains/example.com/records", json=txt("_acme-challenge.www"))
    assert second.json()["domain_record"]["id"] == record["id"] + 1


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("_acme-challenge.www.example.com.", "_acme-challenge.www"),
        ("example.com.", "@"),
        ("@", "@"),
        ("_ACME-Challenge.Example.COM.", "_acme-challenge"),
    ],
)
async def test_create_absolute_name(
    client: httpx.AsyncClient, state: StandinState, sent: str, stored: str
) -> None:
    response = await client.post("/v2/domains/example.com/records", json=txt(sent))
    assert response.status_code == 201
    assert response.json()["domain_record"]["name"] == stored


async def test_dotless_fqdn_gets_zone_appended_twice(
    client: httpx.AsyncClient, state: StandinState
) -> None:
    response = await client.post(
        "/v2/domains/example.com/records", json=txt("_acme-challenge.www.example.com")
    )
    assert response.status_code == 201
    record = state.get_record("example.com", response.json()["domain_record"]["id"])
    assert record is not None
    assert record.fqdn == "_acme-challenge.www.example.com.example.com"
    right = await client.get(
        "/v2/domains/example.com/records",
        params={"type": "TXT", "name": "_acme-challenge.www.example.com"},
    )
    assert right.json()["domain_records"] == []
    doubled = await client.get(
        "/v2/domains/example.com/records",
        params={"name": "_acme-challenge.www.example.com.example.com"},
    )
    assert [r["id"] for r in doubled.json()["domain_records"]] == [record.id]


async def test_data_is_stored_raw(client: httpx.AsyncClient) -> None:
    raw = '"quoted" value; with \\ backslash'
    response = await client.post("/v2/domains/example.com/records", json=txt("x", raw))
    rid = response.json()["domain_record"]["id"]
    fetched = await client.get(f"/v2/domains/example.com/records/{rid}")
    assert fetched.json()["domain_record"]["data"] == raw


async def test_ttl_defaults_to_1800(client: httpx.AsyncClient) -> None:
    body = {"type": "TXT", "name": "x", "data": "v"}
    response = await client.post("/v2/domains/example.com/records", json=body)
    assert response.json()["domain_record"]["ttl"] == 1800


@pytest.mark.parametrize(
    "body",
    [
        txt("x", ttl=29),
        txt("x", ttl=0),
        {**txt("x"), "ttl": "30"},
        {**txt("x"), "ttl": True},
        txt("x", data=""),
        {"type": "TXT", "name": "x"},
        {**txt("x"), "type": "txt"},
        {**txt("x"), "type": "SOA"},
        {**txt("x"), "type": "PTR"},
        {"type": "TXT", "data": "v", "ttl": 30},
        txt(""),
        txt("foo.example.org."),
        txt("a" * 64),
        {"type": "A", "name": "www", "data": "not-an-ip", "ttl": 30},
        {"type": "AAAA", "name": "www", "data": "192.0.2.1", "ttl": 30},
        {"type": "MX", "name": "@", "data": "mail.example.com.", "ttl": 30},
        {"type": "CAA", "name": "@", "data": "letsencrypt.org", "flags": 0, "ttl": 30},
    ],
)
async def test_create_refused_with_422(
    client: httpx.AsyncClient, state: StandinState, body: dict[str, Any]
) -> None:
    before = state.records("example.com")
    response = await client.post("/v2/domains/example.com/records", json=body)
    assert_do_error(response, 422, "unprocessable_entity")
    assert state.records("example.com") == before


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b""])
async def test_create_bad_body_is_400(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post("/v2/domains/example.com/records", content=content)
    assert_do_error(response, 400, "bad_request")


async def test_create_other_types(client: httpx.AsyncClient) -> None:
    bodies = [
        {"type": "A", "name": "www", "data": "192.0.2.1", "ttl": 60, "priority": 5},
        {"type": "AAAA", "name": "www", "data": "2001:db8::1", "ttl": 60},
        {"type": "CNAME", "name": "alias", "data": "www.example.com.", "ttl": 60},
        {"type": "MX", "name": "@", "data": "mail.example.com.", "priority": 10, "ttl": 60},
        {"type": "NS", "name": "sub", "data": "ns.elsewhere.net.", "ttl": 60},
        {"type": "CAA", "name": "@", "data": "letsencrypt.org", "flags": 0, "tag": "issue"},
        {
            "type": "SRV",
            "name": "_sip._tcp",
            "data": "sip",
            "priority": 1,
            "weight": 2,
            "port": 5060,
        },
    ]
    for body in bodies:
        response = await client.post("/v2/domains/example.com/records", json=body)
        assert response.status_code == 201, (body, response.text)
        record = response.json()["domain_record"]
        assert record["type"] == body["type"]
        assert record["data"] == body["data"]
    a, mx = bodies[0], bodies[3]
    listed = (await client.get("/v2/domains/example.com/records?per_page=50")).json()
    by_type = {r["type"]: r for r in listed["domain_records"]}
    assert by_type["A"]["priority"] is None, "fields a type does not use come back null"
    assert by_type["MX"]["priority"] == mx["priority"]
    assert by_type["SRV"]["port"] == 5060 and by_type["SRV"]["weight"] == 2
    assert by_type["CAA"]["tag"] == "issue" and by_type["CAA"]["flags"] == 0
    assert a["data"] == by_type["A"]["data"]


async def test_get_record(client: httpx.AsyncClient, state: StandinState) -> None:
    record = state.add_record("example.com", "TXT", "_acme-challenge", "v", ttl=30)
    response = await client.get(f"/v2/domains/example.com/records/{record.id}")
    assert response.status_code == 200
    assert response.json() == {"domain_record": record.to_api()}
    assert_do_error(await client.get("/v2/domains/example.com/records/1"), 404, "not_found")
    assert_do_error(await client.get("/v2/domains/example.com/records/abc"), 404, "not_found")


async def test_record_of_another_zone_is_not_found(
    client: httpx.AsyncClient, state: StandinState
) -> None:
    state.add_zone("example.org")
    record = state.add_record("example.org", "TXT", "x", "v")
    path = f"/v2/domains/example.com/records/{record.id}"
    assert_do_error(await client.get(path), 404, "not_found")
    assert_do_error(await client.delete(path), 404, "not_found")
    assert state.get_record("example.org", record.id) == record


async def test_delete_record(client: httpx.AsyncClient, state: StandinState) -> None:
    record = state.add_record("example.com", "TXT", "_acme-challenge", "v", ttl=30)
    response = await client.delete(f"/v2/domains/example.com/records/{record.id}")
    assert response.status_code == 204
    assert response.content == b""
    assert state.get_record("example.com", record.id) is None
    again = await client.delete(f"/v2/domains/example.com/records/{record.id}")
    assert_do_error(again, 404, "not_found")


async def test_name_filter_wants_fqdn_without_dot(
    client: httpx.AsyncClient, state: StandinState
) -> None:
    wanted = state.add_record("example.com", "TXT", "_acme-challenge.www", "v1", ttl=30)
    state.add_record("example.com", "A", "_acme-challenge.www", "192.0.2.1")
    state.add_record("example.com", "TXT", "_acme-challenge", "v2", ttl=30)

    async def ids(**params: str) -> list[int]:
        response = await client.get("/v2/domains/example.com/records", params=params)
        assert response.status_code == 200
        return [r["id"] for r in response.json()["domain_records"]]

    assert await ids(type="TXT", name="_acme-challenge.www.example.com") == [wanted.id]
    assert await ids(type="TXT", name="_ACME-challenge.WWW.example.com") == [wanted.id]
    assert await ids(type="TXT", name="_acme-challenge.www") == []
    assert await ids(type="TXT", name="_acme-challenge.www.example.com.") == []
    assert len(await ids(name="_acme-challenge.www.example.com")) == 2
    assert len(await ids(type="TXT")) == 2
    apex = await ids(name="example.com")
    assert len(apex) == 4  # the SOA and NS records a new zone has


async def test_pagination_follows_links_over_250_records(
    client: httpx.AsyncClient, state: StandinState
) -> None:
    state.add_records("example.com", [("A", f"host{i}", f"192.0.2.{i % 250}") for i in range(250)])
    total = 254  # plus SOA and three NS

    first = await client.get("/v2/domains/example.com/records")
    body = first.json()
    assert len(body["domain_records"]) == 20
    assert body["meta"] == {"total": total}
    pages = body["links"]["pages"]
    assert set(pages) == {"next", "last"}
    assert pages["next"].startswith(f"{BASE}/v2/domains/example.com/records?")
    assert httpx.URL(pages["last"]).params["page"] == "13"

    seen: list[int] = []
    url: str | None = "/v2/domains/example.com/records?per_page=100"
    visited = 0
    while url is not None:
        page = (await client.get(url)).json()
        seen += [r["id"] for r in page["domain_records"]]
        visited += 1
        url = page["links"].get("pages", {}).get("next")
        if url is None:
            assert set(page["links"]["pages"]) == {"first", "prev"}
    assert visited == 3
    assert len(seen) == len(set(seen)) == total


async def test_per_page_is_clamped_to_200(client: httpx.AsyncClient, state: StandinState) -> None:
    state.add_records("example.com", [("TXT", f"t{i}", "v") for i in range(250)])
    response = await client.get("/v2/domains/example.com/records?per_page=500")
    body = response.json()
    assert len(body["domain_records"]) == 200
    next_url = httpx.URL(body["links"]["pages"]["next"])
    assert next_url.params["per_page"] == "200"
    assert next_url.params["page"] == "2"
    rest = (await client.get(str(next_url))).json()
    assert len(rest["domain_records"]) == 54


async def test_links_keep_filters(client: httpx.AsyncClient, state: StandinState) -> None:
    state.add_records("example.com", [("TXT", "_acme-challenge", f"v{i}") for i in range(30)])
    state.add_records("example.com", [("A", "_acme-challenge", f"192.0.2.{i}") for i in range(30)])
    params = {"type": "TXT", "name": "_acme-challenge.example.com"}
    first = (await client.get("/v2/domains/example.com/records", params=params)).json()
    assert first["meta"]["total"] == 30
    second = (await client.get(first["links"]["pages"]["next"])).json()
    assert {r["type"] for r in second["domain_records"]} == {"TXT"}
    assert len(second["domain_records"]) == 10
    assert set(second["links"]["pages"]) == {"first", "prev"}


async def test_page_past_the_end_is_empty(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v2/domains/example.com/records?page=9")).json()
    assert body["domain_records"] == []
    assert body["meta"] == {"total": 4}
    assert_do_error(await client.get("/v2/domains/example.com/records?page=x"), 400, "bad_request")


async def test_domains_paginate_too(client: httpx.AsyncClient, state: StandinState) -> None:
    for i in range(24):
        state.add_zone(f"zone{i:02}.test")
    body = (await client.get("/v2/domains")).json()
    assert len(body["domains"]) == 20
    assert body["meta"] == {"total": 25}
    rest = (await client.get(body["links"]["pages"]["next"])).json()
    assert len(rest["domains"]) == 5


@settings(max_examples=25, deadline=None)
@given(count=st.integers(0, 450), per_page=st.integers(-1, 250) | st.sampled_from([1000]))
async def test_following_next_yields_every_record_once(count: int, per_page: int) -> None:
    state = StandinState(rate_limits=RateLimits(per_minute=10**6, per_hour=10**6))
    state.add_zone("example.com", default_records=False)
    state.add_records("example.com", [("TXT", f"r{i}", "v") for i in range(count)])
    app = create_standin_app(state, token=TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers) as c:
        seen: list[int] = []
        url: str | None = f"/v2/domains/example.com/records?per_page={per_page}"
        while url is not None:
            body = (await c.get(url)).json()
            assert body["meta"]["total"] == count
            assert len(body["domain_records"]) <= (min(per_page, 200) if per_page > 0 else 20)
            seen += [r["id"] for r in body["domain_records"]]
            url = body["links"].get("pages", {}).get("next")
    assert sorted(seen) == [r.id for r in state.records("example.com")]
