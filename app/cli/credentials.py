"""A credential as each client wants it (``--format``), and ``--merge-into`` a file that
already holds others."""

from __future__ import annotations

import base64
import json
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

import click

FORMATS = ("acme-dns", "cert-manager", "lego", "k8s-secret", "env")
ACME_DNS_FIELDS = ("username", "password", "fulldomain", "subdomain", "allowfrom")
DEFAULT_SECRET_NAME = "acme-dns"  # noqa: S105 (a name, not a secret)
DATA_KEY = "acmedns.json"  # the key cert-manager's acmeDNS solver is usually pointed at


def acme_dns(account: dict[str, Any]) -> dict[str, Any]:
    """The exact acme-dns ``/register`` object out of an issued account's fields."""
    return {k: account[k] for k in ACME_DNS_FIELDS}


def _domain(account: dict[str, Any], fmt: str) -> str:
    domain = account.get("domain")
    if not domain:
        raise click.ClickException(f"--format {fmt} needs an account issued with --domain")
    return str(domain)


def secret_manifest(accounts: dict[str, Any], *, name: str, namespace: str | None
                    ) -> dict[str, Any]:
    """A Kubernetes Secret holding cert-manager's acmeDNS JSON under ``acmedns.json``."""
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque",
            "stringData": {DATA_KEY: json.dumps(accounts, indent=2)}}


def render(account: dict[str, Any], fmt: str, *, server_url: str | None,
           secret_name: str = DEFAULT_SECRET_NAME, namespace: str | None = None) -> dict[str, Any]:
    """The document ``--format fmt`` prints for an issued (or rotated) account."""
    if fmt == "acme-dns":
        return acme_dns(account)
    if fmt == "env":
        if not server_url:
            raise click.ClickException(
                "--format env needs this service's URL: --server-url (or PUBLIC_URL)")
        base = server_url.rstrip("/")
        return {
            # acme.sh's dns_acmedns
            "ACMEDNS_BASE_URL": base, "ACMEDNS_USERNAME": account["username"],
            "ACMEDNS_PASSWORD": account["password"], "ACMEDNS_SUBDOMAIN": account["subdomain"],
            # lego's httpreq (and so Traefik's); for a delegated name keep lego's CNAME
            # support on (the default), so it sends the name the credential is bound to
            "HTTPREQ_ENDPOINT": base, "HTTPREQ_USERNAME": account["username"],
            "HTTPREQ_PASSWORD": account["password"],
        }
    domain = _domain(account, fmt)
    if fmt == "cert-manager":
        # cert-manager's acmeDNS secret: keyed by the bare domain.
        return {domain: acme_dns(account)}
    if fmt == "k8s-secret":
        return secret_manifest({domain: acme_dns(account)}, name=secret_name,
                               namespace=namespace)
    lego = {k: account[k] for k in ("fulldomain", "subdomain", "username", "password")}
    if server_url:
        lego["server_url"] = server_url
    return {domain: lego}


def env_lines(variables: dict[str, Any]) -> str:
    return "\n".join(f"export {k}={shlex.quote(str(v))}" for k, v in variables.items())


def merge_into(path: Path, account: dict[str, Any], *, server_url: str | None,
               fmt: str) -> tuple[bool, int]:
    """Add (or replace) the account's domain in the cert-manager JSON or the Secret
    manifest at ``path``, keeping every other domain; written atomically, mode 600.
    Returns (replaced, how many domains the file now holds)."""
    import yaml

    domain = _domain(account, "… --merge-into")
    entry = (render(account, "lego", server_url=server_url)[domain] if fmt == "lego"
             else acme_dns(account))
    text = path.read_text() if path.exists() else "{}"
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise click.ClickException(f"{path}: neither JSON nor YAML ({exc})") from None
    if not isinstance(document, dict):
        raise click.ClickException(f"{path}: expected an object of domains or a Secret")
    is_secret = document.get("kind") == "Secret"
    if is_secret:
        string_data = document.get("stringData") or {}
        if DATA_KEY in string_data:
            accounts = json.loads(string_data[DATA_KEY])
        elif DATA_KEY in (document.get("data") or {}):
            accounts = json.loads(base64.b64decode(document["data"][DATA_KEY]))
        else:
            accounts = {}
    else:
        accounts = document
    if not isinstance(accounts, dict):
        raise click.ClickException(f"{path}: its accounts are not an object of domains")
    replaced = domain in accounts
    accounts[domain] = entry
    if is_secret:
        (document.get("data") or {}).pop(DATA_KEY, None)
        if document.get("data") == {}:
            del document["data"]
        document.setdefault("stringData", {})[DATA_KEY] = json.dumps(accounts, indent=2)
        out = document
    else:
        out = accounts
    as_json = text.lstrip().startswith("{")
    body = (json.dumps(out, indent=2) + "\n" if as_json
            else yaml.safe_dump(out, sort_keys=False, default_flow_style=False))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return replaced, len(accounts)
