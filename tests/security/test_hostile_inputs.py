"""A corpus of hostile requests against every endpoint (/register, /update, /present,
/cleanup, /admin/accounts, /health), sent in-process as exact ASGI bytes: each is refused
with a 4xx ``{"error": code}`` (never a 5xx, never a traceback) and leaves the database
and the DNS records as they were. Then the same server as a real process on loopback:
slow clients, header floods and bodies that never end must not stop it answering others.

Audit rows of refusals (failed authentications, refused updates) are expected and
ignored; every other row, every account and value row, and every DNS record is compared.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from app import __version__
from app.config import Settings
from app.standin import Standin
from tests.conftest import (
    ADMIN_TOKEN,
    DO_TOKEN,
    REGISTRATION_TOKEN,
    challenge_value,
    fresh_postgres,
    migrated_sqlite,
    settings_maker,
    standin_state,
)
from tests.security.support import (
    AppHarness,
    app_harness_factory,
    assert_unchanged,
    error_code,
    refused,
    state_of,
)
from tests.support.asgi import RawResponse, asgi_request
from tests.support.env import cli_env
from tests.support.processes import Serve

# Cases refused while the request is still being read or parsed (size, Content-Length,
# encoding, nesting): the hostile bytes never get near a database, so they run on SQLite
# only. Cases whose hostile part is a credential, a name or a value (which are looked up,
# stored or audited) run on both databases: PostgreSQL and SQLite differ there (NUL bytes).
PARSING_ONLY = pytest.mark.parametrize("module_database", ["sqlite"], indirect=True,
                                       scope="module")
# The in-process cases share one app per module and database (its start-up, and FastAPI's
# building of each route on first use, cost more than a case): each case checks that
# nothing changed across its own request, so they stay independent.
SHARED_APP = pytest.mark.asyncio(loop_scope="module")
V = challenge_value(11)
BOUND = "_acme-challenge.www.example.com"
KIB = 1024
CRLF = b"\r\n"
MAX_BODY = 16 * KIB

# -- the endpoints and how a legitimate caller talks to each -------------------------------


@dataclass
class Ctx:
    h: AppHarness
    account: dict[str, Any]

    @property
    def basic(self) -> bytes:
        pair = f"{self.account['username']}:{self.account['password']}".encode()
        return b"Basic " + base64.b64encode(pair)

    def auth(self, endpoint: str) -> list[tuple[bytes, bytes]]:
        """The headers a legitimate caller of ``endpoint`` sends (none for /register in
        ``token`` mode: the hostile corpus must not be able to register)."""
        if endpoint == "update":
            return [(b"x-api-user", self.account["username"].encode()),
                    (b"x-api-key", self.account["password"].encode())]
        if endpoint in ("present", "cleanup"):
            return [(b"authorization", self.basic)]
        if endpoint == "admin":
            return [(b"authorization", f"Bearer {ADMIN_TOKEN}".encode())]
        return []

    def good_body(self, endpoint: str) -> dict[str, Any]:
        return {
            "update": {"subdomain": self.account["subdomain"], "txt": V},
            "present": {"fqdn": BOUND + ".", "value": V},
            "cleanup": {"fqdn": BOUND + ".", "value": V},
            "admin": {"domain": "mail.example.com"},
            "register": {"allowfrom": ["127.0.0.0/8"]},
            "health": {},
        }[endpoint]


ROUTES = {
    "register": ("POST", b"/register"),
    "update": ("POST", b"/update"),
    "present": ("POST", b"/present"),
    "cleanup": ("POST", b"/cleanup"),
    "admin": ("POST", b"/admin/accounts"),
    "health": ("GET", b"/health"),
}
POSTS = [e for e in ROUTES if e != "health"]


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def module_database(request: pytest.FixtureRequest, sqlite_schema: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated, empty database of each kind for this module's shared app."""
    if request.param == "sqlite":
        return migrated_sqlite(sqlite_schema, tmp_path_factory.mktemp("hostile") / "db.sqlite3")
    return fresh_postgres()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ctx(module_database: str) -> Any:
    # registration=token: without the registration token /register refuses, so nothing in the
    # corpus can create an account through it (its body is still parsed first).
    factory = app_harness_factory(settings_maker(module_database), standin_state())
    async with factory(registration="token") as h:
        account = await h.create_account(domain="www.example.com")
        # One live value, so that a stray cleanup or eviction would show.
        response = await h.update(account, challenge_value(1))
        assert response.status_code == 200
        yield Ctx(h, account)


async def send(ctx: Ctx, endpoint: str, headers: list[tuple[bytes, bytes]],
               chunks: list[bytes], method: str | None = None,
               path: bytes | None = None) -> RawResponse:
    default_method, default_path = ROUTES[endpoint]
    return await asgi_request(ctx.h.app, method or default_method, path or default_path,
                              headers, chunks)


