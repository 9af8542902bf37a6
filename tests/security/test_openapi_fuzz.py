"""Schemathesis against the app's own OpenAPI schema, in-process.

The schema is the running app's ``/openapi.json``; schemathesis (v4) generates cases
from it (``APIOperation.as_strategy``, positive and negative data; hypothesis,
derandomized, at most ``MAX_EXAMPLES`` per operation and mode), and each case is sent
through the ``harness``-style app with its lifespan running, over httpx's ASGI
transport, with the admin token for /admin routes and without it.
``Case.validate_response`` runs schemathesis' own checks on the httpx response. Every
failing case is collected (with its curl command) and reported together.

Two properties per operation:

- robustness: never a 5xx; every error is ``{"error": "<code>"}`` as JSON; no traceback;
  the zones' unrelated records never change;
- conformance: the status code, content type, headers and body are the ones the schema
  documents for the operation.

A third test documents the protocol routes' bodies and headers (which the app's schema
leaves out: they are parsed by hand, whatever the Content-Type) from
/work/shared/docs/protocols.md and fuzzes them with a real credential.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.config import Settings
from app.main import create_app
from tests.conftest import ADMIN_TOKEN, challenge_value
from tests.security.support import AppHarness, error_code

MAX_EXAMPLES = 30
BASE_URL = "http://acme.test"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _schema_at_collection() -> dict[str, Any]:
    """The operations, known at collection time for test ids (the tests themselves load
    the running app's /openapi.json)."""
    unused = Settings.model_construct(database_url="sqlite:///unused.sqlite3",
                                      do_token=None, admin_token=None)
    return create_app(unused).openapi()


def _constrained(parameter: dict[str, Any]) -> bool:
    """Whether some value of the parameter is invalid (else negative data cannot exist:
    any string is a valid path segment, header or optional query value)."""
    schema = {k: v for k, v in parameter.get("schema", {}).items()
              if k not in ("title", "description", "examples", "example")}
    return schema != {"type": "string"}


def _operations() -> list[tuple[str, str, bool]]:
    """(label, path, whether negative data exists) for every operation."""
    found = []
    for path, item in _schema_at_collection()["paths"].items():
        for method, operation in item.items():
            if method.upper() not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                continue
            body = operation.get("requestBody", {}).get("content", {}).values()
            # A body documented by example only (the protocol routes) has no invalid form.
            negatable = any("schema" in c for c in body) or any(
                _constrained(p) for p in operation.get("parameters", []))
            found.append((f"{method.upper()} {path}", path, negatable))
    return found


OPERATIONS = _operations()


def _params() -> list[Any]:
    params = []
    for label, path, negatable in OPERATIONS:
        for auth in (("admin", "none") if path.startswith("/admin") else ("none",)):
            for mode in (("positive", "negative") if negatable else ("positive",)):
                params.append(pytest.param(label, auth, mode, id=f"{label}-{auth}-{mode}"))
    return params


PARAMS = _params()


@dataclass
class Fuzz:
    h: AppHarness
    schema: Any
    account: dict[str, Any]
    unrelated: set[tuple[str, str, str, str]]

    def operation(self, label: str) -> Any:
        found = self.schema.find_operation_by_label(label)
        assert found is not None, f"{label} is not in /openapi.json"
        return found


@pytest.fixture
async def fuzz(sec_factory: Callable[..., Any]) -> AsyncIterator[Fuzz]:
    async with sec_factory() as h:
        served = await h.client.get("/openapi.json")
        assert served.status_code == 200
        schema = schemathesis.openapi.from_dict(served.json())
        account = await h.create_account(domain="www.example.com")
        unrelated = {r for r in h.snapshot() if r[1] != "TXT" or r[2] == "@"}
        yield Fuzz(h, schema, account, unrelated)


def generate(strategy: st.SearchStrategy[Any], n: int = MAX_EXAMPLES) -> list[Any]:
    """Up to ``n`` examples of ``strategy``, the same ones on every run."""
    found: list[Any] = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(example: Any) -> None:
        found.append(example)

    try:
        collect()
    except Unsatisfiable as exc:
        # Operations whose every input is valid get no negative run at all (_params);
        # any other Unsatisfiable means a part of the schema goes untested.
        pytest.fail(f"schemathesis could not generate data: {exc}")
    return found


def cases_for(fuzz: Fuzz, label: str, mode: str) -> list[Any]:
    operation = fuzz.operation(label)
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    strategy = operation.as_strategy(generation_mode=generation)
    if "{username}" in label and mode == "positive":
        # A real account as well, so the fuzzer reaches past account_not_found.
        strategy = st.one_of(strategy, operation.as_strategy(
            generation_mode=generation, path_parameters={"username": fuzz.account["username"]}))
    cases = generate(strategy)
    if not cases:
        pytest.fail(f"schemathesis generated no {mode} data for {label}")
    return cases


class Failures:
    """Failing cases, one per distinct (status, first line of the failure)."""

    def __init__(self) -> None:
        self.found: dict[tuple[int, str], str] = {}

    def add(self, status: int, message: str, curl: str) -> None:
        first = next((line for line in message.splitlines() if line.strip()), message)
        text = message.strip()[:800]
        if "Reproduce with" not in text:
            text += f"\n  {curl}"
        self.found.setdefault((status, first[:160]), text)

    def check(self) -> None:
        assert not self.found, "\n\n".join(
            f"[{status}] {text}" for (status, _), text in sorted(self.found.items()))


def as_httpx(case: Any, headers: dict[str, str]) -> dict[str, Any]:
    """The request schemathesis would send (its ``requests`` keyword arguments), for httpx."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    sent: dict[str, Any] = {"method": kwargs["method"], "url": kwargs["url"]}
    head = {str(k): str(v) for k, v in (kwargs.get("headers") or {}).items()}
    if kwargs.get("cookies"):
        head["Cookie"] = "; ".join(f"{k}={v}" for k, v in kwargs["cookies"].items())
    if kwargs.get("params"):
        sent["params"] = kwargs["params"]
    if "json" in kwargs:
        sent["content"] = json.dumps(kwargs["json"]).encode()
        head.setdefault("Content-Type", "application/json")
    elif kwargs.get("data") is not None:
        data = kwargs["data"]
        if isinstance(data, str | bytes):
            sent["content"] = data.encode() if isinstance(data, str) else data
        else:
            sent["data"] = data
    # Header values go out as latin-1, as requests (and a real client) would send them.
    sent["headers"] = [(k.encode("latin-1"), v.encode("latin-1", "replace"))
                       for k, v in head.items() if k.lower() != "content-length"]
    return sent


def assert_robust(fuzz: Fuzz, response: httpx.Response, curl: str) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300], curl)
    if response.status_code >= 400:
        error_code(response.status_code, response.headers, response.content)
    assert b"Traceback" not in response.content
    assert fuzz.unrelated <= fuzz.h.snapshot(), curl


@pytest.mark.parametrize(("label", "auth", "mode"), PARAMS)
async def test_no_server_error_and_every_error_is_json(fuzz: Fuzz, label: str, auth: str,
                                                       mode: str) -> None:
    """Never a 5xx (schemathesis' ``not_a_server_error``), every error a JSON
    ``{"error": code}``, no traceback, and the zones' other records untouched."""
    headers = ADMIN if auth == "admin" else {}
    failures = Failures()
    for case in cases_for(fuzz, label, mode):
        response = await fuzz.h.client.request(**as_httpx(case, headers))
        curl = case.as_curl_command(headers=headers)
        try:
            case.validate_response(response, checks=[not_a_server_error], headers=headers)
            assert_robust(fuzz, response, curl)
        except (AssertionError, FailureGroup) as exc:
            failures.add(response.status_code, str(exc), curl)
    failures.check()


CONFORMANCE = [status_code_conformance, content_type_conformance,
               response_headers_conformance, response_schema_conformance]


@pytest.mark.parametrize(("label", "auth", "mode"), PARAMS)
async def test_responses_match_the_documented_schema(fuzz: Fuzz, label: str, auth: str,
                                                     mode: str) -> None:
    """Every answer is one the schema documents: status code, content type, headers and
    body (an undocumented 400/401/429, or a documented error body that differs from what
    is sent, fails)."""
    headers = ADMIN if auth == "admin" else {}
    failures = Failures()
    for case in cases_for(fuzz, label, mode):
        response = await fuzz.h.client.request(**as_httpx(case, headers))
        try:
            case.validate_response(response, checks=CONFORMANCE, headers=headers)
        except (AssertionError, FailureGroup) as exc:
            failures.add(response.status_code, str(exc), case.as_curl_command(headers=headers))
    failures.check()


# -- the protocol routes, documented from docs/protocols.md -----------------------------

STRING = {"type": "string"}


def protocol_schema(raw: dict[str, Any], account: dict[str, Any]) -> dict[str, Any]:
    """The app's schema plus the protocol routes' bodies (the app's own schema has none:
    the routes parse the raw bytes whatever the Content-Type), as docs/protocols.md
    describes them."""
    schema = copy.deepcopy(raw)

    def body(*shapes: dict[str, Any]) -> dict[str, Any]:
        objects = [{"type": "object", "properties": props, "required": list(props)}
                   for props in shapes]
        return {"required": True, "content": {"application/json": {"schema": (
            objects[0] if len(objects) == 1 else {"anyOf": objects})}}}

    paths = schema["paths"]
    paths["/update"]["post"]["requestBody"] = body({"subdomain": STRING, "txt": STRING})
    for route in ("/present", "/cleanup"):
        paths[route]["post"]["requestBody"] = body(
            {"fqdn": STRING, "value": STRING},
            {"domain": STRING, "token": STRING, "keyAuth": STRING},
        )
    paths["/register"]["post"]["requestBody"] = body({
        "allowfrom": {"type": "array", "items": STRING, "maxItems": 4},
    })
    return schema


PROTOCOL_ROUTES = ["POST /update", "POST /present", "POST /cleanup", "POST /register"]


def steer(case: Any, choice: tuple[bool, int, int], account: dict[str, Any]) -> Any:
    """Put the account's own name (in a spelling it accepts) and a well-formed value into
    a generated body some of the time, so the fuzzer reaches the write path."""
    wanted, spelling, n = choice
    body = case.body
    if not isinstance(body, dict) or not wanted:
        return case
    name, label = account["fulldomain"], account["subdomain"]
    if "subdomain" in body:
        body["subdomain"] = (label, label.upper())[spelling % 2]
        body["txt"] = challenge_value(n) if n else body.get("txt")
    elif "fqdn" in body:
        body["fqdn"] = (name, name + ".", name.upper() + ".", " " + name + ". ")[spelling % 4]
        body["value"] = challenge_value(n) if n else body.get("value")
    elif "domain" in body:
        body["domain"] = ("www.example.com", "WWW.example.com.", "*.www.example.com",
                          name)[spelling % 4]
    return case


def credentials(label: str, account: dict[str, Any]) -> dict[str, str]:
    if label == "POST /update":
        return {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
    if label in ("POST /present", "POST /cleanup"):
        pair = f"{account['username']}:{account['password']}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    return {}


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("label", "creds"), [
    (label, creds) for label in PROTOCOL_ROUTES for creds in ("own", "none")
    if not (label == "POST /register" and creds == "own")])  # /register takes no credential
async def test_protocol_bodies(fuzz: Fuzz, label: str, creds: str, mode: str) -> None:
    """Bodies generated from the protocol as documented (positive: the documented shape,
    half the time with the account's own name or label and a good value; negative:
    anything else), with the real credential or none: never a 5xx, errors are JSON, and
    DNS changes only at the account's own name, only TXT (/register changes none)."""
    raw = (await fuzz.h.client.get("/openapi.json")).json()
    documented = schemathesis.openapi.from_dict(protocol_schema(raw, fuzz.account))
    operation = documented.find_operation_by_label(label)
    assert operation is not None, label
    generation = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    choices = st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 4))
    drawn = generate(st.tuples(operation.as_strategy(generation_mode=generation), choices))
    assert drawn
    headers = credentials(label, fuzz.account) if creds == "own" else {}
    failures = Failures()
    for case, choice in drawn:
        if mode == "positive":
            steer(case, choice, fuzz.account)
        before = fuzz.h.snapshot()
        response = await fuzz.h.client.request(**as_httpx(case, headers))
        curl = case.as_curl_command(headers=headers)
        try:
            case.validate_response(response, checks=[not_a_server_error], headers=headers)
            assert_robust(fuzz, response, curl)
            changed = before ^ fuzz.h.snapshot()
            assert all((zone, rtype, rel) == ("example.com", "TXT", "_acme-challenge.www")
                       for zone, rtype, rel, _ in changed), changed
            assert not (creds == "none" and changed), changed
            if response.status_code == 200 and label == "POST /update":
                assert set(response.json()) == {"txt"}, response.text
        except (AssertionError, FailureGroup) as exc:
            failures.add(response.status_code, str(exc), curl)
    failures.check()
