"""Reading what clients send, with every tolerance real clients need."""

from __future__ import annotations

import base64
import functools
import ipaddress
import json
from collections.abc import Sequence
from typing import Any

from fastapi import Request
from starlette.types import Scope

from app.core.names import IPAddress, IPNetwork, in_networks
from app.errors import MalformedJson

# The scope key under which BodyGuard (app.api.guards) leaves the body it read.
BODY = "acme_delegate.body"


async def request_body(request: Request) -> bytes:
    """The request's body: as BodyGuard read it, without a second pass through the
    receive channel and Starlette's stream (``Request.body``, for an app without it)."""
    body: bytes | None = request.scope.get(BODY)
    return body if body is not None else await request.body()


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object with lower-cased keys, whatever the Content-Type says.

    Empty and ``null`` mean "no body" (lego sends ``null``); Go clients send
    ``AllowFrom``/``SubDomain``/``Txt``; acme.sh sends JSON as a form.
    """
    if not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
        data = json.loads(text)
        if isinstance(data, dict) and not all(key == key.lower() for key in data):
            # Keys folded in document order, the last one winning, as Go's decoder (and
            # so the reference server) reads {"SubDomain": …, "subdomain": …}. With every
            # key in lower case already, the plain reading (the last one wins) is that.
            folded = json.loads(text, object_pairs_hook=_Object)
            return {key.lower(): value for key, value in folded.pairs}
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedJson() from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MalformedJson()
    return data


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


# Distinct peers remembered (least recently used forgotten first): the same few peers (a
# proxy, a client's connections) send every request.
_PEERS_MAX = 4096


@functools.lru_cache(maxsize=_PEERS_MAX)
def _parse_peer(text: str) -> IPAddress | None:
    """``_parse_ip`` of a TCP peer, once per peer. Only peers: a forwarded hop is
    whatever the client wrote, not worth memory."""
    return _parse_ip(text)


def client_address(request: Request, trusted: Sequence[IPNetwork]) -> IPAddress | None:
    """The real client: the peer, or X-Forwarded-For read right to left through
    trusted proxies only. Nobody else can choose the address we check."""
    return _client_address(request.scope, trusted)


_CLIENT = "acme_delegate.client"


def scope_client(scope: Scope, trusted: Sequence[IPNetwork]) -> IPAddress | None:
    """``client_address`` of this request, worked out once and kept in its scope: the
    authorizing dependency and the access log (``app.observability.Observe``) share it."""
    return _scope_client(scope, trusted)[0]


def scope_client_label(scope: Scope, trusted: Sequence[IPNetwork]) -> str | None:
    """``scope_client`` as text (the access log's ``client``), also worked out once."""
    return _scope_client(scope, trusted)[1]


def _scope_client(scope: Scope, trusted: Sequence[IPNetwork]
                  ) -> tuple[IPAddress | None, str | None]:
    try:
        found: tuple[IPAddress | None, str | None] = scope[_CLIENT]
    except KeyError:
        address = _client_address(scope, trusted)
        found = scope[_CLIENT] = (address, _label(address))
    return found


@functools.lru_cache(maxsize=_PEERS_MAX)
def _label(address: IPAddress | None) -> str | None:
    return str(address) if address is not None else None


def _client_address(scope: Scope, trusted: Sequence[IPNetwork]) -> IPAddress | None:
    peer = scope.get("client")
    address = _parse_peer(peer[0]) if peer else None
    if address is None or not trusted:
        return address
    hops = [h for k, v in scope["headers"] if k == b"x-forwarded-for"
            for h in v.decode("latin-1").split(",")]
    while hops and in_networks(address, trusted):
        hop = _parse_ip(hops.pop())
        if hop is None:
            break
        address = hop
    return address
