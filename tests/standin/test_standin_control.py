"""The unauthenticated /_standin/ control endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.standin import StandinState, create_standin_app

from .support import BASE, TOKEN, FakeClock


@pytest.fixture
async def control(state: StandinState) -> AsyncIterator[httpx.AsyncClient]:
    """A client without the API token: control endpoints must not need it."""
    app = create_standin_app(state, token=TOKEN)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
        yield c


async def test_request_log_and_counts(
    client: httpx.AsyncClient, control: httpx.AsyncClient, clock: FakeClock
) -> None:
    await client.get("/v2/domains")
    await client.get("/v2/domains/example.com/records", params={"type": "TXT"})
    clock.advance(30)
    await client.delete("/v2/domains/example.com/records/1")
    clock.advance(45)
    await client.get("/v2/domains")
    await control.get("/_standin/faults")  # control calls are not logged

    body = (await control.get("/_standin/requests")).json()
    assert body["total"] == 4
    assert body["last_minute"] == 2
    assert body["max_per_minute"] == 3
    first, second, third, _ = body["requests"]
    assert (first["method"], first["path"], first["status"]) == ("GET", "/v2/domains", 200)
    assert second["query"] == "type=TXT"
    assert (third["method"], third["status"]) == ("DELETE", 404)
    assert third["wall"] == clock.wall - 45
    assert third["monotonic"] - first["monotonic"] == 30

    assert (await control.delete("/_standin/requests")).status_code == 204
    assert (await control.get("/_standin/requests")).json()["total"] == 0


async def test_faults_put_replaces_post_merges(
    control: httpx.AsyncClient, client: httpx.AsyncClient, state: StandinState
) -> None:
    put = await control.put("/_standin/faults", json={"error_next": 1, "methods": ["POST"]})
    assert put.status_code == 200
    assert put.json()["error_next"] == 1
    merged = (await control.post("/_standin/faults", json={"latency_ms": 5})).json()
    assert merged["methods"] == ["POST"] and merged["error_next"] == 1 and merged["latency_ms"] == 5
    replaced = (await control.put("/_standin/faults", json={"ghost_next": 1})).json()
    assert replaced["methods"] is None and replaced["error_next"] == 0
    assert (await control.get("/_standin/faults")).json() == replaced

    assert (await control.put("/_standin/faults", json={"fail_next": 1})).status_code == 400
    assert (await control.post("/_standin/faults", json={"error_next": -1})).status_code == 400
    assert (await control.post("/_standin/faults", content=b"[]")).status_code == 400

    response = await client.post(
        "/v2/domains/example.com/records", json={"type": "TXT", "name": "a", "data": "v"}
    )
    assert response.status_code == 500  # the ghost fault set through the endpoint fires
    assert len(state.find_records("a.example.com")) == 1


async def test_rate_limits_endpoint(control: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    response = await control.put("/_standin/ratelimit", json={"per_minute": 1, "per_hour": 9})
    assert response.json() == {"per_minute": 1, "per_hour": 9}
    assert (await control.get("/_standin/ratelimit")).json() == response.json()
    assert (await client.get("/v2/domains")).headers["ratelimit-limit"] == "9"
    assert (await client.get("/v2/domains")).status_code == 429
    assert (await control.put("/_standin/ratelimit", json={"per_minute": 0})).status_code == 400


async def test_add_zone(control: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    created = await control.post("/_standin/zones", json={"name": "Example.ORG.", "ttl": 3600})
    assert created.status_code == 201
    assert created.json() == {"name": "example.org", "ttl": 3600}
    assert (await control.post("/_standin/zones", json={"name": "example.org"})).status_code == 409
    assert (await control.post("/_standin/zones", json={})).status_code == 400
    names = [z["name"] for z in (await control.get("/_standin/zones")).json()["zones"]]
    assert names == ["example.com", "example.org"]
    listed = (await client.get("/v2/domains")).json()["domains"]
    assert [d["name"] for d in listed] == ["example.com", "example.org"]
    records = (await client.get("/v2/domains/example.org/records")).json()
    assert records["meta"]["total"] == 4


async def test_records_behind_the_api(
    control: httpx.AsyncClient, client: httpx.AsyncClient, state: StandinState
) -> None:
    body = {
        "zone": "example.com",
        "type": "CNAME",
        "name": "_acme-challenge.www.example.com.",
        "data": "abc.acme.example.org.",
        "ttl": 5,  # below the API's floor: the control surface does not police it
    }
    created = await control.post("/_standin/records", json=body)
    assert created.status_code == 201
    record = created.json()
    assert record["name"] == "_acme-challenge.www"
    assert record["ttl"] == 5
    via_api = await client.get(
        "/v2/domains/example.com/records",
        params={"type": "CNAME", "name": "_acme-challenge.www.example.com"},
    )
    assert [r["id"] for r in via_api.json()["domain_records"]] == [record["id"]]

    everything = (await control.get("/_standin/records")).json()["records"]
    mine = [r for r in everything if r["id"] == record["id"]]
    assert mine[0]["fqdn"] == "_acme-challenge.www.example.com"
    assert mine[0]["zone"] == "example.com"

    assert (await control.delete(f"/_standin/records/{record['id']}")).status_code == 204
    assert state.get_record("example.com", record["id"]) is None
    assert (await control.delete(f"/_standin/records/{record['id']}")).status_code == 404

    unknown = {**body, "zone": "nowhere.test"}
    assert (await control.post("/_standin/records", json=unknown)).status_code == 400
    assert (
        await control.post("/_standin/records", json={"zone": "example.com"})
    ).status_code == 400


async def test_reset(
    control: httpx.AsyncClient, client: httpx.AsyncClient, state: StandinState
) -> None:
    state.add_record("example.com", "TXT", "x", "v")
    state.add_zone("example.org")
    state.update_faults(error_next=5)
    await client.get("/v2/domains")
    last_id = state.all_records()[-1].id

    assert (await control.post("/_standin/reset")).status_code == 204
    assert [z.name for z in state.zones()] == ["example.com", "example.org"]
    assert [r.type for r in state.records("example.com")] == ["SOA", "NS", "NS", "NS"]
    assert state.requests() == []
    assert state.faults.error_next == 0
    assert min(r.id for r in state.all_records()) > last_id, "ids are never reused"

    await control.post("/_standin/reset", json={"zones": ["only.test"]})
    assert [z.name for z in state.zones()] == ["only.test"]
