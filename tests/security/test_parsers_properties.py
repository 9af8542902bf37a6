"""Properties of every parser and validator a client's bytes reach that
tests/core/test_names.py does not already cover: the JSON body reader, Basic auth,
the client address behind trusted proxies, the nameserver option, ``normalize_fqdn``,
the certbot hook's account lookup, and /update's body handling through the app."""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from app.api.request import basic_auth, bearer_token, client_address, parse_json_object
from app.core.names import (
    CHALLENGE_LABEL,
    challenge_name,
    delegated_name,
    normalize_domain,
    normalize_fqdn,
)
from app.errors import HookError, InvalidDomain, MalformedJson
from app.hooks import account_for
from app.propagation import parse_nameserver
from tests.conftest import challenge_value

# Characters of every kind, lone surrogates included (JSON's \ud800 escapes make them).
ANY_CHAR = st.one_of(st.characters(), st.characters(categories=["Cs"]))
ANY_TEXT = st.text(ANY_CHAR, max_size=40)
# JSON values, objects nested a few levels, keys of every case.
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         ANY_TEXT)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(ANY_TEXT, inner, max_size=4)),
    max_leaves=12,
)


def request_with(headers: list[tuple[bytes, bytes]], peer: str | None = "127.0.0.1"
                 ) -> Request:
    """A Starlette request as the server hands it over (header names lower-case)."""
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers,
                    "client": (peer, 40000) if peer is not None else None,
                    "query_string": b""})


# -- parse_json_object ------------------------------------------------------------------


def check_parsed(raw: bytes) -> dict[str, Any] | None:
    try:
        parsed = parse_json_object(raw)
    except MalformedJson:
        return None
    assert type(parsed) is dict
    for key in parsed:
        assert type(key) is str and key == key.lower(), key
    return parsed


@given(st.binary(max_size=300))
@example(b"\xef\xbb\xbf{}")
@example(b"[" * 5000 + b"]" * 5000)
@example(b'{"a": ' + b"9" * 5000 + b"}")
@example(b'{"a": 1e999999, "b": -Infinity, "c": NaN}')
@example(b'{"\\ud800": "\\udfff"}')
@example(b" \t\r\n ")
@example(b"null")
@example(b'"\\u0000"')
def test_parse_json_object_on_any_bytes(raw: bytes) -> None:
    """Any bytes: a dict with lower-case str keys, or MalformedJson; nothing else."""
    check_parsed(raw)


