"""Running without a DigitalOcean token: a local stand-in, clearly labelled, and a demo
credential, so one command shows a value going in over the API and coming out of DNS."""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from app.config import Settings
from app.core.models import IssuedAccount
from app.propagation import parse_nameserver
from app.standin import Standin

DEMO_ZONES = ("example.com", "example.org")
DEMO_DELEGATION_DOMAIN = "acme.example.org"
# The stand-in's DNS serves a change this long after the API call, as DigitalOcean's
# nameservers lag its API: /update's 200 waits for it (ACME_DELEGATE_WAIT_FOR_DNS).
DEMO_PROPAGATION_DELAY = 2.0


@dataclass(frozen=True)
class Demo:
    settings: Settings  # pointed at the stand-in
    dns_hostport: str  # where the stand-in's DNS answers


@contextmanager
def start_demo(settings: Settings, *, dns_port: int) -> Iterator[Demo]:
    """Start the stand-in and yield settings pointed at it.

    Its records live in memory, so unless DATABASE_URL is set the demo also uses a
    throwaway SQLite file: a real deployment's database never sees demo accounts.
    """
    with (
        tempfile.TemporaryDirectory(prefix="acme-delegate-demo-") as tmp_name,
        Standin(zones=DEMO_ZONES, dns_port=dns_port,
                propagation_delay=DEMO_PROPAGATION_DELAY) as standin,
    ):
        tmp = Path(tmp_name)
        update: dict[str, object] = {
            "do_token": SecretStr(standin.token),
            "do_api_url": standin.api_url,
            "delegation_domain": settings.delegation_domain or DEMO_DELEGATION_DOMAIN,
            # 200 means the stand-in's DNS serves the value, as DigitalOcean's would.
            "nameservers": [parse_nameserver(standin.dns_hostport)],
        }
        if "database_url" not in settings.model_fields_set:
            update["database_url"] = f"sqlite:///{tmp / 'demo.sqlite3'}"
        print(
            "\n*** STAND-IN MODE: no ACME_DELEGATE_DO_TOKEN, so nothing reaches DigitalOcean.\n"
            f"*** A local stand-in serves the DigitalOcean API at {standin.api_url} and DNS at\n"
            f"*** {standin.dns_hostport} for the zones {', '.join(DEMO_ZONES)}; its DNS serves a\n"
            f"*** change {DEMO_PROPAGATION_DELAY:g} s after the API call, and /update answers "
            "once it does.\n",
            file=sys.stderr,
            flush=True,
        )
        yield Demo(settings.model_copy(update=update), standin.dns_hostport)


def announce(issued: IssuedAccount, *, api_url: str, dns_hostport: str) -> None:
    """Print the demo credential and the two commands that show it working."""
    account = issued.acme_dns_json()
    host, _, port = dns_hostport.rpartition(":")
    value = base64.urlsafe_b64encode(hashlib.sha256(b"demo").digest()).rstrip(b"=").decode()
    update = json.dumps({"subdomain": account["subdomain"], "txt": value})
    print(
        "*** Demo credential (bound to _acme-challenge.www.example.com, shown once):\n"
        f"{json.dumps(account)}\n\n"
        "*** Put a challenge value:\n"
        f"curl -s -X POST {api_url}/update -H 'X-Api-User: {account['username']}' "
        f"-H 'X-Api-Key: {account['password']}' -d '{update}'\n\n"
        "*** See it in DNS:\n"
        f"dig +short @{host} -p {port} TXT {account['fulldomain']}\n"
        f"  (or: acme-delegate dns-query {account['fulldomain']} --nameserver "
        f"{dns_hostport})\n",
        file=sys.stderr,
        flush=True,
    )
