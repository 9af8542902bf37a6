"""The ACME clients the end-to-end tests and the benchmarks drive against Pebble: lego
(Debian's 4.9.1 CLI, ``--dns httpreq``), pylego (lego 4.34 as a library: every provider,
acme-dns among them), certbot (``--manual`` with hooks, and certbot-dns-acmedns), each as a
ready-to-run :class:`~tests.support.processes.ToolCommand`; where they are, and the
virtual environments of the pip-installed ones.

Every endpoint handed to a builder is checked to be on loopback. See
tests/e2e/FINDINGS.md for the facts behind every choice here.

Only the standard library at import time, so that CI can make the venvs before the
project's own environment exists::

    python3 -m tests.support.acme status          # where each tool is, or how to install it
    python3 -m tests.support.acme install-venvs   # the pylego and certbot-dns-acmedns venvs
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.env import clean_env
from tests.support.pebble import PebbleInstance, find_pebble
from tests.support.ports import require_loopback
from tests.support.processes import ToolCommand
from tests.support.tls import ca_bundle, find_openssl, make_csr
from tests.support.tools import ToolMissing, env_path, find_executable, python_can_import

# --------------------------------------------------------------------------
# Where the clients are
# --------------------------------------------------------------------------

#: Where :func:`install_venvs` puts the pip-installed clients by default.
DEFAULT_VENV_ROOT = Path(os.environ.get("ACME_E2E_VENV_ROOT", "/opt/acme-e2e"))
#: Versions seen working (see FINDINGS.md).
PYLEGO_REQUIREMENT = "pylego==0.1.49"
CERTBOT_ACMEDNS_REQUIREMENTS = ("certbot-dns-acmedns==0.1.0", "certbot==5.8.0")

_ROOT = DEFAULT_VENV_ROOT
_CB_REQS = " ".join(f"'{r}'" for r in CERTBOT_ACMEDNS_REQUIREMENTS)
_PYLEGO_HINT = (
    f"python3.11 -m venv {_ROOT}/pylego && {_ROOT}/pylego/bin/pip install "
    f"'{PYLEGO_REQUIREMENT}'   (or: python3 -m tests.support.acme install-venvs; or set "
    "ACME_E2E_PYLEGO_PYTHON to a python that can `import pylego`)"
)
_CERTBOT_ACMEDNS_HINT = (
    f"python3.11 -m venv {_ROOT}/certbot-acmedns && {_ROOT}/certbot-acmedns/bin/pip install "
    f"{_CB_REQS}   (its own venv: it drags in certbot 5.x from PyPI; or: python3 -m "
    "tests.support.acme install-venvs; or set ACME_E2E_CERTBOT_ACMEDNS to that venv's "
    "certbot)"
)


def find_lego() -> str:
    """Path to Debian's lego 4.9.1 (env ACME_E2E_LEGO overrides)."""
    return find_executable(
        "lego", "ACME_E2E_LEGO", "/usr/bin/lego",
        hint="apt-get update && apt-get install -y lego   (Debian bookworm: 4.9.1-1; has "
        "httpreq, NOT acme-dns)")


def find_certbot() -> str:
    """Path to Debian's certbot 2.1 (env ACME_E2E_CERTBOT overrides).

    /usr/bin/certbot is preferred over PATH so an activated venv's certbot
    (e.g. the certbot-dns-acmedns one) is not picked by accident.
    """
    return find_executable(
        "certbot", "ACME_E2E_CERTBOT", "/usr/bin/certbot",
        hint="apt-get update && apt-get install -y certbot   (Debian bookworm: 2.1.0-4)")