@given(JSON_VALUES, st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
def test_parse_json_object_on_json(value: Any, encoding: str) -> None:
    """Serialised JSON in several encodings: objects come back with their keys lowered
    (the last of keys equal but for case wins), anything else is MalformedJson (null
    and empty mean no body)."""
    try:
        raw = json.dumps(value, ensure_ascii=False).encode(encoding)
    except UnicodeEncodeError:
        raw = json.dumps(value).encode(encoding)
    parsed = check_parsed(raw)
    if encoding != "utf-8" and raw != json.dumps(value).encode("utf-8"):
        return  # other encodings: only the general property
    if value is None:
        assert parsed == {}
    elif isinstance(value, dict):
        assert parsed == {k.lower(): v for k, v in value.items()}
    else:
        assert parsed is None


# -- Basic auth and bearer tokens -------------------------------------------------------

HEADER_BYTES = st.binary(max_size=120).filter(lambda b: b"\r" not in b and b"\n" not in b)


@given(st.one_of(
    HEADER_BYTES,
    HEADER_BYTES.map(lambda b: b"Basic " + b),
    HEADER_BYTES.map(lambda b: b"basic " + base64.b64encode(b)),
    st.text(ANY_CHAR, max_size=30).map(
        lambda t: b"Basic " + base64.b64encode(t.encode("utf-8", "surrogatepass"))),
))
@example(b"Basic \xe9")
@example(b"Basic YWxhZGRpbjpvcGVuc2VzYW1l\xff")
@example(b"Basic \xc3\xa9")
def test_basic_auth_never_raises(value: bytes) -> None:
    """Any Authorization header value (bytes 0x80-0xFF are legal obs-text and reach the
    app as latin-1): None or a (user, password) pair of str; never an exception."""
    request = request_with([(b"authorization", value)])
    result = basic_auth(request)
    assert result is None or (
        isinstance(result, tuple) and len(result) == 2
        and all(isinstance(part, str) for part in result))
    token = bearer_token(request)
    assert token is None or isinstance(token, str)


@given(st.text(ANY_CHAR.filter(lambda c: c != ":" and not 0xD800 <= ord(c) <= 0xDFFF),
               max_size=40),
       st.text(st.characters(exclude_categories=["Cs"]), max_size=60),
       st.sampled_from(["Basic", "basic", "BASIC"]))
def test_basic_auth_round_trip(user: str, password: str, scheme: str) -> None:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    assert basic_auth(request_with([(b"authorization", f"{scheme} {encoded}".encode())])) == (
        user, password)


# -- the client address behind trusted proxies -------------------------------------------

IPV4 = st.ip_addresses(v=4)
IPV6 = st.ip_addresses(v=6)
ADDRESS = st.one_of(IPV4, IPV6, IPV4.map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}")))


@st.composite
def networks(draw: st.DrawFn) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    found = []
    for address in draw(st.lists(st.one_of(IPV4, IPV6), min_size=1, max_size=3)):
        prefix = draw(st.integers(8 if address.version == 4 else 16, address.max_prefixlen))
        found.append(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
    return found


def mapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address
           ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def trusted_by(nets: list[Any]) -> Callable[[Any], bool]:
    """Membership as the service defines it: an IPv4-mapped address in either form."""
    return lambda a: any(form.version == n.version and form in n
                         for form in {a, mapped(a)} for n in nets)


def spell(address: Any, style: int) -> str:
    """How proxies write an address in X-Forwarded-For."""
    text = str(address)
    if style == 1:
        return f" {text} "
    if style == 2 and address.version == 6:
        return f"[{text}]"
    return text


def xff_headers(hops: list[str], split: int) -> list[tuple[bytes, bytes]]:
    """The hops as one header, or as two header lines (proxies append either way)."""
    if split and len(hops) > 1:
        cut = split % len(hops)
        parts = [hops[:cut], hops[cut:]] if cut else [hops]
    else:
        parts = [hops]
    return [(b"x-forwarded-for", ",".join(p).encode()) for p in parts if p]


GARBAGE_HOP = st.sampled_from(["unknown", "", "_hidden", "1.2.3.4:5678", "[::1]:443",
                               "999.1.1.1", "::ffff:1.2.3", "localhost", "\x00"])


@given(ADDRESS, networks(), st.lists(st.one_of(ADDRESS.map(str), GARBAGE_HOP,
                                               ANY_TEXT.filter(lambda t: "," not in t)),
                                     max_size=6), st.integers(0, 5))
def test_an_untrusted_peer_is_the_client_whatever_it_sends(
        peer: Any, trusted: list[Any], hops: list[str], split: int) -> None:
    assume(not trusted_by(trusted)(peer))
    request = request_with(xff_headers(hops, split), peer=str(peer))
    assert client_address(request, trusted) == peer
    assert client_address(request, []) == peer


@given(networks(), st.data())
def test_behind_trusted_proxies_the_client_is_the_right_most_untrusted_hop(
        trusted: list[Any], data: st.DataObject) -> None:
    """client -> proxies (all trusted) -> us. Whatever the client put in front (trusted
    addresses, garbage, more hops), the answer is the hop the first proxy appended:
    the client's real address. Mixed spellings, IPv6 and IPv4-mapped included."""
    is_trusted = trusted_by(trusted)
    inside = [n for n in trusted if n.num_addresses > 1] or trusted
    proxies = data.draw(st.lists(st.sampled_from(inside).map(
        lambda n: n[data.draw(st.integers(0, n.num_addresses - 1), label="host")]),
        min_size=1, max_size=4), label="proxies")
    real = data.draw(ADDRESS.filter(lambda a: not is_trusted(a)), label="client")
    forged = data.draw(st.lists(st.one_of(ADDRESS.map(str), GARBAGE_HOP,
                                          st.sampled_from(inside).map(lambda n: str(n[0]))),
                                max_size=4), label="forged")
    styles = data.draw(st.lists(st.integers(0, 2), min_size=len(proxies) + 1,
                                max_size=len(proxies) + 1), label="styles")
    # Each proxy appends the address it got the request from; the last proxy is our peer.
    appended = [spell(real, styles[0])] + [spell(p, s) for p, s in
                                           zip(proxies[:-1], styles[1:], strict=False)]
    request = request_with(xff_headers(forged + appended, data.draw(st.integers(0, 5))),
                           peer=str(proxies[-1]))
    assert client_address(request, trusted) == real


@given(networks(), st.lists(st.one_of(ADDRESS.map(str), GARBAGE_HOP), max_size=6), ADDRESS)
def test_the_client_address_is_the_peer_or_a_hop(trusted: list[Any], hops: list[str],
                                                 peer: Any) -> None:
    """Generally: the answer is the peer or one of the hops, and every hop to its right
    (and the peer) is a trusted proxy."""
    request = request_with(xff_headers(hops, 0), peer=str(peer))
    found = client_address(request, trusted)
    is_trusted = trusted_by(trusted)
    if found == peer:
        return
    assert is_trusted(peer)
    parsed: list[ipaddress.IPv4Address | ipaddress.IPv6Address | None] = []
    for hop in hops:
        try:
            parsed.append(ipaddress.ip_address(hop.strip().strip("[]")))
        except ValueError:
            parsed.append(None)
    assert found in parsed
    position = len(parsed) - 1 - parsed[::-1].index(found)
    assert all(h is not None and is_trusted(h) for h in parsed[position + 1:])


def test_client_address_examples() -> None:
    proxy = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]

    def seen(peer: str, *xff: str) -> str:
        headers = [(b"x-forwarded-for", v.encode()) for v in xff]
        return str(client_address(request_with(headers, peer=peer), proxy))

    assert seen("10.0.0.1", "203.0.113.7") == "203.0.113.7"
    assert seen("::ffff:10.0.0.1", "203.0.113.7") == "203.0.113.7"  # dual-stack socket
    assert seen("fd00::1", "[2001:db8::7]") == "2001:db8::7"
    assert seen("10.0.0.1", "10.9.9.9, 203.0.113.7, 10.0.0.2") == "203.0.113.7"
    assert seen("10.0.0.1", "6.6.6.6", "203.0.113.7") == "203.0.113.7"  # two header lines
    assert seen("198.51.100.1", "203.0.113.7") == "198.51.100.1"  # untrusted peer
    assert seen("10.0.0.1", "garbage") == "10.0.0.1"  # nothing better than the proxy


# -- parse_nameserver -------------------------------------------------------------------

HOSTNAME = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}\Z")
PORT = st.integers(1, 65535)