async def check_refused(ctx: Ctx, endpoint: str, headers: list[tuple[bytes, bytes]],
                        chunks: list[bytes], *, expect: tuple[int, str] | None = None,
                        method: str | None = None, path: bytes | None = None) -> RawResponse:
    """Send, and require a 4xx JSON error (or, for /health, its 200) with nothing changed."""
    before = await state_of(ctx.h)
    response = await send(ctx, endpoint, headers, chunks, method, path)
    what = (endpoint, [(k, v[:80]) for k, v in headers[:6]], b"".join(chunks)[:120])
    assert response.raised is None, (what, response.status, repr(response.raised))
    assert response.status < 500, (what, response.status, response.body[:300])
    if endpoint == "health" and response.status == 200:
        assert response.json() == {"status": "ok", "version": __version__}
    else:
        status, code = refused(response)
        if expect is not None:
            assert (status, code) == expect, (what, status, code)
    assert_unchanged(before, await state_of(ctx.h), repr(what))
    return response


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


JSON_CT = (b"content-type", b"application/json")

# -- bodies ---------------------------------------------------------------------------------


def padded(ctx: Ctx, endpoint: str, size: int) -> bytes:
    """A JSON object of ``size`` bytes that would otherwise be a good request."""
    body = dict(ctx.good_body(endpoint))
    body["pad"] = ""
    base = len(js(body))
    body["pad"] = "x" * (size - base)
    raw = js(body)
    assert len(raw) == size
    return raw


@SHARED_APP
@PARSING_ONLY
@pytest.mark.parametrize("endpoint", POSTS)
@pytest.mark.parametrize("how", ["declared", "streamed", "declared-small", "one-mib"])
async def test_huge_bodies_are_413(ctx: Ctx, endpoint: str, how: str) -> None:
    """Over 16 KiB is ``413 payload_too_large``: with an honest Content-Length, streamed
    without one, with a Content-Length that lies low, and 1 MiB; on every endpoint."""
    size = MAX_BODY + 1 if how != "one-mib" else 1024 * KIB
    raw = padded(ctx, endpoint, size)
    headers = [*ctx.auth(endpoint), JSON_CT]
    if how == "declared" or how == "one-mib":
        headers.append((b"content-length", str(len(raw)).encode()))
    elif how == "declared-small":
        headers.append((b"content-length", b"2"))
    chunks = [raw[i:i + KIB] for i in range(0, len(raw), KIB)]
    await check_refused(ctx, endpoint, headers, chunks, expect=(413, "payload_too_large"))


@SHARED_APP
@PARSING_ONLY
@pytest.mark.parametrize("auth", [True, False], ids=["token", "no-token"])
async def test_admin_api_refuses_a_huge_body_before_reading_it(ctx: Ctx, auth: bool) -> None:
    """/admin/accounts reads (and JSON-decodes) any body, of any size, before it even
    checks the token: an unauthenticated 8 MiB JSON body must be 413 (or refused)
    without being buffered."""
    raw = b'{"domain": "mail.example.com", "note": "' + b"x" * (8 * 1024 * KIB) + b'"}'
    headers = [*(ctx.auth("admin") if auth else []), JSON_CT,
               (b"content-length", str(len(raw)).encode())]
    chunks = [raw[i:i + 64 * KIB] for i in range(0, len(raw), 64 * KIB)]
    before = await state_of(ctx.h)
    response = await send(ctx, "admin", headers, chunks)
    assert response.raised is None
    assert (response.status, error_code(response.status, response.headers, response.body)) == (
        413, "payload_too_large"), (response.status, response.body)
    assert_unchanged(before, await state_of(ctx.h))


@PARSING_ONLY
@pytest.mark.parametrize("endpoint", list(ROUTES))
@pytest.mark.parametrize("value", [b"2", b"16000", b"-1", b"abc", b"1e3", b" 5", b"0x10",
                                   b"99999999999999999999999", b"5, 5", b"\xb2", b"\xb9\xb3"],
                         ids=["low", "high", "negative", "letters", "exponent", "space",
                              "hex", "huge", "list", "superscript-2", "superscript-13"])
@SHARED_APP
async def test_lying_content_length(ctx: Ctx, endpoint: str, value: bytes) -> None:
    """Content-Length that does not match the body, is not a number, or is a Unicode
    digit that ``str.isdigit`` accepts and ``int`` refuses (U+00B2, latin-1 on the wire)."""
    headers = [*ctx.auth(endpoint), JSON_CT, (b"content-length", value)]
    # The body itself would be fine apart from carrying nothing valid for the endpoint.
    await check_refused(ctx, endpoint, headers, [b'{"x": 1}'])


@PARSING_ONLY
@pytest.mark.parametrize("endpoint", list(ROUTES))
@pytest.mark.parametrize("body", [
    b'{"subdomain": "\xff\xfe", "txt": "\xc3\x28"}',
    b"\xef\xbb\xbf{}",  # a UTF-8 byte-order mark
    b"\xff\xfe{\x00}\x00",  # UTF-16
    b'{"fqdn": "_acme-challenge.www.example.com\xc0\xae", "value": "x"}',  # overlong "."
    b"\x80" * 100,
], ids=["bad-continuation", "bom", "utf16", "overlong-dot", "continuation-bytes"])
@SHARED_APP
async def test_invalid_utf8(ctx: Ctx, endpoint: str, body: bytes) -> None:
    await check_refused(ctx, endpoint, [*ctx.auth(endpoint), JSON_CT], [body])


def nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@PARSING_ONLY
@pytest.mark.parametrize("endpoint", list(ROUTES))
@pytest.mark.parametrize(("depth", "kind"), [(10_000, "array"), (10_000, "object"),
                                             (8_000, "array"), (3_000, "object"),
                                             (100_000, "array")])
@SHARED_APP
async def test_deep_json_nesting(ctx: Ctx, endpoint: str, depth: int, kind: str) -> None:
    """10k deep (over 16 KiB: 413 on the protocol routes), and as deep as fits in 16 KiB,
    so the JSON parser's recursion limit itself is reached."""
    await check_refused(ctx, endpoint, [*ctx.auth(endpoint), JSON_CT], [nested(depth, kind)])


def hostile_bodies(ctx: Ctx, endpoint: str) -> dict[str, bytes]:
    """Bodies (sent with valid credentials) that must each be refused."""
    label = ctx.account["subdomain"]
    cyrillic_label = label.replace("a", "\u0430").replace("e", "\u0435").replace("c", "\u0441")
    if cyrillic_label == label:
        cyrillic_label = "\u0430" + label[1:]
    fullwidth_label = "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in label)
    if fullwidth_label == label:
        fullwidth_label = "\uff10" + label[1:]
    bodies: dict[str, dict[str, bytes]] = {
        "update": {
            "nul-in-subdomain": js({"subdomain": label + "\x00", "txt": V}),
            "nul-in-txt": js({"subdomain": label, "txt": V[:-1] + "\x00"}),
            "raw-nul-byte": b'{"subdomain": "' + label.encode() + b'\x00", "txt": "'
                            + V.encode() + b'"}',
            "nul-in-key": js({"sub\x00domain": label, "txt": V}),
            "duplicate-subdomain-last-wrong": (b'{"subdomain": "' + label.encode()
                                               + b'", "txt": "' + V.encode()
                                               + b'", "subdomain": "other"}'),
            "duplicate-txt-last-bad": (b'{"subdomain": "' + label.encode() + b'", "txt": "'
                                       + V.encode() + b'", "TXT": "short"}'),
            "numbers": js({"subdomain": 1, "txt": 1}),
            "number-txt": js({"subdomain": label, "txt": 10 ** 42}),
            "float-txt": b'{"subdomain": "' + label.encode() + b'", "txt": 1e400}',
            "nan-txt": b'{"subdomain": "' + label.encode() + b'", "txt": NaN}',
            "list-subdomain": js({"subdomain": [label], "txt": V}),
            "object-subdomain": js({"subdomain": {"$ne": ""}, "txt": V}),
            "bool-subdomain": js({"subdomain": True, "txt": V}),
            "cyrillic-label": js({"subdomain": cyrillic_label, "txt": V}),
            "fullwidth-label": js({"subdomain": fullwidth_label, "txt": V}),
            "lone-surrogate-label": js({"subdomain": "\ud800", "txt": V}),
            "lone-surrogate-txt": js({"subdomain": label, "txt": "\udfff" * 43}),
            "txt-with-newline": js({"subdomain": label, "txt": V[:-1] + "\n"}),
            "txt-trailing-newline": js({"subdomain": label, "txt": V + "\n"}),
            "huge-int": b'{"subdomain": "' + label.encode() + b'", "txt": ' + b"9" * 5000 + b"}",
            "array": js([{"subdomain": label, "txt": V}]),
            "string": js(f"subdomain={label}&txt={V}"),
            "form": f"subdomain={label}&txt={V}".encode(),
        },
        "present": {
            "nul-in-fqdn": js({"fqdn": BOUND + "\x00.evil.test", "value": V}),
            "nul-in-value": js({"fqdn": BOUND, "value": V[:-1] + "\x00"}),
            "value-trailing-newline": js({"fqdn": BOUND, "value": V + "\n"}),
            "nul-in-key": js({"fq\x00dn": BOUND, "value": V}),
            "duplicate-fqdn-last-wrong": (b'{"fqdn": "' + BOUND.encode() + b'", "value": "'
                                          + V.encode() + b'", "FQDN": "www.example.com"}'),
            "numbers": js({"fqdn": 1, "value": 1}),
            "number-value": js({"fqdn": BOUND, "value": 10 ** 42}),
            "object-fqdn": js({"fqdn": {"name": BOUND}, "value": V}),
            "list-fqdn": js({"fqdn": [BOUND], "value": V}),
            "cyrillic-e": js({"fqdn": "_acme-challenge.www.\u0435xample.com", "value": V}),
            "cyrillic-www": js({"fqdn": "_acme-challenge.\u051d\u051d\u051d.example.com",
                                "value": V}),
            "unicode-hyphen": js({"fqdn": "_acme\u2010challenge.www.example.com", "value": V}),
            "ideographic-dot": js({"fqdn": "_acme-challenge.www\u3002example.com\u3002evil",
                                   "value": V}),
            "lone-surrogate-fqdn": js({"fqdn": "_acme-challenge.www.ex\ud800ample.com",
                                       "value": V}),
            "raw-lone-surrogate-keyauth": js({"domain": "www.example.com", "token": "t",
                                              "keyAuth": "\ud800"}),
            "raw-other-domain": js({"domain": "mail.example.com", "token": "t",
                                    "keyAuth": "k"}),
            "raw-number-domain": js({"domain": 1, "token": "t", "keyAuth": "k"}),
            "raw-huge-keyauth": js({"domain": "www.example.com", "token": "t",
                                    "keyAuth": "k" * 10_000}),
            "raw-keyauth-object": js({"domain": "www.example.com", "token": "t",
                                      "keyAuth": {"a": 1}}),
            "array": js([{"fqdn": BOUND, "value": V}]),
        },
        "admin": {
            "nul-in-domain": js({"domain": "mail.example.com\x00.evil.test"}),
            "nul-in-note": js({"domain": "mail.example.com", "note": "a\x00b"}),
            "newline-ending-a-label": js({"domain": "mail\n.example.com"}),
            "nul-in-key": js({"dom\x00ain": "mail.example.com"}),
            "duplicate-domain-last-bad": b'{"domain": "mail.example.com", "domain": "a..b"}',
            "number-domain": js({"domain": 1}),
            "number-allowfrom": js({"domain": "mail.example.com", "allowfrom": [1]}),
            "string-allowfrom": js({"domain": "mail.example.com", "allowfrom": "0.0.0.0/0"}),
            "huge-max-values": js({"domain": "mail.example.com", "max_values": 10 ** 30}),
            "float-max-values": b'{"domain": "mail.example.com", "max_values": 1e400}',
            "cyrillic-domain": js({"domain": "mail.\u0435xample.com"}),
            "homoglyph-taken-name": js({"domain": "\uff57\uff57\uff57.example.com"}),
            "lone-surrogate-domain": js({"domain": "m\ud800.example.com"}),
            "lone-surrogate-note": js({"domain": "mail.example.com", "note": "\ud800"}),
            "sqli-domain": js({"domain": "x.example.com'; DROP TABLE accounts;--"}),
            "array": js([{"domain": "mail.example.com"}]),
            "zone-apex-of-other": js({"domain": "example.com.evil.test"}),
        },
        "register": {
            "nul-in-allowfrom": js({"allowfrom": ["127.0.0.1/32\x00"]}),
            "number-allowfrom": js({"allowfrom": [1]}),
            "string-allowfrom": js({"allowfrom": "0.0.0.0/0"}),
            "lone-surrogate-allowfrom": js({"allowfrom": ["\ud800"]}),
            "fullwidth-digits": js({"allowfrom": ["\uff11\uff12\uff17.0.0.1/32"]}),
            "duplicate-allowfrom-last-bad": b'{"allowfrom": ["127.0.0.0/8"], "AllowFrom": 7}',
            "array": js([{"allowfrom": []}]),
            "huge-int": b'{"allowfrom": ' + b"9" * 5000 + b"}",
        },
    }
    bodies["cleanup"] = bodies["present"]
    bodies["health"] = {"anything": js({"subdomain": label, "txt": V})}
    return bodies[endpoint]


