"""Every rule about names, keys and values, in one place.

The API, the CLI and the admin API all validate through these functions, and
the DigitalOcean writer uses ``is_within`` as its last line of defence.
Names are handled as lower-case ASCII (A-labels) without a trailing dot.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import idna

from app.errors import BadTxt, InvalidAllowfrom, InvalidDomain

CHALLENGE_LABEL = "_acme-challenge"
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63

_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# An ACME DNS-01 value is base64url(SHA-256(key authorization)): always 43 characters.
_TXT_VALUE = re.compile(r"[A-Za-z0-9_-]{43}")
# Issued keys are 30 random bytes in base64url: 40 characters.
# Always fullmatch: "$" would let a trailing newline through.
_KEY = re.compile(r"[A-Za-z0-9_-]{40}")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def a_label(label: str) -> str:
    """One label as a lower-case A-label, or InvalidDomain."""
    if label.isascii():
        label = label.lower()
        if label.startswith("xn--"):
            try:
                # Round-trip through the U-label so a malformed punycode label is refused.
                label = idna.encode(idna.decode(label)).decode("ascii")
            except idna.IDNAError as exc:
                raise InvalidDomain("invalid punycode label") from exc
    else:
        try:
            label = idna.encode(label, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidDomain("label is not a valid internationalized name") from exc
    if not _LDH_LABEL.fullmatch(label):
        raise InvalidDomain("labels are letters, digits and inner hyphens, 1 to 63 characters")
    return label


def normalize_domain(raw: str) -> str:
    """A domain someone wants a certificate for, as its canonical A-label form.

    Accepts upper case, one trailing dot, Unicode (IDNA 2008 with UTS 46
    mapping) and, for convenience, a leading ``*.`` or ``_acme-challenge.``:
    both mean the same challenge name as the bare domain.
    """
    name = raw.strip()
    if not name or "\x00" in name:
        raise InvalidDomain("empty domain")
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
    elif labels[0].lower() == CHALLENGE_LABEL:
        labels = labels[1:]
    if len(labels) < 2:
        raise InvalidDomain("a domain needs at least two labels")
    if any(not label for label in labels):
        raise InvalidDomain("empty label")
    result = ".".join(a_label(label) for label in labels)
    if len(result) > MAX_NAME_LENGTH - len(CHALLENGE_LABEL) - 1:
        raise InvalidDomain("domain too long for its challenge name")
    if result.rsplit(".", 1)[1].isdigit():
        raise InvalidDomain("an IP address is not a domain")
    return result


def normalize_fqdn(raw: str) -> str:
    """A fully qualified DNS name as a client sends it (httpreq ``fqdn``), canonical.

    Like ``normalize_domain`` but keeps ``_acme-challenge`` and underscore-free
    delegation labels as they are; used to compare with a bound name, never to
    create one.
    """
    name = raw.strip()
    if name.endswith("."):
        name = name[:-1]
    labels = name.split(".")
    if not name or any(not label for label in labels):
        raise InvalidDomain("empty label")
    out = []
    for label in labels:
        if label.lower() == CHALLENGE_LABEL:
            out.append(CHALLENGE_LABEL)
        else:
            out.append(a_label(label))
    result = ".".join(out)
    if len(result) > MAX_NAME_LENGTH:
        raise InvalidDomain("name too long")
    return result


def challenge_name(domain: str) -> str:
    """The direct-mode bound name for a normalized domain."""
    return f"{CHALLENGE_LABEL}.{domain}"


def new_delegation_label() -> str:
    """A random label for a delegated name: a uuid4, as acme-dns uses."""
    return str(uuid.uuid4())


def delegated_name(label: str, delegation_domain: str) -> str:
    name = f"{label}.{delegation_domain}"
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidDomain("delegation domain too long")
    return name


def bindable(name: str, delegation_domain: str | None) -> bool:
    """The only two shapes a bound name has: ``_acme-challenge.<domain>`` (direct) or one
    label under the delegation domain (delegated). The DigitalOcean writer refuses any
    other name, whatever a bug upstream asks of it."""
    first, _, rest = name.partition(".")
    if first == CHALLENGE_LABEL and rest.count(".") >= 1:
        return True
    return (delegation_domain is not None and rest == delegation_domain
            and bool(_LDH_LABEL.fullmatch(first)))


def is_within(name: str, zone: str) -> bool:
    """True when ``name`` is ``zone`` or below it, on a label boundary."""
    return name == zone or name.endswith("." + zone)


def relative_name(name: str, zone: str) -> str:
    """``name`` relative to ``zone`` as DigitalOcean spells it (``@`` for the apex)."""
    if name == zone:
        return "@"
    if not name.endswith("." + zone):
        raise InvalidDomain("name is not inside the zone")
    return name[: -len(zone) - 1]


def longest_zone(name: str, zones: Iterable[str]) -> str | None:
    """The zone that contains ``name`` with the most labels, or None."""
    best: str | None = None
    for zone in zones:
        if is_within(name, zone) and (best is None or len(zone) > len(best)):
            best = zone
    return best


def check_txt_value(value: object) -> str:
    """An ACME DNS-01 challenge value, or BadTxt."""
    if not isinstance(value, str) or not _TXT_VALUE.fullmatch(value):
        raise BadTxt()
    return value


def looks_like_key(value: object) -> bool:
    return isinstance(value, str) and bool(_KEY.fullmatch(value))


# A UUID as ``str(uuid.UUID(...))`` spells it, in either case.
_USERNAME = re.compile("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                       "[0-9a-fA-F]{12}")


def looks_like_username(value: object) -> bool:
    """An account username: a canonical UUID string (lower case once lowered)."""
    return isinstance(value, str) and bool(_USERNAME.fullmatch(value))


def parse_allowfrom(entries: object) -> list[IPNetwork]:
    """acme-dns ``allowfrom``: CIDRs, brackets around IPv6 stripped.

    A bare address is taken as a single-host network (the reference server
    refuses it; accepting it is a friendly extension). Host bits set, junk, or
    a non-list is InvalidAllowfrom.
    """
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InvalidAllowfrom()
    networks: list[IPNetwork] = []
    for entry in entries:
        if not isinstance(entry, str) or len(entry) > 64:
            raise InvalidAllowfrom()
        text = entry.strip().replace("[", "").replace("]", "")
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise InvalidAllowfrom() from exc
        if network not in networks:
            networks.append(network)
    return networks


def in_networks(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    """``address`` in any of ``networks``; an IPv4-mapped IPv6 address matches in both
    of its forms (``::ffff:192.0.2.1`` is in ``192.0.2.0/24`` and in ``::ffff:0:0/96``)."""
    forms: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        forms.append(address.ipv4_mapped)
    return any(form.version == net.version and form in net
               for form in forms for net in networks)


def address_allowed(address: IPAddress | None, allowfrom: Sequence[IPNetwork]) -> bool:
    """Deny-by-default check of a client address against an allow-list (empty: any)."""
    if not allowfrom:
        return True
    return address is not None and in_networks(address, allowfrom)


def in_utc(when: datetime) -> datetime:
    """The same instant in UTC, which is how times are stored and compared. An instant
    with no UTC spelling in years 1 to 9999 (``0001-01-01T00:00:00+14:00``,
    ``9999-12-31T23:59:59-12:00``) is bad input: ValueError."""
    try:
        return when.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time lies outside years 1 to 9999 in UTC") from None
