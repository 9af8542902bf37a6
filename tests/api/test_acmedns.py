"""The acme-dns protocol, row by row of docs/protocols.md section 1."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN, REGISTRATION_TOKEN, Harness, challenge_value

V1, V2, V3 = (challenge_value(n) for n in (1, 2, 3))


async def registered(h: Harness, **kwargs: Any) -> dict[str, Any]:
    response = await h.client.post("/register", **kwargs)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# /register


async def test_register_without_body_answers_the_account_on_one_line(harness: Harness) -> None:
    response = await harness.client.post("/register")
    assert response.status_code == 201
    assert "\n" not in response.text  # acme.sh parses it with sed
    account = response.json()
    assert set(account) == {"username", "password", "fulldomain", "subdomain", "allowfrom"}
    assert str(uuid.UUID(account["username"])) == account["username"]
    assert len(account["password"]) == 40
    assert set(account["password"]) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    )
    assert account["fulldomain"] == f"{account['subdomain']}.acme.example.org"
    assert account["allowfrom"] == []


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"allowfrom": ["192.0.2.0/24", "2001:db8::/32"]}', {"Content-Type": "application/json"}),
        (b'{"allowfrom": ["192.0.2.0/24", "2001:db8::/32"]}', {}),  # certbot hook, pyacmedns
        (b'{"AllowFrom": ["192.0.2.0/24", "[2001:db8::]/32"]}', {}),  # old goacmedns
    ],
)
async def test_register_body_variants(harness: Harness, content: bytes,
                                      headers: dict[str, str]) -> None:
    account = await registered(harness, content=content, headers=headers)
    assert account["allowfrom"] == ["192.0.2.0/24", "2001:db8::/32"]


async def test_register_null_body_means_no_body(harness: Harness) -> None:
    # lego 4.22+ through goacmedns sends the four bytes null and a newline.
    account = await registered(harness, content=b"null\n",
                               headers={"Content-Type": "application/json"})
    assert account["allowfrom"] == []


async def test_register_accepts_a_bare_address_as_one_host(harness: Harness) -> None:
    account = await registered(harness, json={"allowfrom": ["192.0.2.7", "2001:db8::1"]})
    assert account["allowfrom"] == ["192.0.2.7/32", "2001:db8::1/128"]


@pytest.mark.parametrize(
    "allowfrom",
    [["not-a-cidr"], ["192.0.2.1/24"], ["300.0.0.0/8"], "192.0.2.0/24", [42], ["1.2.3.4/33"]],
)
async def test_register_refuses_invalid_cidrs(harness: Harness, allowfrom: object) -> None:
    response = await harness.client.post("/register", json={"allowfrom": allowfrom})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_allowfrom_cidr"}
    assert harness.do_calls() == 0


@pytest.mark.parametrize("content", [b"{", b"[1]", b'"x"', b"\xff\xfe", b"{" * 5000 + b"}" * 5000])
async def test_register_refuses_malformed_json(harness: Harness, content: bytes) -> None:
    response = await harness.client.post("/register", content=content)
    assert response.status_code == 400
    assert response.json() == {"error": "malformed_json_payload"}


async def test_register_ignores_attempts_to_choose_a_name(harness: Harness) -> None:
    account = await registered(harness, json={"subdomain": "www", "fulldomain": "example.com"})
    assert account["fulldomain"].endswith(".acme.example.org")
    assert account["subdomain"] != "www"


async def test_register_closed_by_default(harness_factory: Any) -> None:
    async with harness_factory(registration="closed") as h:
        response = await h.client.post("/register")
        assert response.status_code == 403
        assert response.json() == {"error": "registration_closed"}


def _basic(password: str) -> dict[str, str]:
    # Go clients put credentials in the URL: https://x:TOKEN@host sends Basic.
    return {"Authorization": "Basic " + base64.b64encode(f"lego:{password}".encode()).decode()}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 403),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"Authorization": f"Bearer {REGISTRATION_TOKEN}"}, 201),
        (_basic(REGISTRATION_TOKEN), 201),
        # The admin token issues credentials for any name in any zone; clients store the
        # /register URL in their account files, so it must not open /register.
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, 403),
        (_basic(ADMIN_TOKEN), 403),
        ({"Authorization": f"Bearer {REGISTRATION_TOKEN}x"}, 403),
        (_basic(REGISTRATION_TOKEN[:-1]), 403),
    ],
    ids=["none", "wrong", "bearer", "basic", "admin-bearer", "admin-basic", "longer",
         "shorter"],
)
async def test_register_token_mode(harness_factory: Any, headers: dict[str, str],
                                   status: int) -> None:
    async with harness_factory(registration="token") as h:
        response = await h.client.post("/register", headers=headers)
        assert response.status_code == status, response.text


async def test_the_registration_token_opens_nothing_else(harness_factory: Any) -> None:
    async with harness_factory(registration="token") as h:
        for bearer in ({"Authorization": f"Bearer {REGISTRATION_TOKEN}"},
                       _basic(REGISTRATION_TOKEN)):
            assert (await h.client.get("/admin/accounts", headers=bearer)).status_code == 401
            assert (await h.client.post("/admin/accounts", headers=bearer, json={
                "domain": "www.example.com"})).status_code == 401


# /update


async def test_update_puts_the_value_and_answers_it(harness: Harness) -> None:
    account = await registered(harness)
    before = harness.snapshot()
    response = await harness.update(account, V1)
    assert response.status_code == 200
    assert response.json() == {"txt": V1}
    assert f'"{V1}"' in response.text  # acme.sh's success test
    assert harness.txt_at(account["fulldomain"]) == [V1]
    added = harness.snapshot() - before
    label = account["fulldomain"].removesuffix(".example.org")
    assert added == {("example.org", "TXT", label, V1)}


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        ('{{"subdomain": "{sub}", "txt": "{txt}"}}', "application/json"),
        ('{{"subdomain": "{sub}", "txt": "{txt}"}}', "application/x-www-form-urlencoded"),  # acme.sh
        ('{{"SubDomain": "{sub}", "Txt": "{txt}"}}', "application/json"),  # old goacmedns
        ('{{"subdomain": "{sub}", "txt": "{txt}"}}', None),
    ],
)
async def test_update_body_tolerances(harness: Harness, content: str,
                                      content_type: str | None) -> None:
    account = await registered(harness)
    headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
    if content_type:
        headers["Content-Type"] = content_type
    body = content.format(sub=account["subdomain"], txt=V1).encode()
    response = await harness.client.post("/update", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert harness.txt_at(account["fulldomain"]) == [V1]


@pytest.mark.parametrize("path", ["//update", "/update/", "//update/", "///update"])
async def test_update_path_tolerance(harness: Harness, path: str) -> None:
    account = await registered(harness)
    response = await harness.client.post(
        "http://acme.test" + path,  # absolute: httpx reads "//update" as a host
        json={"subdomain": account["subdomain"], "txt": V1},
        headers={"X-Api-User": account["username"], "X-Api-Key": account["password"]},
    )
    assert response.status_code == 200
    assert harness.txt_at(account["fulldomain"]) == [V1]


@pytest.mark.parametrize("path", ["//register", "/register/"])
async def test_register_path_tolerance(harness: Harness, path: str) -> None:
    response = await harness.client.post("http://acme.test" + path)
    assert response.status_code == 201


def _forbidden_cases() -> list[tuple[str, Any]]:
    def unknown_user(a: dict[str, Any]) -> dict[str, Any]:
        return {"headers": {"X-Api-User": str(uuid.uuid4()), "X-Api-Key": a["password"]}}

    return [
        ("unknown user", unknown_user),
        ("malformed user", lambda a: {"headers": {"X-Api-User": "../etc", "X-Api-Key": a["password"]}}),
        ("missing user", lambda a: {"headers": {"X-Api-Key": a["password"]}}),
        ("missing key", lambda a: {"headers": {"X-Api-User": a["username"]}}),
        ("wrong key", lambda a: {"headers": {"X-Api-User": a["username"],
                                             "X-Api-Key": "x" * 40}}),
        ("malformed key", lambda a: {"headers": {"X-Api-User": a["username"],
                                                 "X-Api-Key": a["password"][:-1]}}),
        ("key of another case", lambda a: {"headers": {"X-Api-User": a["username"],
                                                       "X-Api-Key": a["password"].swapcase()}}),
        ("undecodable body", lambda a: {"content": b"{nope", "headers": {
            "X-Api-User": a["username"], "X-Api-Key": a["password"]}}),
        ("other subdomain", lambda a: {"json": {"subdomain": str(uuid.uuid4()), "txt": V1},
                                       "headers": {"X-Api-User": a["username"],
                                                   "X-Api-Key": a["password"]}}),
        ("missing subdomain", lambda a: {"json": {"txt": V1}, "headers": {
            "X-Api-User": a["username"], "X-Api-Key": a["password"]}}),
    ]


@pytest.mark.parametrize(("case", "build"), [pytest.param(*c, id=c[0]) for c in _forbidden_cases()])
async def test_update_authentication_failures_all_look_alike(harness: Harness, case: str,
                                                              build: Any) -> None:
    account = await registered(harness)
    kwargs = build(account)
    kwargs.setdefault("json", {"subdomain": account["subdomain"], "txt": V1})
    if "content" in kwargs:
        kwargs.pop("json")
    calls = harness.do_calls()
    response = await harness.client.post("/update", **kwargs)
    assert response.status_code == 401, case
    assert response.json() == {"error": "forbidden"}
    assert harness.do_calls() == calls
    assert harness.txt_at(account["fulldomain"]) == []


async def test_update_refuses_an_address_outside_allowfrom(harness_factory: Any) -> None:
    async with harness_factory(client_ip="198.51.100.9") as h:
        account = await registered(h, json={"allowfrom": ["192.0.2.0/24"]})
        response = await h.update(account, V1)
        assert response.status_code == 401
        assert response.json() == {"error": "forbidden"}
    async with harness_factory(client_ip="192.0.2.55") as h:
        # Same database, a client inside the network.
        response = await h.update(account, V1)
        assert response.status_code == 200


@pytest.mark.parametrize(
    "txt",
    ["", "short", V1[:-1], V1 + "A", V1[:-1] + "=", V1[:-1] + " ", V1[:-1] + "é", None, 42,
     ["x"], "\"; rm -rf /\"" + "a" * 31],
)
async def test_update_refuses_values_that_are_not_challenge_values(harness: Harness,
                                                                   txt: object) -> None:
    account = await registered(harness)
    response = await harness.client.post(
        "/update",
        json={"subdomain": account["subdomain"], "txt": txt},
        headers={"X-Api-User": account["username"], "X-Api-Key": account["password"]},
    )
    assert response.status_code == 400
    assert response.json() == {"error": "bad_txt"}
    assert harness.txt_at(account["fulldomain"]) == []


async def test_rolling_window_keeps_the_two_newest(harness: Harness) -> None:
    account = await registered(harness)
    for value in (V1, V2, V3):
        assert (await harness.update(account, value)).status_code == 200
    assert harness.txt_at(account["fulldomain"]) == sorted([V2, V3])


async def test_repeating_a_live_value_calls_digitalocean_not_at_all(harness: Harness) -> None:
    account = await registered(harness)
    await harness.update(account, V1)
    await harness.update(account, V2)
    calls = harness.do_calls()
    response = await harness.update(account, V1)
    assert response.status_code == 200
    assert harness.do_calls() == calls
    # The repeat made V1 the newest again: the next value evicts V2.
    await harness.update(account, V3)
    assert harness.txt_at(account["fulldomain"]) == sorted([V1, V3])


async def test_apex_and_wildcard_at_the_same_instant_both_end_live(harness: Harness) -> None:
    account = await registered(harness)
    harness.do.update_faults(latency_ms=50)
    first, second = await asyncio.gather(harness.update(account, V1), harness.update(account, V2))
    assert (first.status_code, second.status_code) == (200, 200)
    assert harness.txt_at(account["fulldomain"]) == sorted([V1, V2])


async def test_many_concurrent_updates_never_exceed_the_window(harness: Harness) -> None:
    account = await registered(harness)
    harness.do.update_faults(latency_ms=5)
    many = [challenge_value(100 + n) for n in range(8)]
    results = await asyncio.gather(*(harness.update(account, v) for v in many))
    assert all(r.status_code == 200 for r in results)
    live = harness.txt_at(account["fulldomain"])
    assert len(live) == 2
    assert set(live) <= set(many)


async def test_max_values_per_name_is_configurable(harness_factory: Any) -> None:
    async with harness_factory(max_values_per_name=3) as h:
        account = await registered(h)
        for n in range(5):
            await h.update(account, challenge_value(n))
        assert h.txt_at(account["fulldomain"]) == sorted(challenge_value(n) for n in (2, 3, 4))


# DigitalOcean failing


async def test_digitalocean_failing_on_create_answers_503_and_leaves_nothing(
    harness: Harness,
) -> None:
    account = await registered(harness)
    await harness.update(account, V1)
    # The create answers 500 (it may have happened); the look-up that follows finds nothing.
    harness.do.update_faults(methods=["POST"], error_next=10)
    response = await harness.update(account, V2)
    assert response.status_code == 503
    assert response.json() == {"error": "dns_provider_unavailable"}
    assert response.headers["retry-after"].isdigit()
    harness.do.update_faults(error_next=0)
    assert harness.txt_at(account["fulldomain"]) == [V1]
    rows = await harness.services.store.values_at(account["fulldomain"])
    assert [(r.value, r.state.value) for r in rows] == [(V1, "live")]


async def test_a_write_that_succeeds_but_answers_500_is_adopted(harness: Harness) -> None:
    account = await registered(harness)
    harness.do.update_faults(ghost_next=1)
    response = await harness.update(account, V1)
    assert response.status_code == 200
    assert harness.txt_at(account["fulldomain"]) == [V1]
    rows = await harness.services.store.values_at(account["fulldomain"])
    assert len(rows) == 1 and rows[0].state.value == "live"
    assert rows[0].record_id == harness.do.find_records(account["fulldomain"], "TXT")[0].id


async def test_unknown_outcome_leaves_a_pending_row_for_the_reconciler(harness: Harness) -> None:
    account = await registered(harness)
    # The create reaches DigitalOcean but answers 500, and the look-up fails too.
    harness.do.update_faults(ghost_next=1, methods=["GET"], error_next=10)
    response = await harness.update(account, V1)
    assert response.status_code == 503
    harness.do.update_faults(error_next=0)
    rows = await harness.services.store.values_at(account["fulldomain"])
    assert [(r.value, r.state.value, r.record_id) for r in rows] == [(V1, "pending", None)]
    # The ghost exists; the database says where to look for it.
    assert harness.txt_at(account["fulldomain"]) == [V1]


async def test_failed_eviction_keeps_the_new_value_and_marks_the_old_for_deletion(
    harness: Harness,
) -> None:
    # Create + evict is the path of a token without domain:update.
    account = await registered(harness)
    await harness.update(account, V1)
    await harness.update(account, V2)
    harness.do.update_faults(methods=["DELETE"], error_next=10, forbidden_methods=["PUT"])
    response = await harness.update(account, V3)
    assert response.status_code == 200
    harness.do.update_faults(error_next=0)
    rows = {r.value: r.state.value for r in await harness.services.store.values_at(
        account["fulldomain"])}
    assert rows == {V1: "deleting", V2: "live", V3: "live"}


# /health


async def test_health_checks_the_database(harness: Harness) -> None:
    response = await harness.client.get("/health")
    assert response.status_code == 200
    await harness.services.engine.dispose()
    harness.services.engine.url  # noqa: B018 - the engine object stays, its pool is gone
    assert (await harness.client.get("/health")).status_code == 200  # reconnects


async def test_health_tells_the_truth_when_the_database_is_gone(harness_factory: Any,
                                                                tmp_path: Any) -> None:
    async with harness_factory() as h:
        await h.client.get("/health")
        from app.db.engine import create_engine
        from app.db.store import SqlStore

        broken = create_engine("postgresql://nobody@127.0.0.1:1/none")
        h.services.store = SqlStore(broken)
        response = await h.client.get("/health")
        assert response.status_code == 503
        assert response.json() == {"error": "database_unavailable"}
        await broken.dispose()


async def test_errors_are_json_everywhere(harness: Harness) -> None:
    for method, path in [("GET", "/nope"), ("GET", "/update"), ("PUT", "/register")]:
        response = await harness.client.request(method, path)
        assert response.status_code in (404, 405)
        assert set(json.loads(response.text)) == {"error"}


async def test_recovery_finds_the_ghost_on_a_later_page(harness: Harness) -> None:
    """A zone with more than 200 records, 230 of them at our very name (someone else's):
    the look-up after a lost answer pages through all of them and adopts only ours."""
    account = await registered(harness)
    label = account["fulldomain"].removesuffix(".example.org")
    harness.do.add_records("example.org", [("TXT", label, challenge_value(5000 + n))
                                           for n in range(230)])
    harness.do.add_records("example.org", [("TXT", f"other{n}", "x") for n in range(50)])
    harness.do.update_faults(ghost_next=1)
    response = await harness.update(account, V1)
    assert response.status_code == 200
    rows = await harness.services.store.values_at(account["fulldomain"])
    ours = [r for r in harness.do.find_records(account["fulldomain"], "TXT") if r.data == V1]
    assert [(r.state.value, r.record_id) for r in rows] == [("live", ours[0].id)]
    record_lists = [e for e in harness.do.requests()
                    if e.method == "GET" and e.path.endswith("/records")]
    assert len(record_lists) == 2  # 231 records at the name: two pages of 200
    assert len(harness.txt_at(account["fulldomain"])) == 231  # nothing of theirs touched


async def test_liveness_needs_no_database_and_readiness_does(harness_factory: Any) -> None:
    """/livez: the process answers (a liveness probe must not restart pods for a database
    outage); /readyz: the database answers, else a JSON 503 with Retry-After."""
    async with harness_factory() as h:
        assert (await h.client.get("/livez")).json() == {"status": "ok"}
        assert (await h.client.get("/readyz")).json() == {"status": "ok"}
        from app.db.engine import create_engine
        from app.db.store import SqlStore

        broken = create_engine("postgresql://nobody@127.0.0.1:1/none")
        h.services.store = SqlStore(broken)
        live = await h.client.get("/livez")
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
        ready = await h.client.get("/readyz")
        assert (ready.status_code, ready.json()) == (503, {"error": "database_unavailable"})
        assert int(ready.headers["retry-after"]) >= 1
        assert (await h.client.get("/health")).status_code == 503
        await broken.dispose()