def body_params() -> list[Any]:
    # Ids need the case names at collection time; the bodies are built per test.
    fake = Ctx(None, {"subdomain": "0c8e2f7a-1a53-4a43-8e0b-2f0f2d6e8c31",  # type: ignore[arg-type]
                      "username": "u", "password": "p"})
    return [pytest.param(endpoint, name, id=f"{endpoint}-{name}")
            for endpoint in ROUTES for name in hostile_bodies(fake, endpoint)]


@SHARED_APP
@pytest.mark.parametrize(("endpoint", "name"), body_params())
async def test_hostile_bodies(ctx: Ctx, endpoint: str, name: str) -> None:
    """NUL in strings and names, duplicate keys (the last wins, as in Go), numbers where
    strings belong, homoglyph names, lone surrogates, wrong JSON types: with the
    caller's own valid credentials, each is refused and nothing changes."""
    body = hostile_bodies(ctx, endpoint)[name]
    await check_refused(ctx, endpoint, [*ctx.auth(endpoint), JSON_CT], [body])


# -- headers --------------------------------------------------------------------------------


def hostile_headers(ctx: Ctx, endpoint: str) -> dict[str, list[tuple[bytes, bytes]]]:
    """Header sets that must each be refused (a valid body goes with them)."""
    user = ctx.account["username"].encode()
    key = ctx.account["password"].encode()
    cases: dict[str, list[tuple[bytes, bytes]]] = {
        "nul-in-user": [(b"x-api-user", user + b"\x00"), (b"x-api-key", key)],
        "nul-in-key": [(b"x-api-user", user), (b"x-api-key", key[:-1] + b"\x00")],
        "nul-after-key": [(b"x-api-user", user), (b"x-api-key", key + b"\x00")],
        "nul-in-basic": [(b"authorization", b"Basic " + base64.b64encode(
            user + b":" + key + b"\x00"))],
        "nul-in-basic-header": [(b"authorization", ctx.basic + b"\x00")],
        "nul-in-bearer": [(b"authorization", b"Bearer " + ADMIN_TOKEN.encode() + b"\x00")],
        "nul-in-xff": [(b"x-forwarded-for", b"127.0.0.1\x00, 10.0.0.1")],
        "nul-in-request-id": [(b"x-request-id", b"abc\x00def")],
        "long-user": [(b"x-api-user", b"a" * 64 * KIB), (b"x-api-key", key)],
        "long-key": [(b"x-api-user", user), (b"x-api-key", b"k" * 64 * KIB)],
        "long-basic": [(b"authorization", b"Basic " + base64.b64encode(
            user + b":" + b"k" * 768 * KIB))],
        "long-bearer": [(b"authorization", b"Bearer " + b"t" * 64 * KIB)],
        "long-xff": [(b"x-forwarded-for", b"127.0.0.1, " * 6000)],
        "long-request-id": [(b"x-request-id", b"r" * 64 * KIB)],
        "long-content-type": [(b"content-type", b"application/json;" + b"a=b;" * 16 * KIB)],
        "flood-500": [(f"x-flood-{i}".encode(), b"v" * 100) for i in range(500)],
        "flood-500-users-real-last": [(b"x-api-user", b"' OR 1=1 --")] * 499
        + [(b"x-api-user", user), (b"x-api-key", key)],
        "flood-500-authorization": [(b"authorization", b"Basic AAAA")] * 499
        + [(b"authorization", ctx.basic)],
        "non-ascii-basic": [(b"authorization", b"Basic \xe9")],
        "non-ascii-basic-tail": [(b"authorization", ctx.basic + b"\xe9")],
        "non-ascii-bearer": [(b"authorization", b"Bearer \xe9\xff")],
        "non-ascii-user": [(b"x-api-user", b"\xe9" * 36), (b"x-api-key", key)],
        "non-ascii-key": [(b"x-api-user", user), (b"x-api-key", b"\xff" * 40)],
        "basic-non-utf8-payload": [(b"authorization", b"Basic " + base64.b64encode(
            b"\xff\xfe:\xff"))],
        "basic-not-base64": [(b"authorization", b"Basic !!!!")],
        "basic-no-colon": [(b"authorization", b"Basic " + base64.b64encode(user + key))],
        "basic-empty": [(b"authorization", b"Basic ")],
        "basic-other-scheme": [(b"authorization", b"Digest " + ctx.basic[6:])],
        "duplicate-content-length": [(b"content-length", b"5"), (b"content-length", b"7")],
    }
    for n, injection in enumerate(SQL_INJECTIONS):
        cases[f"sqli-{n}"] = [(b"x-api-user", injection.encode()), (b"x-api-key", key)]
        cases[f"sqli-basic-{n}"] = [(b"authorization", b"Basic " + base64.b64encode(
            injection.encode() + b":" + key))]
        cases[f"sqli-bearer-{n}"] = [(b"authorization", b"Bearer " + injection.encode())]
    return cases


