"""A local stand-in for the DigitalOcean Domains API and its authoritative DNS.

Used by tests, by `acme-delegate serve` without a token (the demo), and for local
development. Everything binds to loopback only.
"""

from app.standin.api import create_standin_app
from app.standin.dns import DNSServer, resolve
from app.standin.server import DEFAULT_TOKEN, Standin, StandinError, start_standin
from app.standin.state import (
    Faults,
    RateLimits,
    Record,
    RequestLogEntry,
    StandinState,
    Zone,
)

__all__ = [
    "DEFAULT_TOKEN",
    "DNSServer",
    "Faults",
    "RateLimits",
    "Record",
    "RequestLogEntry",
    "Standin",
    "StandinError",
    "StandinState",
    "Zone",
    "create_standin_app",
    "resolve",
    "start_standin",
]