@given(st.one_of(HOSTNAME, IPV4.map(str)), PORT)
def test_parse_nameserver_host_and_port(host: str, port: int) -> None:
    assert parse_nameserver(f"{host}:{port}") == (host, port)
    assert parse_nameserver(f"  {host}:{port} ") == (host, port)
    assert parse_nameserver(host) == (host, 53)


@given(IPV6, PORT)
def test_parse_nameserver_ipv6(address: Any, port: int) -> None:
    assert parse_nameserver(f"[{address}]:{port}") == (str(address), port)
    assert parse_nameserver(f"[{address}]") == (str(address), 53)
    assert parse_nameserver(str(address)) == (str(address), 53)


@given(ANY_TEXT)
@example("host:\u00b2")
@example("host:\u0665\u0663")
@example("[::1:53")
def test_parse_nameserver_answers_a_valid_address_or_value_error(text: str) -> None:
    """Anything: ValueError, or a host and a port in 1-65535 that were written in ASCII
    digits, with brackets only around an IPv6 address."""
    try:
        host, port = parse_nameserver(text)
    except ValueError:
        return
    assert isinstance(port, int) and 0 < port < 65536
    assert host and host == host.strip() and "[" not in host and "]" not in host, text
    tail = text.strip().rsplit(":", 1)[-1] if text.strip().count(":") == 1 or (
        text.strip().startswith("[") and "]:" in text) else None
    if tail is not None:
        assert tail.isascii() and tail.isdigit(), text
    if text.strip().startswith("["):
        assert "]" in text, text


# -- normalize_fqdn ---------------------------------------------------------------------