SQL_INJECTIONS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    "00000000-0000-4000-8000-000000000000' OR '1'='1",
    "1; DROP TABLE accounts; --",
    "admin'/*",
    "\" OR \"\"=\"",
    "') UNION SELECT username, key_hash FROM accounts --",
    "%' OR username LIKE '%",
]


def header_params() -> list[Any]:
    fake = Ctx(None, {"subdomain": "s", "username": "u", "password": "p"})  # type: ignore[arg-type]
    return [pytest.param(endpoint, name, id=f"{endpoint}-{name}")
            for endpoint in ROUTES for name in hostile_headers(fake, endpoint)]


@SHARED_APP
@pytest.mark.parametrize(("endpoint", "name"), header_params())
async def test_hostile_headers(ctx: Ctx, endpoint: str, name: str) -> None:
    """NUL bytes and non-ASCII bytes in header values (as raw ASGI bytes: httpx would
    refuse some), very long values, 500-header floods (the first of a repeated header is
    the one read), SQL injection as user, key and token: the legitimate body goes with
    them, the credentials are replaced, so every one is refused."""
    headers = hostile_headers(ctx, endpoint)[name]
    body = b"" if endpoint == "health" else js(ctx.good_body(endpoint))
    await check_refused(ctx, endpoint, [*headers, JSON_CT], [body])


# -- paths ----------------------------------------------------------------------------------

