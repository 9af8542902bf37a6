"""Environments for child processes: nothing of the caller's that would steer them, nothing
that leaves loopback.

``clean_env`` is the base of every child (the service, its CLI, the stand-in, Pebble, the
ACME clients); ``cli_env`` adds the service's settings; ``standin_service_env`` the
settings of a service in front of a DigitalOcean stand-in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Settings of ours and of the ACME clients: a caller's would change what a child does.
_STEERING_PREFIXES = (
    "ACME_DELEGATE_",
    "LEGO_",
    "HTTPREQ_",
    "ACME_DNS_",
    "PEBBLE_",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_",
    "CERTBOT_",
    "DNS_PROPAGATION_",
)
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")

#: Unless a caller says otherwise, the service waits for no DNS, and its nameservers are on
#: loopback: the default, DigitalOcean's, must never be asked from a test.
QUIET_DNS = {"wait_for_dns": "0", "nameservers": "127.0.0.1:53"}


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ minus our settings, the ACME clients' and proxies (NO_PROXY covers
    loopback, so nothing leaves the host), plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_STEERING_PREFIXES) and k not in _PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    if extra:
        env.update(extra)
    return env


def cli_env(**settings: str) -> dict[str, str]:
    """The environment of ``python -m app``: ``clean_env`` with this checkout first on
    PYTHONPATH and ``settings`` as ACME_DELEGATE_* (``QUIET_DNS`` where they do not say).
    ``cli_env(do_token="x")`` sets ACME_DELEGATE_DO_TOKEN=x."""
    env = clean_env({f"ACME_DELEGATE_{k.upper()}": v
                     for k, v in {**QUIET_DNS, **settings}.items()})
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    return env


def standin_service_env(database_url: str, *, api_url: str, dns: str, token: str,
                        admin_token: str, **settings: str) -> dict[str, str]:
    """``cli_env`` of a service writing to a DigitalOcean stand-in (API at ``api_url``,
    authoritative DNS at ``dns``, as NAMESERVERS spells it) and waiting for that DNS to
    serve each value before it answers 200, as deployed; ``settings`` add or override."""
    return cli_env(**{
        "database_url": database_url,
        "do_token": token,
        "do_api_url": api_url,
        "admin_token": admin_token,
        "nameservers": dns,
        "wait_for_dns": "20",
        "log_level": "INFO",
        **settings,
    })
