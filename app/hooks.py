"""certbot ``--manual-auth-hook`` / ``--manual-cleanup-hook``: talk to an acme-delegate
server with a credential from a cert-manager style file, and wait for DNS."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from app.core.names import check_txt_value, normalize_domain
from app.errors import HookError, InvalidDomain
from app.propagation import (
    Nameserver,
    PropagationChecker,
    WaitOutcome,
    discover_nameservers,
)

ACCOUNT_FIELDS = ("username", "password", "fulldomain", "subdomain")


def load_credentials(path: Path) -> dict[str, dict[str, Any]]:
    """The credentials file: ``{"example.com": {"username", "password", "fulldomain",
    "subdomain", ...}}`` (cert-manager's acmeDNS secret). Refused if others may read it."""
    try:
        info = path.stat()
    except OSError as exc:
        raise HookError(f"cannot read credentials file {path}: {exc.strerror}") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HookError(
            f"credentials file {path} is accessible by group or others "
            f"(mode {stat.filemode(info.st_mode)}): run chmod 600 {path}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HookError(f"credentials file {path} is not valid JSON") from exc
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and all(isinstance(v.get(f), str) for f in ACCOUNT_FIELDS)
        for v in data.values()
    ):
        raise HookError(
            f"credentials file {path}: expected {{\"<domain>\": {{{', '.join(ACCOUNT_FIELDS)}}}}}"
        )
    return data


def account_for(credentials: Mapping[str, dict[str, Any]], domain: str) -> dict[str, Any]:
    """The account for a certbot domain; ``*.example.com`` uses ``example.com``'s."""
    try:
        wanted = normalize_domain(domain)
    except InvalidDomain as exc:
        raise HookError(f"CERTBOT_DOMAIN {domain!r} is not a domain") from exc
    for key, account in credentials.items():
        try:
            if normalize_domain(key) == wanted:
                return account
        except InvalidDomain:
            continue
    raise HookError(f"no account for {wanted} in the credentials file")


def certbot_env(env: Mapping[str, str]) -> tuple[str, str]:
    domain, value = env.get("CERTBOT_DOMAIN"), env.get("CERTBOT_VALIDATION")
    if not domain or not value:
        raise HookError("CERTBOT_DOMAIN and CERTBOT_VALIDATION are not set: run me from certbot")
    try:
        return domain, check_txt_value(value)
    except Exception as exc:
        raise HookError("CERTBOT_VALIDATION is not a DNS-01 value") from exc


def _post(server: str, path: str, account: Mapping[str, Any], **kwargs: Any) -> httpx.Response:
    url = server.rstrip("/") + path
    try:
        response = httpx.post(url, timeout=60, **kwargs)
    except httpx.HTTPError as exc:
        raise HookError(f"cannot reach {url}: {type(exc).__name__}") from exc
    if response.status_code != 200:
        try:
            code = response.json().get("error", "unknown")
        except ValueError:
            code = "unreadable answer"
        raise HookError(f"{url} answered {response.status_code} ({code})")
    return response


async def auth(
    *,
    server: str,
    credentials: Path,
    nameserver: Nameserver | None,
    timeout: float,
    env: Mapping[str, str] = os.environ,
) -> None:
    domain, value = certbot_env(env)
    account = account_for(load_credentials(credentials), domain)
    _post(server, "/update", account,
          json={"subdomain": account["subdomain"], "txt": value},
          headers={"X-Api-User": account["username"], "X-Api-Key": account["password"]})
    name = account["fulldomain"]
    servers = [nameserver] if nameserver else await discover_nameservers(name)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    say(f"acme-delegate: value for {domain} put at {name}; waiting for DNS "
        f"on {', '.join(map(str, servers))}")
    checker = PropagationChecker(servers)
    try:
        result = await checker.wait(name, {value}, timeout=timeout)
    finally:
        await checker.close()
    if result.outcome is not WaitOutcome.SEEN:
        late = ", ".join(map(str, result.pending or servers))
        raise HookError(
            f"the value for {domain} did not appear at {name} on {late} within "
            f"{int(timeout)}s ({result.outcome})"
        )
    say(f"acme-delegate: {name} answers the value")


def cleanup(*, server: str, credentials: Path, env: Mapping[str, str] = os.environ) -> None:
    domain, value = certbot_env(env)
    account = account_for(load_credentials(credentials), domain)
    _post(server, "/cleanup", account, json={"fqdn": account["fulldomain"] + ".", "value": value},
          auth=(account["username"], account["password"]))