def find_pylego_python() -> str:
    """A python interpreter that can ``import pylego``.

    Order: env ACME_E2E_PYLEGO_PYTHON, the current interpreter,
    DEFAULT_VENV_ROOT/pylego, /tmp/e2e-venv (the scratch venv used while
    writing FINDINGS.md).
    """
    explicit = env_path("ACME_E2E_PYLEGO_PYTHON")
    if explicit:
        if python_can_import(explicit, "pylego"):
            return explicit
        raise ToolMissing("pylego", _PYLEGO_HINT,
                          f"ACME_E2E_PYLEGO_PYTHON={explicit} cannot import pylego")
    import importlib.util

    if importlib.util.find_spec("pylego") is not None:
        return sys.executable
    for cand in (DEFAULT_VENV_ROOT / "pylego/bin/python", Path("/tmp/e2e-venv/bin/python")):
        if cand.exists() and python_can_import(str(cand), "pylego"):
            return str(cand)
    raise ToolMissing("pylego", _PYLEGO_HINT)


def find_certbot_acmedns() -> str:
    """The ``certbot`` executable of a venv that has certbot-dns-acmedns.

    Order: env ACME_E2E_CERTBOT_ACMEDNS, DEFAULT_VENV_ROOT/certbot-acmedns,
    /tmp/cb-venv (scratch venv used while writing FINDINGS.md).
    """
    explicit = env_path("ACME_E2E_CERTBOT_ACMEDNS")
    cands = [Path(explicit)] if explicit else []
    cands += [DEFAULT_VENV_ROOT / "certbot-acmedns/bin/certbot", Path("/tmp/cb-venv/bin/certbot")]
    for cand in cands:
        py = cand.parent / "python"
        if cand.exists() and py.exists() and python_can_import(str(py), "certbot_dns_acmedns"):
            return str(cand)
    if explicit:
        raise ToolMissing("certbot-dns-acmedns", _CERTBOT_ACMEDNS_HINT,
                          f"ACME_E2E_CERTBOT_ACMEDNS={explicit} has no certbot_dns_acmedns")
    raise ToolMissing("certbot-dns-acmedns", _CERTBOT_ACMEDNS_HINT)


def tool_status() -> dict[str, str]:
    """Each tool -> its path, or ``MISSING: <install hint>``."""
    out: dict[str, str] = {}
    finders = {
        "pebble": find_pebble,
        "lego": find_lego,
        "certbot": find_certbot,
        "openssl": find_openssl,
        "pylego": find_pylego_python,
        "certbot-dns-acmedns": find_certbot_acmedns,
    }
    for name, fn in finders.items():
        try:
            out[name] = fn()
        except ToolMissing as exc:
            out[name] = f"MISSING: {exc}"
    try:
        import cryptography

        out["cryptography"] = f"python package {cryptography.__version__} (used for certs)"
    except ImportError:
        out["cryptography"] = "not importable: openssl CLI is used for certs/CSRs instead"
    return out


