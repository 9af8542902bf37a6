"""Name, value and allow-list rules: examples and properties."""

from __future__ import annotations

import ipaddress
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.names import (
    address_allowed,
    check_txt_value,
    is_within,
    longest_zone,
    looks_like_key,
    looks_like_username,
    normalize_domain,
    normalize_fqdn,
    parse_allowfrom,
    relative_name,
)
from app.errors import BadTxt, InvalidAllowfrom, InvalidDomain


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("www.example.com", "www.example.com"),
        ("WWW.Example.COM.", "www.example.com"),
        ("  www.example.com  ", "www.example.com"),
        ("*.example.com", "example.com"),
        ("_acme-challenge.www.example.com", "www.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("XN--BCHER-KVA.example", "xn--bcher-kva.example"),
        ("a-b.example.co.uk", "a-b.example.co.uk"),
    ],
)
def test_normalize_domain(raw: str, expected: str) -> None:
    assert normalize_domain(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["", ".", "com", "example..com", ".example.com", "example.com..", "-a.example.com",
     "a-.example.com", "a_b.example.com", "*.*.example.com", "a.*.example.com",
     "exa mple.com", "example.com\x00.evil", "192.0.2.1", "a" * 64 + ".example.com",
     ".".join(["a" * 60] * 4) + ".com", "xn--zz.example.com", "ex%61mple.com",
     "*", "_acme-challenge.*.example.com"],
)
def test_normalize_domain_refuses(raw: str) -> None:
    with pytest.raises(InvalidDomain):
        normalize_domain(raw)


def test_normalize_fqdn_keeps_the_challenge_label() -> None:
    assert normalize_fqdn("_ACME-Challenge.WWW.example.com.") == "_acme-challenge.www.example.com"
    for bad in ("_other.example.com", "a..b", "", "x.example.com\x00"):
        with pytest.raises(InvalidDomain):
            normalize_fqdn(bad)


def test_zone_matching_is_on_label_boundaries() -> None:
    assert is_within("a.example.com", "example.com")
    assert is_within("example.com", "example.com")
    assert not is_within("notexample.com", "example.com")
    assert longest_zone("a.b.example.co.uk", ["co.uk", "example.co.uk", "b.example.co.uk"]) == (
        "b.example.co.uk")
    assert longest_zone("example.org", ["example.com"]) is None
    assert relative_name("example.com", "example.com") == "@"
    assert relative_name("_acme-challenge.www.example.com", "example.com") == "_acme-challenge.www"
    with pytest.raises(InvalidDomain):
        relative_name("www.example.com.evil", "example.com")


LABEL = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=20)


@given(st.lists(LABEL, min_size=2, max_size=5))
def test_normalize_domain_is_idempotent_and_case_blind(labels: list[str]) -> None:
    if labels[-1].isdigit():
        labels[-1] += "x"
    name = ".".join(labels)
    once = normalize_domain(name.upper() + ".")
    assert once == name
    assert normalize_domain(once) == once


@given(st.text(max_size=80))
def test_normalize_domain_answers_a_canonical_name_or_invalid_domain(raw: str) -> None:
    try:
        name = normalize_domain(raw)
    except InvalidDomain:
        return
    assert name == name.lower() and name.isascii() and not name.endswith(".")
    assert all(0 < len(label) < 64 for label in name.split("."))
    assert set(name) <= set(string.ascii_lowercase + string.digits + "-.")


@given(st.text(max_size=60))
def test_only_43_base64url_characters_are_values(raw: str) -> None:
    ok = len(raw) == 43 and set(raw) <= set(string.ascii_letters + string.digits + "-_")
    if ok:
        assert check_txt_value(raw) == raw
    else:
        with pytest.raises(BadTxt):
            check_txt_value(raw)


def test_key_and_username_shapes() -> None:
    assert looks_like_key("A" * 40) and not looks_like_key("A" * 39)
    assert not looks_like_key("A" * 39 + "=")
    assert looks_like_username("0b0f7f3e-6a1e-4c2e-9a8e-1f2d3c4b5a69")
    assert not looks_like_username("0B0F7F3E-6A1E-4C2E-9A8E-1F2D3C4B5A69-")
    assert not looks_like_username("{0b0f7f3e-6a1e-4c2e-9a8e-1f2d3c4b5a69}")
    assert not looks_like_username(None)


def test_allowfrom_parsing_and_matching() -> None:
    nets = parse_allowfrom(["192.0.2.0/24", "[2001:db8::]/32", "198.51.100.7"])
    assert [str(n) for n in nets] == ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7/32"]
    assert address_allowed(ipaddress.ip_address("192.0.2.9"), nets)
    assert address_allowed(ipaddress.ip_address("::ffff:192.0.2.9"), nets)  # IPv4-mapped
    assert address_allowed(ipaddress.ip_address("2001:db8::5"), nets)
    assert not address_allowed(ipaddress.ip_address("192.0.3.1"), nets)
    assert not address_allowed(None, nets)
    assert address_allowed(None, [])
    for bad in (["192.0.2.1/24"], ["x"], "192.0.2.0/24", [None], ["1" * 100]):
        with pytest.raises(InvalidAllowfrom):
            parse_allowfrom(bad)


@given(st.lists(st.text(max_size=50), max_size=5))
def test_allowfrom_never_accepts_garbage(entries: list[str]) -> None:
    try:
        nets = parse_allowfrom(entries)
    except InvalidAllowfrom:
        return
    for entry, net in zip(entries, nets, strict=False):
        assert isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network), entry