TRAVERSALS = [
    b"/admin/accounts/..",
    b"/admin/accounts/../accounts",
    b"/admin/accounts/../../health",
    b"/admin/accounts/%2e%2e",
    b"/admin/accounts/%2e%2e%2f%2e%2e%2fhealth",
    b"/admin/accounts/..%2f..%2fupdate",
    b"/admin/accounts/%252e%252e%252f",
    b"/admin/accounts/....//....//etc/passwd",
    b"/admin/accounts/..\\..\\etc\\passwd",
    b"/admin/accounts/%c0%ae%c0%ae%c0%af",
    b"/admin/accounts/%00",
    b"/admin/accounts/%ff%fe",
    b"/admin/accounts/;/",
    b"/admin/accounts/*",
    b"/admin/accounts/%2a",
    b"/admin/accounts/' OR '1'='1",
    b"/admin/accounts/" + b"a" * 20_000,
]


def username_paths(username: str) -> list[bytes]:
    u = username.encode()
    return [
        b"/admin/accounts/" + u + b"%00",
        b"/admin/accounts/" + u + b"/..",
        b"/admin/accounts/" + u + b"%2f..",
        b"/admin/accounts/" + u + b"/../00000000-0000-4000-8000-000000000000",
        b"/admin/accounts/00000000-0000-4000-8000-000000000000/../" + u,
        b"/admin/accounts/00000000-0000-4000-8000-000000000000%2f..%2f" + u,
        b"/admin/accounts/" + u + b"%20",
        b"/admin/accounts/%20" + u,
        b"/admin/accounts/" + u + b"'--",
        b"/admin/accounts/" + u + b";purge=true",
    ]


@SHARED_APP
@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH", "POST"])
@pytest.mark.parametrize("token", [True, False], ids=["token", "no-token"])
async def test_path_traversal_in_admin_username(ctx: Ctx, method: str, token: bool) -> None:
    """``/admin/accounts/{username}`` with dot segments (raw and encoded), NUL, overlong
    UTF-8, SQL and the real username with something appended: never the account, never
    another route, nothing revoked or changed."""
    headers = [*(ctx.auth("admin") if token else []), JSON_CT]
    body = [js({"note": "changed"})] if method in ("PATCH", "POST") else []
    for path in [*TRAVERSALS, *username_paths(ctx.account["username"])]:
        if method == "POST":
            path = path + b"/rotate"
        response = await check_refused(ctx, "admin", headers, body, method=method, path=path)
        if token:
            assert response.status in (404, 405), (method, path, response.status)
        else:
            assert response.status in (401, 404, 405), (method, path, response.status)
    # The account is still there, unrevoked, with its key.
    assert (await ctx.h.update(ctx.account, challenge_value(2))).status_code == 200


@SHARED_APP
async def test_no_client_chosen_method_grows_the_metrics(ctx: Ctx) -> None:
    """Any token is a valid HTTP method on the wire; the request counter is labelled by
    method, so each invented method is a new time series kept for the process's life
    (unbounded memory, an unbounded /metrics page) unless methods are bounded."""
    for n in range(200):
        response = await asgi_request(ctx.h.app, f"X{n:04d}", b"/health")
        assert response.status == 405
    page = (await ctx.h.client.get("/metrics")).text
    methods = {line.split('method="', 1)[1].split('"', 1)[0] for line in page.splitlines()
               if line.startswith("acme_delegate_http_requests_total{")}
    assert len(methods) <= 10, sorted(methods)[:20]


# -- a real server on loopback --------------------------------------------------------------


@dataclass
class Live:
    url: str
    host: str
    port: int
    log: Callable[[], str]


@contextmanager
def live_server(tmp: Path, **settings: str) -> Iterator[Live]:
    """``acme-delegate serve`` against the stand-in (SQLite: socket behaviour does not
    depend on the database)."""
    known = {k: v for k, v in settings.items() if k in Settings.model_fields}
    with Standin(token=DO_TOKEN, zones=["example.com", "example.org"]) as standin:
        env = cli_env(
            database_url=f"sqlite:///{tmp / 'db.sqlite3'}",
            do_token=DO_TOKEN,
            do_api_url=standin.api_url,
            delegation_domain="acme.example.org",
            registration="token",
            admin_token=ADMIN_TOKEN,
            registration_token=REGISTRATION_TOKEN,
            **known,
        )
        with Serve(env, tmp / "serve.log") as served:
            host, port = served.url.removeprefix("http://").split(":")
            yield Live(served.url, host, int(port), served.log)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_server(tmp_path_factory.mktemp("live")) as running:
        yield running