_FQDN_CHARS = set(string.ascii_lowercase + string.digits + "-.")


@given(st.text(ANY_CHAR, max_size=80))
@example("_acme-challenge.\ud800.example.com")
@example("_acme-challenge.www.example.com\u3002evil")
@example("_ACME-CHALLENGE.WWW.EXAMPLE.COM.")
@example("_acme-challenge.www\n.example.com")
@example("x" * 300)
def test_normalize_fqdn_answers_a_canonical_name_or_invalid_domain(raw: str) -> None:
    try:
        name = normalize_fqdn(raw)
    except InvalidDomain:
        return
    assert name.isascii() and name == name.lower() and not name.endswith("."), name
    assert len(name) <= 253
    for label in name.split("."):
        assert 0 < len(label) < 64
        assert label == CHALLENGE_LABEL or set(label) <= _FQDN_CHARS, label
    assert normalize_fqdn(name) == name  # idempotent
    assert normalize_fqdn(name + ".") == name


LABELS = st.lists(st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,15}[a-z0-9])?\Z"), min_size=2,
                  max_size=5).filter(lambda ls: not ls[-1].isdigit())


@given(LABELS)
def test_every_bound_name_is_its_own_normal_form(labels: list[str]) -> None:
    """What an account is bound to (direct or delegated) normalises to itself, in any
    case and with the trailing dot lego sends, so its own client always matches."""
    domain = normalize_domain(".".join(labels))
    for bound in (challenge_name(domain),
                  delegated_name("0c8e2f7a-1a53-4a43-8e0b-2f0f2d6e8c31", domain)):
        assert normalize_fqdn(bound) == bound
        assert normalize_fqdn(bound.upper() + ".") == bound


@given(LABELS, st.text(ANY_CHAR, min_size=1, max_size=3), st.integers(0, 30))
def test_an_edit_of_a_bound_name_does_not_normalise_to_it(labels: list[str], insert: str,
                                                          at: int) -> None:
    """Inserting characters into a bound name never yields the bound name again, unless
    the inserted text is one IDNA maps to nothing or to case (then it is the same name)."""
    bound = challenge_name(normalize_domain(".".join(labels)))
    at = at % (len(bound) + 1)
    edited = bound[:at] + insert + bound[at:]
    try:
        same = normalize_fqdn(edited) == bound
    except InvalidDomain:
        return
    if same:
        # Only ignorable characters (IDNA maps them away), case, or a final dot.
        stripped = re.sub(r"[\u00ad\u034f\u180b-\u180d\u200b-\u200d\u2060\ufe00-\ufe0f\ufeff]",
                          "", insert)
        assert stripped.lower() in ("", ".") or normalize_fqdn(
            bound[:at] + stripped + bound[at:]) == bound, (edited, insert)


# -- the certbot hook's account lookup --------------------------------------------------

KEY_DOMAINS = st.sampled_from(["example.com", "EXAMPLE.com.", "www.example.com", "*.example.com",
                               "_acme-challenge.example.com", "example.co", "xample.com",
                               "example.com.evil.test", "b\u00fccher.example", "xn--bcher-kva.example",
                               "not a domain", "", "com"])


@given(st.lists(KEY_DOMAINS, max_size=5, unique=True), st.one_of(KEY_DOMAINS, ANY_TEXT))
def test_account_for_finds_only_the_same_domain(keys: list[str], domain: str) -> None:
    credentials = {key: {"username": f"user-{n}", "key": key} for n, key in enumerate(keys)}
    try:
        wanted = normalize_domain(domain)
    except InvalidDomain:
        wanted = None
    matching = []
    for key in keys:
        try:
            if wanted is not None and normalize_domain(key) == wanted:
                matching.append(credentials[key])
        except InvalidDomain:
            pass
    try:
        found = account_for(credentials, domain)
    except HookError:
        assert not matching
        return
    assert found is matching[0]


def test_account_for_examples() -> None:
    creds = {"example.com": {"n": 1}, "www.example.com": {"n": 2}}
    assert account_for(creds, "*.example.com") == {"n": 1}
    assert account_for(creds, "EXAMPLE.COM.") == {"n": 1}
    assert account_for(creds, "_acme-challenge.www.example.com") == {"n": 2}
    for other in ("example.com.evil.test", "evil-example.com", "ww.example.com", "*.*.example.com"):
        with pytest.raises(HookError):
            account_for(creds, other)


