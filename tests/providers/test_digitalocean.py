"""The DigitalOcean client against respx: exact requests, traps, retries, errors."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from app.errors import ProviderAuthError, ProviderFailed, ProviderRejected
from app.providers.digitalocean import DigitalOceanClient

TOKEN = "dop_v1_" + "f" * 64
BASE = "https://api.example.test"
VALUE = "a" * 43


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def client() -> DigitalOceanClient:
    return DigitalOceanClient(http=httpx.AsyncClient(), token=TOKEN, base_url=BASE,
                              sleep=Sleeps())


def record(rid: int, name: str, data: str = VALUE) -> dict[str, object]:
    return {"id": rid, "type": "TXT", "name": name, "data": data, "priority": None,
            "port": None, "ttl": 30, "weight": None, "flags": None, "tag": None}


@respx.mock
async def test_create_sends_a_relative_name_never_a_dotless_fqdn(client: DigitalOceanClient
                                                                 ) -> None:
    route = respx.post(f"{BASE}/v2/domains/example.com/records").respond(
        201, json={"domain_record": record(7, "_acme-challenge.www")})
    result = await client.create_txt("example.com", "_acme-challenge.www.example.com", VALUE, 30)
    assert result.id == 7
    request = route.calls.last.request
    assert json.loads(request.content) == {
        "type": "TXT", "name": "_acme-challenge.www", "data": VALUE, "ttl": 30}
    assert request.headers["authorization"] == f"Bearer {TOKEN}"


@respx.mock
async def test_create_at_the_zone_apex_uses_at(client: DigitalOceanClient) -> None:
    route = respx.post(f"{BASE}/v2/domains/acme.example.org/records").respond(
        201, json={"domain_record": record(8, "@")})
    await client.create_txt("acme.example.org", "acme.example.org", VALUE, 30)
    assert json.loads(route.calls.last.request.content)["name"] == "@"


@respx.mock
async def test_refuses_names_outside_the_zone_before_any_request(client: DigitalOceanClient
                                                                 ) -> None:
    for name in ("example.com.evil.test", "notexample.com", "com"):
        with pytest.raises(ProviderRejected):
            await client.create_txt("example.com", name, VALUE, 30)
    assert client.calls == 0


@respx.mock
async def test_find_txt_filters_by_fqdn_and_pages_by_200(client: DigitalOceanClient) -> None:
    name = "_acme-challenge.www.example.com"
    pages = {
        "1": [record(i, "_acme-challenge.www") for i in range(200)],
        "2": [record(200 + i, "_acme-challenge.www") for i in range(200)],
        "3": [record(400 + i, "_acme-challenge.www") for i in range(50)],
    }

    def respond(request: httpx.Request) -> httpx.Response:
        page = request.url.params["page"]
        links = {"pages": {"next": "https://elsewhere.test/steal?page=x"}} if page != "3" else {}
        return httpx.Response(200, json={"domain_records": pages[page], "links": links,
                                         "meta": {"total": 450}})

    route = respx.get(f"{BASE}/v2/domains/example.com/records").mock(side_effect=respond)
    found = await client.find_txt("example.com", name)
    assert len(found) == 450
    for call in route.calls:
        params = call.request.url.params
        assert params["name"] == name  # fully qualified, no trailing dot
        assert params["type"] == "TXT"
        assert params["per_page"] == "200"
    # The next link pointed elsewhere; we paged by number on our own host.
    assert {c.request.url.host for c in route.calls} == {"api.example.test"}
    assert [c.request.url.params["page"] for c in route.calls] == ["1", "2", "3"]


@respx.mock
async def test_list_zones_follows_pagination(client: DigitalOceanClient) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        zones = [{"name": f"z{page}-{i}.test", "ttl": 1800, "zone_file": ""} for i in range(200)]
        links = {"pages": {"next": "x"}} if page < 2 else {}
        return httpx.Response(200, json={"domains": zones if page <= 2 else [], "links": links})

    respx.get(f"{BASE}/v2/domains").mock(side_effect=respond)
    zones = await client.list_zones()
    assert len(zones) == 400


@respx.mock
async def test_429_waits_as_told_then_succeeds() -> None:
    sleeps = Sleeps()
    client = DigitalOceanClient(http=httpx.AsyncClient(), token=TOKEN, base_url=BASE, sleep=sleeps)
    respx.delete(f"{BASE}/v2/domains/example.com/records/5").mock(side_effect=[
        httpx.Response(429, headers={"retry-after": "3"},
                       json={"id": "too_many_requests", "message": "API Rate limit exceeded."}),
        httpx.Response(204),
    ])
    await client.delete_record("example.com", 5)
    assert sleeps.waits == [3.0]


@respx.mock
async def test_429_uses_ratelimit_reset_when_there_is_no_retry_after() -> None:
    import time

    sleeps = Sleeps()
    client = DigitalOceanClient(http=httpx.AsyncClient(), token=TOKEN, base_url=BASE, sleep=sleeps)
    reset = int(time.time()) + 5
    respx.get(f"{BASE}/v2/domains").mock(side_effect=[
        httpx.Response(429, headers={"RateLimit-Reset": str(reset)}, json={}),
        httpx.Response(200, json={"domains": [], "links": {}}),
    ])
    await client.list_zones()
    assert len(sleeps.waits) == 1 and 3 <= sleeps.waits[0] <= 5


@respx.mock
async def test_429_beyond_the_bounded_wait_fails_with_a_hint() -> None:
    client = DigitalOceanClient(http=httpx.AsyncClient(), token=TOKEN, base_url=BASE,
                                sleep=Sleeps(), max_wait=5)
    respx.post(f"{BASE}/v2/domains/example.com/records").respond(
        429, headers={"retry-after": "40"}, json={"id": "too_many_requests"})
    with pytest.raises(ProviderFailed) as caught:
        await client.create_txt("example.com", "_acme-challenge.example.com", VALUE, 30)
    assert caught.value.retry_after == 40
    assert caught.value.ambiguous is False  # a 429 was not processed


@respx.mock
async def test_5xx_on_reads_is_retried_a_bounded_number_of_times(client: DigitalOceanClient
                                                                ) -> None:
    route = respx.get(f"{BASE}/v2/domains").respond(503, json={"id": "server_error"})
    with pytest.raises(ProviderFailed):
        await client.list_zones()
    assert route.call_count == 4


@respx.mock
async def test_5xx_on_create_is_not_repeated_and_is_ambiguous(client: DigitalOceanClient
                                                             ) -> None:
    route = respx.post(f"{BASE}/v2/domains/example.com/records").respond(
        500, json={"id": "server_error"})
    with pytest.raises(ProviderFailed) as caught:
        await client.create_txt("example.com", "_acme-challenge.example.com", VALUE, 30)
    assert route.call_count == 1
    assert caught.value.ambiguous is True


@respx.mock
async def test_read_timeout_on_create_is_ambiguous(client: DigitalOceanClient) -> None:
    respx.post(f"{BASE}/v2/domains/example.com/records").mock(
        side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderFailed) as caught:
        await client.create_txt("example.com", "_acme-challenge.example.com", VALUE, 30)
    assert caught.value.ambiguous is True


@respx.mock
async def test_connect_error_on_create_is_retried_safely(client: DigitalOceanClient) -> None:
    route = respx.post(f"{BASE}/v2/domains/example.com/records").mock(side_effect=[
        httpx.ConnectError("refused"),
        httpx.Response(201, json={"domain_record": record(9, "_acme-challenge")}),
    ])
    result = await client.create_txt("example.com", "_acme-challenge.example.com", VALUE, 30)
    assert result.id == 9 and route.call_count == 2


@respx.mock
async def test_delete_of_a_record_already_gone_is_success(client: DigitalOceanClient) -> None:
    respx.delete(f"{BASE}/v2/domains/example.com/records/5").respond(
        404, json={"id": "not_found", "message": "The resource you were accessing could not be found."})
    await client.delete_record("example.com", 5)


@respx.mock
@pytest.mark.parametrize("status", [401, 403])
async def test_auth_errors_never_carry_the_token(client: DigitalOceanClient, status: int) -> None:
    respx.get(f"{BASE}/v2/domains").respond(
        status, json={"id": "unauthorized", "message": f"bad token {TOKEN}"})
    with pytest.raises(ProviderAuthError) as caught:
        await client.list_zones()
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value.args)


@respx.mock
async def test_422_is_a_rejection_not_a_retry(client: DigitalOceanClient) -> None:
    route = respx.post(f"{BASE}/v2/domains/example.com/records").respond(
        422, json={"id": "unprocessable_entity", "message": "ttl"})
    with pytest.raises(ProviderRejected) as caught:
        await client.create_txt("example.com", "_acme-challenge.example.com", VALUE, 30)
    assert route.call_count == 1 and caught.value.status == 422
    assert caught.value.ambiguous is False


@respx.mock
async def test_a_create_answering_another_record_is_not_trusted(client: DigitalOceanClient
                                                               ) -> None:
    respx.post(f"{BASE}/v2/domains/example.com/records").respond(
        201, json={"domain_record": record(9, "_acme-challenge", data="b" * 43)})
    with pytest.raises(ProviderFailed) as caught:
        await client.create_txt("example.com", "_acme-challenge.example.com", VALUE, 30)
    assert caught.value.ambiguous is True


@respx.mock
async def test_non_json_answers_are_errors(client: DigitalOceanClient) -> None:
    respx.get(f"{BASE}/v2/domains").respond(200, text="<html>")
    with pytest.raises(ProviderFailed):
        await client.list_zones()


@respx.mock
async def test_the_writer_refuses_names_no_account_can_have() -> None:
    from app.core.names import bindable

    client = DigitalOceanClient(http=httpx.AsyncClient(), token=TOKEN, base_url=BASE,
                                sleep=Sleeps(),
                                may_write=lambda name: bindable(name, "acme.example.com"))
    route = respx.post(f"{BASE}/v2/domains/example.com/records").respond(
        201, json={"domain_record": record(1, "_acme-challenge.www")})
    for name in ("www.example.com", "example.com", "mx.acme.example.com.example.com",
                 "a.b.acme.example.com", "x.example.com"):
        with pytest.raises(ProviderRejected):
            await client.create_txt("example.com", name, VALUE, 30)
    assert route.call_count == 0
    await client.create_txt("example.com", "_acme-challenge.www.example.com", VALUE, 30)
    await client.create_txt("example.com", "4f1c2e.acme.example.com", VALUE, 30)
    assert route.call_count == 2


@respx.mock
async def test_each_request_s_slot_is_stamped_once_it_is_over() -> None:
    """The slot a request took counts from when DigitalOcean answered it (the budget's
    ``answered``), answered or failed, each retry's slot its own."""
    from app.pacing.budget import RateBudget

    class Recording(RateBudget):
        over: list[int | None]

        def answered(self, slot: int | None) -> None:
            self.over.append(slot)
            super().answered(slot)

    budget = Recording(per_minute=100, per_hour=1000)
    budget.over = []
    client = DigitalOceanClient(http=httpx.AsyncClient(), token=TOKEN, base_url=BASE,
                                sleep=Sleeps(), budget=budget)
    respx.delete(f"{BASE}/v2/domains/example.com/records/5").mock(side_effect=[
        httpx.ConnectError("refused"), httpx.Response(204)])
    await client.delete_record("example.com", 5)
    assert budget.over == [1, 2]