class HealthWatch:
    """Polls /health from another client while something else goes on; every answer
    must be a 200 within ``timeout``."""

    def __init__(self, url: str, *, interval: float = 0.25, timeout: float = 2.0) -> None:
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.results: list[tuple[float, int | str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _check(self, client: httpx.Client) -> None:
        started = time.monotonic()
        try:
            status: int | str = client.get(self.url + "/health").status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        self.results.append((time.monotonic() - started, status))

    def _client(self) -> httpx.Client:
        # Another client is another address (the slow ones use 127.0.0.1, and each
        # address holds a bounded number of connections: MAX_CONNECTIONS_PER_ADDRESS).
        return httpx.Client(timeout=self.timeout,
                            transport=httpx.HTTPTransport(local_address="127.0.0.2"))

    def _run(self) -> None:
        with self._client() as client:
            while not self._stop.is_set():
                self._check(client)
                self._stop.wait(self.interval)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        # One more, after whatever was going on: the server is still there.
        with self._client() as client:
            self._check(client)

    def assert_healthy(self) -> None:
        assert self.results, "no health check ran"
        bad = [(round(t, 2), s) for t, s in self.results if s != 200 or t > self.timeout]
        assert not bad, bad


@dataclass
class SlowReport:
    sent: int
    seconds: float
    closed_after: float | None
    answer: bytes


def connect(live: Live) -> socket.socket:
    sock = socket.create_connection((live.host, live.port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def trickle(live: Live, head: bytes, tail: bytes, *, every: float, limit: float) -> SlowReport:
    """Send ``head``, then ``tail`` one byte per ``every`` seconds for at most ``limit``
    seconds; notice whether and when the server closes or answers."""
    sock = connect(live)
    sock.settimeout(0)
    started = time.monotonic()
    closed_after = None
    answer = b""
    sent = 0
    try:
        sock.sendall(head)
        for byte in tail:
            if time.monotonic() - started > limit:
                break
            try:
                data = sock.recv(65536)
                if data == b"":
                    closed_after = time.monotonic() - started
                    break
                answer += data
            except BlockingIOError:
                pass
            try:
                sock.send(bytes([byte]))
                sent += 1
            except OSError:
                closed_after = time.monotonic() - started
                break
            time.sleep(every)
    finally:
        seconds = time.monotonic() - started
        sock.close()
    return SlowReport(sent, seconds, closed_after, answer)


def test_slow_headers_do_not_stop_other_clients(live: Live, capsys: Any) -> None:
    """Headers at one byte per 100 ms for up to 5 s (a slowloris client), with 50 more
    such connections open: /health keeps answering within 2 s throughout."""
    head = b"POST /update HTTP/1.1\r\nHost: acme\r\nX-Slow: "
    tail = b"a" * 1000 + b"\r\n\r\n"
    others = [connect(live) for _ in range(50)]
    try:
        for sock in others:
            sock.sendall(b"POST /update HTTP/1.1\r\nHost: acme\r\nX-Slow: a")
        with HealthWatch(live.url) as watch:
            report = trickle(live, head, tail, every=0.1, limit=5.0)
        watch.assert_healthy()
    finally:
        for sock in others:
            sock.close()
    with capsys.disabled():
        print(f"\n[slow headers] sent {report.sent} bytes over {report.seconds:.1f}s; "
              f"server closed it: {report.closed_after}; answer: {report.answer[:80]!r}; "
              f"health checks: {len(watch.results)}, slowest "
              f"{max(t for t, _ in watch.results):.3f}s")


def test_slow_clients_up_to_the_connection_limit_lock_others_out(
        tmp_path: Path, capsys: Any) -> None:
    """A slowloris: as many connections as MAX_IN_FLIGHT (20 here), each sending its
    headers one byte at a time and never finishing. Unfinished heads are not requests in
    flight, so a legitimate client must still get /health within 2 s."""
    with live_server(tmp_path, max_in_flight="20") as server:
        held: list[socket.socket] = []
        try:
            for _ in range(20):
                sock = connect(server)
                sock.sendall(b"POST /update HTTP/1.1\r\nHost: acme\r\nX-Slow: a")
                held.append(sock)
            deadline = time.monotonic() + 6.0
            answers: list[int | str] = []
            with httpx.Client(timeout=2.0) as client:
                while time.monotonic() < deadline:
                    for sock in held:  # keep trickling: one byte each
                        try:
                            sock.send(b"a")
                        except OSError:
                            pass
                    try:
                        answers.append(client.get(server.url + "/health").status_code)
                    except httpx.HTTPError as exc:
                        answers.append(type(exc).__name__)
                    time.sleep(0.5)
            still_open = 0
            for sock in held:
                sock.settimeout(0)
                try:
                    still_open += (sock.recv(1) == b"" and 0) or 0
                except BlockingIOError:
                    still_open += 1
                except OSError:
                    pass
        finally:
            for sock in held:
                sock.close()
    with capsys.disabled():
        print(f"\n[slowloris x20, MAX_IN_FLIGHT=20] /health answers {answers}; "
              f"slow connections still open after 6 s: {still_open}/20")
    assert answers and all(a == 200 for a in answers), answers


def read_answer(sock: socket.socket, limit: float) -> tuple[bytes, float | None]:
    """Everything the server sends until it closes or ``limit`` seconds pass."""
    sock.settimeout(0.2)
    started = time.monotonic()
    data = b""
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return data, time.monotonic() - started
        if not chunk:
            return data, time.monotonic() - started
        data += chunk
    return data, None


@pytest.mark.parametrize("pieces", [1, 25], ids=["at-once", "in-4k-pieces"])
def test_100_kb_of_headers(live: Live, pieces: int, capsys: Any) -> None:
    """100 kB of headers in one request, sent at once or in 4 kB pieces: never a 5xx or a
    hang, and the server keeps serving others. (uvicorn's h11 parser refuses an
    *incomplete* head over 16 KiB, so what happens depends on how the bytes arrive.)"""
    headers = b"".join(b"X-Flood-%d: %s\r\n" % (i, b"v" * 90) for i in range(1000))
    assert len(headers) > 100_000
    raw = b"GET /health HTTP/1.1\r\nHost: acme\r\nConnection: close\r\n" + headers + b"\r\n"
    size = -(-len(raw) // pieces)
    with HealthWatch(live.url) as watch:
        sock = connect(live)
        try:
            for i in range(0, len(raw), size):
                sock.sendall(raw[i:i + size])
                if pieces > 1:
                    time.sleep(0.02)
        except OSError:
            pass
        answer, closed_after = read_answer(sock, 5.0)
        sock.close()
    watch.assert_healthy()
    status_line = answer.split(b"\r\n", 1)[0]
    body = answer.split(b"\r\n\r\n", 1)[-1][:80]
    with capsys.disabled():
        print(f"\n[100 kB headers, {pieces} piece(s)] answer {status_line!r}, body {body!r}, "
              f"closed after {closed_after}")
    assert status_line.startswith((b"HTTP/1.1 2", b"HTTP/1.1 4")), answer[:300]


def test_body_that_never_completes(live: Live, capsys: Any) -> None:
    """Content-Length 1000, a few bytes sent, then silence (and 50 more such requests):
    other clients are served throughout. Reports what the server does with each stalled
    request, watched for up to 12 s: /update has a body timeout (408 after 10 s); the
    admin API reads its body through FastAPI."""
    def head(path: bytes) -> bytes:
        return (b"POST " + path + b" HTTP/1.1\r\nHost: acme\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"do")

    others = [connect(live) for _ in range(50)]
    results: dict[str, tuple[bytes, float | None]] = {}

    def stall(path: bytes) -> None:
        sock = connect(live)
        sock.sendall(head(path))
        results[path.decode()] = read_answer(sock, 12.0)
        sock.close()

    try:
        for sock in others:
            sock.sendall(head(b"/update"))
        with HealthWatch(live.url) as watch:
            threads = [threading.Thread(target=stall, args=(p,))
                       for p in (b"/update", b"/admin/accounts", b"/register")]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(20)
        watch.assert_healthy()
    finally:
        for sock in others:
            sock.close()
    with capsys.disabled():
        for path, (answer, closed_after) in sorted(results.items()):
            status, body = answer.split(CRLF, 1)[0], answer.rsplit(b"\n", 1)[-1][:60]
            print(f"\n[incomplete body {path}] answer {status!r} {body!r}, "
                  f"closed after {closed_after}")


def test_request_that_lies_low_in_content_length(live: Live, capsys: Any) -> None:
    """Content-Length 2 and then more bytes: the rest is read as the next request on the
    same connection (HTTP/1.1 pipelining) and answered on its own; both are refused
    (4xx), nothing crashes, the connection stays usable."""
    body = b'{}' + b"POST /admin/accounts HTTP/1.1\r\nHost: acme\r\nContent-Length: 2\r\n\r\n{}"
    sock = connect(live)
    sock.sendall(b"POST /update HTTP/1.1\r\nHost: acme\r\nContent-Length: 2\r\n\r\n" + body)
    answer, closed_after = read_answer(sock, 3.0)
    sock.close()
    statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    with capsys.disabled():
        print(f"\n[pipelined request] statuses {statuses}, closed after {closed_after}")
    assert len(statuses) == 2 and all(400 <= s < 500 for s in statuses), answer[:500]


@pytest.mark.parametrize(("name", "header"), [
    pytest.param("basic-e-acute", b"Authorization: Basic \xe9", id="basic-e-acute"),
    pytest.param("content-length-superscript-two", b"Content-Length: \xb2",
                 id="content-length-superscript-two"),
    pytest.param("x-api-user-latin1", b"X-Api-User: \xe9\xe9", id="x-api-user-latin1"),
])
def test_non_ascii_header_bytes_over_the_wire(live: Live, name: str, header: bytes) -> None:
    """Bytes 0x80-0xFF are legal obs-text in a header value: over a real socket they
    reach the app as latin-1; the answer is a 4xx, never a 500."""
    sock = connect(live)
    request = (b"POST /present HTTP/1.1\r\nHost: acme\r\nConnection: close\r\n" + header
               + b"\r\n")
    if not header.lower().startswith(b"content-length"):
        request += b"Content-Length: 2\r\n"
    sock.sendall(request + b"\r\n{}")
    answer, _ = read_answer(sock, 5.0)
    sock.close()
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 4"), (name, answer[:300])