# -- /update's body, through the app -------------------------------------------------------

LABEL, UPPER_LABEL, OTHER_LABEL = "<label>", "<LABEL>", "<other-label>"
GOOD = [challenge_value(n) for n in range(3)]
KEYS = st.sampled_from(["subdomain", "SubDomain", "SUBDOMAIN", "txt", "Txt", "TXT", "fqdn",
                        "value", "subdomain ", "sub_domain", "\u017fubdomain", "t\u0445t"])
VALUES = st.one_of(
    st.sampled_from([LABEL, UPPER_LABEL, OTHER_LABEL, *GOOD, GOOD[0] + "\n", " " + GOOD[0],
                     GOOD[0][:-1], GOOD[0] + "=", GOOD[0][:-1] + "+", GOOD[0].upper()]),
    JSON_SCALARS, st.lists(st.sampled_from([LABEL, GOOD[0]]), max_size=2),
)


NOISE = st.lists(st.tuples(KEYS, VALUES), max_size=2)
NEAR_VALID = st.tuples(
    NOISE, st.sampled_from(["subdomain", "SubDomain", "SUBDOMAIN"]),
    st.sampled_from([LABEL, UPPER_LABEL, OTHER_LABEL]),
    st.sampled_from(["txt", "Txt", "TXT"]),
    st.sampled_from([*GOOD, GOOD[0] + "\n", GOOD[0][:-1], GOOD[0] + "=", GOOD[0].upper()]),
    NOISE,
).map(lambda t: [*t[0], (t[1], t[2]), (t[3], t[4]), *t[5]])
BODIES = st.one_of(st.lists(st.tuples(KEYS, VALUES), max_size=5), NEAR_VALID)


@pytest.fixture
async def updater(sec_factory: Callable[..., Any]) -> Any:
    async with sec_factory() as h:
        account = await h.create_account(domain="www.example.com")
        yield h, account


@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(BODIES)
async def test_update_writes_only_for_the_right_subdomain_and_txt(
        updater: Any, pairs: list[tuple[str, Any]]) -> None:
    """Arbitrary JSON objects (duplicate keys in any case, wrong types, near-miss
    values) with the account's own credentials: DNS is written iff, after lower-casing
    keys (the last wins), ``subdomain`` is the account's label (any case) and ``txt``
    is 43 base64url characters; and then only that value at the account's name."""
    h, account = updater
    label = account["subdomain"]

    def fill(value: Any) -> Any:
        if isinstance(value, list):
            return [fill(v) for v in value]
        return {LABEL: label, UPPER_LABEL: label.upper(),
                OTHER_LABEL: "0c8e2f7a-1a53-4a43-8e0b-2f0f2d6e8c31"}.get(value, value) \
            if isinstance(value, str) else value

    members = [json.dumps(k) + ": " + json.dumps(fill(v)) for k, v in pairs]
    raw = ("{" + ", ".join(members) + "}").encode()
    effective = {k.lower(): fill(v) for k, v in pairs}  # what a JSON object with these
    subdomain, txt = effective.get("subdomain"), effective.get("txt")  # members means
    should_write = (isinstance(subdomain, str) and subdomain.lower() == label
                    and isinstance(txt, str) and re.fullmatch(r"[A-Za-z0-9_-]{43}", txt))
    before = h.snapshot()
    response = await h.client.post(
        "/update", content=raw,
        headers={"X-Api-User": account["username"], "X-Api-Key": account["password"]})
    after = h.snapshot()
    changed = before ^ after
    assert all((z, t, n) == ("example.com", "TXT", "_acme-challenge.www")
               for z, t, n, _ in changed), (raw, changed)
    if should_write:
        assert response.status_code == 200, (raw, response.text)
        assert response.json() == {"txt": txt}
        assert txt in h.txt_at("_acme-challenge.www.example.com")
    else:
        assert 400 <= response.status_code < 500, (raw, response.status_code, response.text)
        assert set(response.json()) == {"error"}
        assert not changed, raw