def install_venvs(root: Path = DEFAULT_VENV_ROOT, python: str | None = None) -> dict[str, Path]:
    """Create the pylego and certbot-dns-acmedns venvs under ``root`` (uses pip)."""
    py = python or sys.executable
    made: dict[str, Path] = {}
    plan = {"pylego": [PYLEGO_REQUIREMENT], "certbot-acmedns": list(CERTBOT_ACMEDNS_REQUIREMENTS)}
    for name, reqs in plan.items():
        venv = root / name
        if not (venv / "bin/python").exists():
            subprocess.run([py, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run([str(venv / "bin/pip"), "install", "-q", *reqs], check=True, timeout=900)
        made[name] = venv
    return made



# --------------------------------------------------------------------------
# lego (Debian 4.9.1 CLI) with --dns httpreq
# --------------------------------------------------------------------------


def lego_cert_basename(domain: str) -> str:
    """lego's file name for a domain: '*' -> '_' then IDNA (``*.a.b`` -> ``_.a.b``)."""
    return domain.replace("*", "_").encode("idna").decode("ascii")


def lego_httpreq_command(
    pebble: PebbleInstance,
    *,
    endpoint: str,
    domains: Sequence[str],
    dns_resolver: str,
    workdir: Path,
    username: str | None = None,
    password: str | None = None,
    raw_mode: bool = False,
    email: str = "e2e@example.com",
    key_type: str = "ec256",
    polling_interval: int = 1,
    propagation_timeout: int = 30,
    http_timeout: int = 15,
    timeout: float = 180.0,
    lego: str | None = None,
    action: str = "run",
) -> ToolCommand:
    """``lego --dns httpreq`` against Pebble.

    * Always ``--dns.disable-cp``: without it lego 4.9.1 looks up the zone's NS
      host names with the SYSTEM resolver and queries them on port 53 (traffic
      leaves loopback, and the check fails). With it, lego only needs one
      successful TXT query to ``dns_resolver`` (it does not even compare the value).
    * Also always ``--dns.resolvers``: otherwise /etc/resolv.conf is used (not loopback).
    * Basic auth is sent only when BOTH username and password are given.
    * RAW mode body: ``{"domain","token","keyAuth"}``; default: ``{"fqdn","value"}``
      where ``fqdn`` is the CNAME target when ``_acme-challenge.<d>`` is a CNAME.
    * ``outputs["certificate"]`` is leaf + intermediate (lego bundles by default).
    """
    require_loopback(endpoint)
    require_loopback(dns_resolver)
    workdir.mkdir(parents=True, exist_ok=True)
    extra = {
        "LEGO_CA_CERTIFICATES": str(pebble.ca_bundle),
        "HTTPREQ_ENDPOINT": endpoint,
        "HTTPREQ_POLLING_INTERVAL": str(polling_interval),
        "HTTPREQ_PROPAGATION_TIMEOUT": str(propagation_timeout),
        "HTTPREQ_HTTP_TIMEOUT": str(http_timeout),
    }
    if username is not None:
        extra["HTTPREQ_USERNAME"] = username
    if password is not None:
        extra["HTTPREQ_PASSWORD"] = password
    if raw_mode:
        extra["HTTPREQ_MODE"] = "RAW"
    argv = [
        lego or find_lego(),
        "--server",
        pebble.directory_url,
        "--accept-tos",
        "--email",
        email,
        "--path",
        str(workdir / "lego"),
        "--key-type",
        key_type,
        "--dns",
        "httpreq",
        "--dns.resolvers",
        dns_resolver,
        "--dns.disable-cp",
        "--dns-timeout",
        "5",
        "--http-timeout",
        str(http_timeout),
    ]
    for d in domains:
        argv += ["--domains", d]
    argv.append(action)
    base = workdir / "lego" / "certificates" / lego_cert_basename(domains[0])
    outputs = {
        "certificate": base.with_name(base.name + ".crt"),
        "issuer": base.with_name(base.name + ".issuer.crt"),
        "key": base.with_name(base.name + ".key"),
        "metadata": base.with_name(base.name + ".json"),
    }
    return ToolCommand(
        argv=argv, env=clean_env(extra), cwd=workdir, timeout=timeout, outputs=outputs
    )


# --------------------------------------------------------------------------
# pylego (lego 4.34 as a C shared library, every provider incl. acme-dns)
# --------------------------------------------------------------------------

_PYLEGO_RUNNER = textwrap.dedent(
    '''
    """Run pylego once; read the JSON request from argv[1], write the JSON outcome to argv[2]."""
    import json, sys, time
    import pylego

    req = json.load(open(sys.argv[1]))
    t0 = time.monotonic()
    try:
        r = pylego.run_lego_command(
            email=req["email"], server=req["server"], csr=req["csr"].encode(),
            env=req["env"], plugin=req["plugin"],
            dns_propagation_wait=req.get("dns_propagation_wait"),
            dns_nameservers=req.get("dns_nameservers"),
        )
        out = {"ok": True, "certificate": r.certificate, "issuer_certificate": r.issuer_certificate,
               "url": r.metadata.url, "stable_url": r.metadata.stable_url,
               "domain": r.metadata.domain}
    except pylego.LEGOError as e:
        out = {"ok": False, "error_type": e.type, "code": e.code, "status": e.status,
               "detail": e.detail, "acme_type": e.acme_type,
               "subproblems": [{"type": s.type, "detail": s.detail,
                                "identifier": s.identifier.value} for s in e.subproblems]}
    out["seconds"] = round(time.monotonic() - t0, 3)
    json.dump(out, open(sys.argv[2], "w"))
    print(json.dumps({k: out[k] for k in ("ok", "seconds")}))
    sys.exit(0 if out["ok"] else 3)
    '''
).lstrip()


@dataclasses.dataclass(frozen=True)
class PylegoOutcome:
    ok: bool
    certificate: str = ""
    issuer_certificate: str = ""
    code: str = ""
    detail: str = ""
    seconds: float = 0.0
    raw: Mapping[str, object] = dataclasses.field(default_factory=dict)

    @property
    def cname_required(self) -> bool:
        """True for lego acme-dns's first run: it registered and now wants the CNAME.

        Only reliable for a one-name order: with ``example.com`` + ``*.example.com``
        the first authz registers and fails, the second finds the fresh account,
        updates, gets validated by Pebble and fails with "No TXT records found",
        and that ACME error is what lego reports. Use :func:`acmedns_storage_account`
        to see whether a registration happened.
        """
        return (not self.ok) and "you must provision the following CNAME" in self.detail

    def cname_target(self) -> str | None:
        """The ``<fulldomain>.`` lego asks to CNAME to (from the first-run error text)."""
        m = re.search(r"_acme-challenge\.\S+ CNAME (\S+)", self.detail)
        return m.group(1) if m else None


def acmedns_storage_account(storage_path: Path, domain: str) -> dict[str, str] | None:
    """The account lego stored for ``domain`` (bare: no ``*.``), or None."""
    try:
        data = json.loads(storage_path.read_text())
    except (OSError, ValueError):
        return None
    acct = data.get(domain.removeprefix("*."))
    return dict(acct) if isinstance(acct, dict) else None


def read_pylego_outcome(cmd: ToolCommand) -> PylegoOutcome:
    """Parse the result file a :func:`pylego_command` run wrote."""
    path = cmd.outputs["result"]
    if not path.exists():
        return PylegoOutcome(ok=False, code="no_result", detail=f"{path} not written")
    data: dict[str, object] = json.loads(path.read_text())
    return PylegoOutcome(
        ok=bool(data.get("ok")),
        certificate=str(data.get("certificate", "")),
        issuer_certificate=str(data.get("issuer_certificate", "")),
        code=str(data.get("code", "")),
        detail=str(data.get("detail", "")),
        seconds=float(str(data.get("seconds", 0.0))),
        raw=data,
    )


def pylego_command(
    pebble: PebbleInstance,
    *,
    plugin: str,
    plugin_env: Mapping[str, str],
    domains: Sequence[str],
    dns_resolver: str,
    workdir: Path,
    email: str = "e2e@example.com",
    disable_authoritative_check: bool = True,
    require_recursive_value: bool = False,
    propagation_wait: int | None = None,
    python: str | None = None,
    timeout: float = 180.0,
) -> ToolCommand:
    """One pylego issuance in a FRESH python process (see :func:`read_pylego_outcome`).

    A fresh process per run is required: pylego's Go side does ``os.Setenv`` for
    every key of ``env``, so values leak into later calls in the same process.

    * CA trust: ``LEGO_CA_CERTIFICATES`` inside ``env`` (read by lego.NewConfig).
    * ``dns_nameservers=[dns_resolver]``: the recursive resolvers (else /etc/resolv.conf).
    * ``DNS_PROPAGATION_DISABLE_ANS=1`` (default here): skip the authoritative-NS
      check, which resolves NS host names with the system resolver and queries
      port 53. The recursive TXT query to ``dns_resolver`` still happens.
    * ``require_recursive_value=True`` (``DNS_PROPAGATION_RNS=1``): lego also waits
      until ``dns_resolver`` returns the expected TXT value (after following the
      CNAME), a real check that stays on loopback. Without it lego only needs the
      TXT query to succeed.
    * ``propagation_wait=N``: sleep N s and skip all propagation checks instead.
    * A CSR is generated here (EC P-256); pylego's key type setting then doesn't matter.
    """
    require_loopback(dns_resolver)
    workdir.mkdir(parents=True, exist_ok=True)
    csr_pem, key_path = make_csr(domains, workdir)
    env = dict(plugin_env)
    env["LEGO_CA_CERTIFICATES"] = str(pebble.ca_bundle)
    if disable_authoritative_check:
        env["DNS_PROPAGATION_DISABLE_ANS"] = "1"
    if require_recursive_value:
        env["DNS_PROPAGATION_RNS"] = "1"
    request: dict[str, object] = {
        "email": email,
        "server": pebble.directory_url,
        "csr": csr_pem,
        "plugin": plugin,
        "env": env,
        "dns_nameservers": [dns_resolver],
    }
    if propagation_wait is not None:
        request["dns_propagation_wait"] = propagation_wait
    req_path = workdir / "pylego-request.json"
    req_path.write_text(json.dumps(request))
    os.chmod(req_path, 0o600)
    runner = workdir / "run_pylego.py"
    runner.write_text(_PYLEGO_RUNNER)
    result = workdir / "pylego-result.json"
    with contextlib.suppress(FileNotFoundError):
        result.unlink()
    return ToolCommand(
        argv=[python or find_pylego_python(), str(runner), str(req_path), str(result)],
        env=clean_env(env),
        cwd=workdir,
        timeout=timeout,
        outputs={"result": result, "key": key_path},
    )


def pylego_acmedns_command(
    pebble: PebbleInstance,
    *,
    api_base: str,
    storage_path: Path,
    domains: Sequence[str],
    dns_resolver: str,
    workdir: Path,
    allowlist: Sequence[str] = (),
    **kwargs: object,
) -> ToolCommand:
    """pylego ``acme-dns``: ACME_DNS_API_BASE / ACME_DNS_STORAGE_PATH / ACME_DNS_ALLOWLIST.

    Flow (lego 4.34 + nrdcg/goacmedns 0.2): no account in storage for the bare
    domain -> POST {api_base}/register (body ``null\\n`` with Content-Type
    application/json when no allow-list; ``{"allowfrom":[...]}`` otherwise),
    store ``{domain: {fulldomain, subdomain, username, password, server_url}}``,
    then FAIL with "you must provision the following CNAME" (outcome.cname_required).
    After the CNAME exists, a second run POSTs /update and issues.
    """
    require_loopback(api_base)
    env = {"ACME_DNS_API_BASE": api_base, "ACME_DNS_STORAGE_PATH": str(storage_path)}
    if allowlist:
        env["ACME_DNS_ALLOWLIST"] = ",".join(allowlist)
    return pylego_command(
        pebble,
        plugin="acme-dns",
        plugin_env=env,
        domains=domains,
        dns_resolver=dns_resolver,
        workdir=workdir,
        **kwargs,  # type: ignore[arg-type]
    )


def pylego_httpreq_command(
    pebble: PebbleInstance,
    *,
    endpoint: str,
    domains: Sequence[str],
    dns_resolver: str,
    workdir: Path,
    username: str | None = None,
    password: str | None = None,
    raw_mode: bool = False,
    **kwargs: object,
) -> ToolCommand:
    """pylego ``httpreq`` (lego 4.34's httpreq: any 2xx is success)."""
    require_loopback(endpoint)
    env = {
        "HTTPREQ_ENDPOINT": endpoint,
        "HTTPREQ_POLLING_INTERVAL": "1",
        "HTTPREQ_PROPAGATION_TIMEOUT": "30",
    }
    if username is not None:
        env["HTTPREQ_USERNAME"] = username
    if password is not None:
        env["HTTPREQ_PASSWORD"] = password
    if raw_mode:
        env["HTTPREQ_MODE"] = "RAW"
    return pylego_command(
        pebble,
        plugin="httpreq",
        plugin_env=env,
        domains=domains,
        dns_resolver=dns_resolver,
        workdir=workdir,
        **kwargs,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------
# certbot --manual with hooks (Debian certbot 2.1)
# --------------------------------------------------------------------------


def _certbot_common(
    certbot: str, pebble: PebbleInstance, workdir: Path, domains: Sequence[str], cert_name: str
) -> list[str]:
    argv = [
        certbot,
        "certonly",
        "--non-interactive",
        "--agree-tos",
        "--register-unsafely-without-email",
        "--server",
        pebble.directory_url,
        "--config-dir",
        str(workdir / "config"),
        "--work-dir",
        str(workdir / "work"),
        "--logs-dir",
        str(workdir / "logs"),
        "--cert-name",
        cert_name,
        "--key-type",
        "ecdsa",
        "--no-random-sleep-on-renew",
    ]
    for d in domains:
        argv += ["-d", d]
    return argv


def _certbot_outputs(workdir: Path, cert_name: str) -> dict[str, Path]:
    live = workdir / "config" / "live" / cert_name
    return {
        "fullchain": live / "fullchain.pem",
        "certificate": live / "cert.pem",
        "chain": live / "chain.pem",
        "key": live / "privkey.pem",
        "log": workdir / "logs" / "letsencrypt.log",
    }


def certbot_manual_command(
    pebble: PebbleInstance,
    *,
    domains: Sequence[str],
    workdir: Path,
    auth_hook: str,
    cleanup_hook: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    extra_ca_files: Sequence[Path] = (),
    cert_name: str = "e2e",
    certbot: str | None = None,
    timeout: float = 180.0,
) -> ToolCommand:
    """``certbot certonly --manual --preferred-challenges dns`` with shell hook commands.

    Certbot runs the hooks through the shell with CERTBOT_DOMAIN (``*.`` already
    stripped for a wildcard), CERTBOT_VALIDATION, CERTBOT_REMAINING_CHALLENGES,
    CERTBOT_ALL_DOMAINS (+ CERTBOT_AUTH_OUTPUT for cleanup). Certbot itself does no
    DNS lookups: all auth hooks run, then Pebble validates, then all cleanup hooks.
    Trust: REQUESTS_CA_BUNDLE (replaces the trust store, so ``extra_ca_files``
    are concatenated in when the hooks or plugin also talk HTTPS).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    bundle = pebble.ca_bundle
    if extra_ca_files:
        bundle = ca_bundle(workdir / "ca-bundle.pem", pebble.ca_bundle, *extra_ca_files)
    argv = _certbot_common(certbot or find_certbot(), pebble, workdir, domains, cert_name)
    argv += ["--manual", "--preferred-challenges", "dns", "--manual-auth-hook", auth_hook]
    if cleanup_hook:
        argv += ["--manual-cleanup-hook", cleanup_hook]
    env = clean_env({"REQUESTS_CA_BUNDLE": str(bundle), **(extra_env or {})})
    return ToolCommand(
        argv=argv,
        env=env,
        cwd=workdir,
        timeout=timeout,
        outputs=_certbot_outputs(workdir, cert_name),
    )


_HTTPREQ_HOOK = textwrap.dedent(
    '''
    """certbot manual hook -> lego httpreq protocol. argv[1] is present|cleanup."""
    import base64, http.client, json, os, sys, urllib.parse
    cfg = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hook.json")))
    action = sys.argv[1]
    u = urllib.parse.urlsplit(cfg["endpoint"])
    body = json.dumps({"fqdn": "_acme-challenge.%s." % os.environ["CERTBOT_DOMAIN"],
                       "value": os.environ["CERTBOT_VALIDATION"]})
    headers = {"Content-Type": "application/json"}
    if cfg.get("username") and cfg.get("password"):
        tok = base64.b64encode(("%s:%s" % (cfg["username"], cfg["password"])).encode()).decode()
        headers["Authorization"] = "Basic " + tok
    Conn = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    kw = {}
    if u.scheme == "https" and os.environ.get("REQUESTS_CA_BUNDLE"):
        import ssl
        kw["context"] = ssl.create_default_context(cafile=os.environ["REQUESTS_CA_BUNDLE"])
    c = Conn(u.hostname, u.port, timeout=15, **kw)
    c.request("POST", u.path.rstrip("/") + "/" + action, body=body, headers=headers)
    r = c.getresponse()
    text = r.read().decode("utf-8", "replace")
    print("%s %s %s" % (action, r.status, text))
    sys.exit(0 if 200 <= r.status < 300 else 1)
    '''
).lstrip()

_ACMEDNS_HOOK = textwrap.dedent(
    '''
    """certbot manual auth hook with the wire behaviour of joohoi's acme-dns-auth.py.

    register: POST {url}/register with NO Content-Type (body {"allowfrom": [...]} or
    empty), expects exactly 201; update: POST {url}/update JSON, expects exactly 200.
    Storage keyed by the bare domain. Prints the CNAME to create after registering.
    """
    import http.client, json, os, sys, urllib.parse
    cfg = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hook.json")))
    domain = os.environ["CERTBOT_DOMAIN"]
    if domain.startswith("*."):
        domain = domain[2:]
    u = urllib.parse.urlsplit(cfg["api_base"])

    def post(path, body, headers):
        Conn = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        kw = {}
        if u.scheme == "https" and os.environ.get("REQUESTS_CA_BUNDLE"):
            import ssl
            kw["context"] = ssl.create_default_context(cafile=os.environ["REQUESTS_CA_BUNDLE"])
        c = Conn(u.hostname, u.port, timeout=15, **kw)
        c.request("POST", u.path + path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.read().decode("utf-8", "replace")

    try:
        store = json.load(open(cfg["storage"]))
    except (OSError, ValueError):
        store = {}
    acct = store.get(domain)
    if not acct:
        body = json.dumps({"allowfrom": cfg["allowfrom"]}) if cfg["allowfrom"] else None
        status, text = post("/register", body, {})
        if status != 201:
            print("register failed: HTTP %s %s" % (status, text))
            sys.exit(1)
        acct = json.loads(text)
        store[domain] = acct
        fd = os.open(cfg["storage"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(store, fh)
        print("Please add the following CNAME record to your main DNS zone:")
        print("_acme-challenge.%s CNAME %s" % (domain, acct["fulldomain"]))
    status, text = post("/update", json.dumps({"subdomain": acct["subdomain"],
                        "txt": os.environ["CERTBOT_VALIDATION"]}),
                        {"X-Api-User": acct["username"], "X-Api-Key": acct["password"],
                         "Content-Type": "application/json"})
    if status != 200:
        print("update failed: HTTP %s" % status)
        print(json.dumps(json.loads(text), indent=2))  # the real hook crashes on non-JSON
        sys.exit(1)
    print("update ok")
    '''
).lstrip()


@dataclasses.dataclass(frozen=True)
class HookCommands:
    auth: str
    cleanup: str | None


def write_httpreq_hooks(
    directory: Path,
    endpoint: str,
    *,
    username: str | None = None,
    password: str | None = None,
    python: str | None = None,
) -> HookCommands:
    """Write a stdlib-only certbot hook speaking lego httpreq; return the two hook commands."""
    require_loopback(endpoint)
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "httpreq_hook.py"
    script.write_text(_HTTPREQ_HOOK)
    cfg = directory / "hook.json"
    cfg.write_text(json.dumps({"endpoint": endpoint, "username": username, "password": password}))
    os.chmod(cfg, 0o600)
    py = shlex.quote(python or sys.executable)
    return HookCommands(
        auth=f"{py} {shlex.quote(str(script))} present",
        cleanup=f"{py} {shlex.quote(str(script))} cleanup",
    )


def write_acmedns_hook(
    directory: Path,
    api_base: str,
    storage_path: Path,
    *,
    allowfrom: Sequence[str] = (),
    python: str | None = None,
) -> HookCommands:
    """Write an acme-dns-auth.py-like auth hook (no cleanup hook: acme-dns never deletes)."""
    require_loopback(api_base)
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "acmedns_hook.py"
    script.write_text(_ACMEDNS_HOOK)
    cfg = directory / "hook.json"
    cfg.write_text(
        json.dumps(
            {
                "api_base": api_base.rstrip("/"),
                "storage": str(storage_path),
                "allowfrom": list(allowfrom),
            }
        )
    )
    py = shlex.quote(python or sys.executable)
    return HookCommands(auth=f"{py} {shlex.quote(str(script))}", cleanup=None)


# --------------------------------------------------------------------------
# certbot + certbot-dns-acmedns (own venv, certbot 5.x from PyPI)
# --------------------------------------------------------------------------


def write_acmedns_registration_file(
    path: Path, accounts: Mapping[str, Mapping[str, object]]
) -> Path:
    """The plugin's ``registration-file``: ``{bare_domain: register-response}``, mode 0600.

    Keys are bare domains (no ``*.``, no ``_acme-challenge.``): the plugin strips
    ``_acme-challenge.`` from the validation name and looks that up.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({k: dict(v) for k, v in accounts.items()}, fh)
    return path


def certbot_acmedns_command(
    pebble: PebbleInstance,
    *,
    api_url: str,
    registration_file: Path,
    domains: Sequence[str],
    workdir: Path,
    propagation_seconds: int = 0,
    extra_ca_files: Sequence[Path] = (),
    cert_name: str = "e2e",
    certbot: str | None = None,
    timeout: float = 180.0,
) -> ToolCommand:
    """certbot ``--authenticator dns-acmedns`` (plugin 0.1.0 under certbot 5.8 in its venv).

    Credentials ini (written here, mode 0600)::

        dns_acmedns_api_url = <api_url>
        dns_acmedns_registration_file = <registration_file>

    The plugin never registers: the registration file must already hold the
    account. It POSTs ``api_url + "/update"`` verbatim (a trailing ``/`` in
    ``api_url`` gives ``//update`` on the wire) and requires exactly 200.
    ``--dns-acmedns-propagation-seconds`` defaults to 10; 0 here.
    """
    require_loopback(api_url)
    workdir.mkdir(parents=True, exist_ok=True)
    ini = workdir / "acmedns-credentials.ini"
    fd = os.open(ini, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"dns_acmedns_api_url = {api_url}\n")
        fh.write(f"dns_acmedns_registration_file = {registration_file}\n")
    bundle = pebble.ca_bundle
    if extra_ca_files:
        bundle = ca_bundle(workdir / "ca-bundle.pem", pebble.ca_bundle, *extra_ca_files)
    argv = _certbot_common(certbot or find_certbot_acmedns(), pebble, workdir, domains, cert_name)
    argv += [
        "--authenticator",
        "dns-acmedns",
        "--dns-acmedns-credentials",
        str(ini),
        "--dns-acmedns-propagation-seconds",
        str(propagation_seconds),
    ]
    env = clean_env({"REQUESTS_CA_BUNDLE": str(bundle)})
    outputs = _certbot_outputs(workdir, cert_name)
    outputs["credentials"] = ini
    return ToolCommand(argv=argv, env=env, cwd=workdir, timeout=timeout, outputs=outputs)



# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _main(argv: Sequence[str]) -> int:
    cmd = argv[0] if argv else "status"
    if cmd == "status":
        missing = 0
        for name, where in tool_status().items():
            print(f"{name:22} {where}")
            missing += where.startswith("MISSING")
        return 1 if missing else 0
    if cmd == "install-venvs":
        root = Path(argv[1]) if len(argv) > 1 else DEFAULT_VENV_ROOT
        for name, path in install_venvs(root).items():
            print(f"{name}: {path}")
        return 0
    print("usage: python3 -m tests.support.acme [status | install-venvs [ROOT]]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
