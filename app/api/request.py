"""Reading what clients send, with every tolerance real clients need."""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Sequence
from typing import Any

from fastapi import Request

from app.core.names import IPAddress, IPNetwork, in_networks
from app.errors import MalformedJson


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object with lower-cased keys, whatever the Content-Type says.

    Empty and ``null`` mean "no body" (lego sends ``null``); Go clients send
    ``AllowFrom``/``SubDomain``/``Txt``; acme.sh sends JSON as a form.
    """
    if not raw.strip():
        return {}
    try:
        # Keys folded in document order, the last one winning, as Go's decoder (and so the
        # reference server) reads {"SubDomain": …, "subdomain": …}.
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_Object)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedJson() from exc
    if data is None:
        return {}
    if not isinstance(data, _Object):
        raise MalformedJson()
    return {key.lower(): value for key, value in data.pairs}


class _Object(dict[str, Any]):
    """A JSON object that remembers its members in document order."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


def basic_auth(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII input alike
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _parse_ip(text: str) -> IPAddress | None:
    text = text.strip().strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(request: Request, trusted: Sequence[IPNetwork]) -> IPAddress | None:
    """The real client: the peer, or X-Forwarded-For read right to left through
    trusted proxies only. Nobody else can choose the address we check."""
    address = _parse_ip(request.client.host) if request.client else None
    if address is None or not trusted:
        return address
    hops = [h for v in request.headers.getlist("x-forwarded-for") for h in v.split(",")]
    while hops and in_networks(address, trusted):
        hop = _parse_ip(hops.pop())
        if hop is None:
            break
        address = hop
    return address
