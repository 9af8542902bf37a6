"""End-to-end harness: drive real ACME clients against Pebble on loopback.

No pytest import here: tests (or a shell) use these helpers directly.

What it gives you
-----------------
* Locating the tools, with an install hint when one is missing
  (:func:`find_pebble`, :func:`find_lego`, :func:`find_certbot`,
  :func:`find_pylego_python`, :func:`find_certbot_acmedns`, :func:`tool_status`).
* :func:`run_pebble`: a context manager that starts Debian's ``pebble`` on free
  loopback ports with our own TLS CA, a given ``-dnsserver`` and test-friendly
  environment, and stops it on exit.
* Builders that return a ready-to-run :class:`ToolCommand` (argv + env + cwd +
  timeout + where the outputs land) for:
  lego ``--dns httpreq`` (:func:`lego_httpreq_command`),
  pylego with any provider, especially acme-dns (:func:`pylego_command`,
  :func:`pylego_acmedns_command`),
  certbot ``--manual`` with hooks (:func:`certbot_manual_command`,
  :func:`write_httpreq_hooks`, :func:`write_acmedns_hook`),
  certbot + certbot-dns-acmedns (:func:`certbot_acmedns_command`).
* :func:`verify_issued_certificate`: SANs (exact set) and the chain up to
  Pebble's root, with ``cryptography`` when importable, else the openssl CLI.

Everything talks to loopback only; every endpoint handed to a builder is
checked to be on 127.0.0.0/8, ::1 or ``localhost``.

See FINDINGS.md next to this file for the facts behind every choice here.

CLI: ``python tests/e2e/harness.py status`` lists the tools;
``python tests/e2e/harness.py install-venvs`` makes the two pip venvs.
"""

# mypy: disable-error-code="import-not-found"
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime as _dt
import ipaddress
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

# --------------------------------------------------------------------------
# Tool location
# --------------------------------------------------------------------------

#: Where :func:`install_venvs` puts the pip-installed clients by default.
DEFAULT_VENV_ROOT = Path(os.environ.get("ACME_E2E_VENV_ROOT", "/opt/acme-e2e"))
#: Versions seen working (see FINDINGS.md).
PYLEGO_REQUIREMENT = "pylego==0.1.49"
CERTBOT_ACMEDNS_REQUIREMENTS = ("certbot-dns-acmedns==0.1.0", "certbot==5.8.0")

_ROOT = DEFAULT_VENV_ROOT
_CB_REQS = " ".join(f"'{r}'" for r in CERTBOT_ACMEDNS_REQUIREMENTS)

INSTALL_HINTS: dict[str, str] = {
    "pebble": "apt-get update && apt-get install -y pebble   (Debian bookworm: 2.4.0+ds1-2+b4)",
    "lego": "apt-get update && apt-get install -y lego   (Debian bookworm: 4.9.1-1; has httpreq, "
    "NOT acme-dns)",
    "certbot": "apt-get update && apt-get install -y certbot   (Debian bookworm: 2.1.0-4)",
    "openssl": "apt-get install -y openssl",
    "pylego": (
        f"python3.11 -m venv {_ROOT}/pylego && {_ROOT}/pylego/bin/pip install "
        f"'{PYLEGO_REQUIREMENT}'   (or: python tests/e2e/harness.py install-venvs; or set "
        "ACME_E2E_PYLEGO_PYTHON to a python that can `import pylego`)"
    ),
    "certbot-dns-acmedns": (
        f"python3.11 -m venv {_ROOT}/certbot-acmedns && {_ROOT}/certbot-acmedns/bin/pip install "
        f"{_CB_REQS}   (its own venv: it drags in certbot 5.x from PyPI; or: python "
        "tests/e2e/harness.py install-venvs; or set ACME_E2E_CERTBOT_ACMEDNS to that venv's "
        "certbot)"
    ),
}


class ToolMissing(RuntimeError):
    """A required external tool is not installed; the message says how to install it."""

    def __init__(self, tool: str, detail: str = "") -> None:
        self.tool = tool
        hint = INSTALL_HINTS.get(tool, "")
        msg = f"{tool} not found{': ' + detail if detail else ''}. Install: {hint}"
        super().__init__(msg)


def _env_path(var: str) -> str | None:
    val = os.environ.get(var, "").strip()
    return val or None


def _which_exe(tool: str, env_var: str, *candidates: str) -> str:
    explicit = _env_path(env_var)
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit
        raise ToolMissing(tool, f"{env_var}={explicit} is not executable")
    for cand in candidates:
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which(tool)
    if found:
        return found
    raise ToolMissing(tool)


def find_pebble() -> str:
    """Path to Debian's pebble (env ACME_E2E_PEBBLE overrides)."""
    return _which_exe("pebble", "ACME_E2E_PEBBLE", "/usr/bin/pebble")


def find_lego() -> str:
    """Path to Debian's lego 4.9.1 (env ACME_E2E_LEGO overrides)."""
    return _which_exe("lego", "ACME_E2E_LEGO", "/usr/bin/lego")


def find_certbot() -> str:
    """Path to Debian's certbot 2.1 (env ACME_E2E_CERTBOT overrides).

    /usr/bin/certbot is preferred over PATH so an activated venv's certbot
    (e.g. the certbot-dns-acmedns one) is not picked by accident.
    """
    return _which_exe("certbot", "ACME_E2E_CERTBOT", "/usr/bin/certbot")


def find_openssl() -> str:
    return _which_exe("openssl", "ACME_E2E_OPENSSL", "/usr/bin/openssl")


def _python_can_import(python: str, module: str, timeout: float = 30.0) -> bool:
    try:
        proc = subprocess.run(
            [python, "-c", f"import {module}"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def find_pylego_python() -> str:
    """A python interpreter that can ``import pylego``.

    Order: env ACME_E2E_PYLEGO_PYTHON, the current interpreter,
    DEFAULT_VENV_ROOT/pylego, /tmp/e2e-venv (the scratch venv used while
    writing FINDINGS.md).
    """
    explicit = _env_path("ACME_E2E_PYLEGO_PYTHON")
    if explicit:
        if _python_can_import(explicit, "pylego"):
            return explicit
        raise ToolMissing("pylego", f"ACME_E2E_PYLEGO_PYTHON={explicit} cannot import pylego")
    import importlib.util

    if importlib.util.find_spec("pylego") is not None:
        return sys.executable
    for cand in (DEFAULT_VENV_ROOT / "pylego/bin/python", Path("/tmp/e2e-venv/bin/python")):
        if cand.exists() and _python_can_import(str(cand), "pylego"):
            return str(cand)
    raise ToolMissing("pylego")


def find_certbot_acmedns() -> str:
    """The ``certbot`` executable of a venv that has certbot-dns-acmedns.

    Order: env ACME_E2E_CERTBOT_ACMEDNS, DEFAULT_VENV_ROOT/certbot-acmedns,
    /tmp/cb-venv (scratch venv used while writing FINDINGS.md).
    """
    explicit = _env_path("ACME_E2E_CERTBOT_ACMEDNS")
    cands = [Path(explicit)] if explicit else []
    cands += [DEFAULT_VENV_ROOT / "certbot-acmedns/bin/certbot", Path("/tmp/cb-venv/bin/certbot")]
    for cand in cands:
        py = cand.parent / "python"
        if cand.exists() and py.exists() and _python_can_import(str(py), "certbot_dns_acmedns"):
            return str(cand)
    if explicit:
        raise ToolMissing(
            "certbot-dns-acmedns", f"ACME_E2E_CERTBOT_ACMEDNS={explicit} has no certbot_dns_acmedns"
        )
    raise ToolMissing("certbot-dns-acmedns")


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
# Small utilities: loopback guard, ports, process control
# --------------------------------------------------------------------------


def _host_is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_loopback(target: str) -> str:
    """Return ``target`` if it is a URL or host:port on loopback, else raise ValueError."""
    if "://" in target:
        host = urllib.parse.urlsplit(target).hostname or ""
    else:
        hostport = target.count(":") == 1 or target.startswith("[")
        host = target.rsplit(":", 1)[0] if hostport else target
    if not _host_is_loopback(host):
        raise ValueError(f"refusing non-loopback target {target!r}: e2e tests stay on loopback")
    return target


def free_port(host: str = "127.0.0.1", kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port that was free a moment ago (racy by nature; callers retry on bind errors)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def _kill_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group we created for ``proc``, then SIGKILL after ``grace``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
    _LIVE.pop(proc.pid, None)


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE.values()):
        _kill_group(proc, grace=2.0)


_STRIP_ENV_PREFIXES = (
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


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ minus anything that would change a client's behaviour, plus ``extra``.

    Proxies are dropped and NO_PROXY covers loopback so nothing leaves the host.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_STRIP_ENV_PREFIXES) and k not in _PROXY_VARS
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    if extra:
        env.update(extra)
    return env


@dataclasses.dataclass(frozen=True)
class ToolResult:
    """What one run of a :class:`ToolCommand` produced."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        """A multi-line summary fit for an assertion message."""
        tail = "\n".join(self.output.strip().splitlines()[-40:])
        return (
            f"$ {shlex.join(self.argv)}\nrc={self.returncode} timed_out={self.timed_out} "
            f"seconds={self.seconds:.1f}\n{tail}"
        )


@dataclasses.dataclass
class ToolCommand:
    """A ready-to-run client invocation.

    ``outputs`` names the files the run is expected to write (``certificate``,
    ``fullchain``, ``result`` ... depending on the builder).
    """

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    timeout: float
    outputs: dict[str, Path] = dataclasses.field(default_factory=dict)
    stdin: bytes | None = None

    def run(self, timeout: float | None = None) -> ToolResult:
        """Run in its own process group; on timeout the whole group is killed."""
        limit = self.timeout if timeout is None else timeout
        start = time.monotonic()
        proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.PIPE if self.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        _LIVE[proc.pid] = proc
        timed_out = False
        try:
            out, err = proc.communicate(self.stdin, timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc, grace=3.0)
            out, err = proc.communicate()
        finally:
            _LIVE.pop(proc.pid, None)
        return ToolResult(
            argv=tuple(self.argv),
            returncode=proc.returncode,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            seconds=time.monotonic() - start,
            timed_out=timed_out,
        )


# --------------------------------------------------------------------------
# TLS material: a throwaway CA for Pebble's HTTPS endpoints, CSRs
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    ca_cert: Path
    cert: Path
    key: Path


def _have_cryptography() -> bool:
    try:
        import cryptography.x509  # noqa: F401
    except ImportError:
        return False
    return True


def make_test_ca(
    directory: Path,
    dns_names: Sequence[str] = ("localhost",),
    ips: Sequence[str] = ("127.0.0.1", "::1"),
) -> TLSFiles:
    """A fresh CA and a server cert for ``dns_names``/``ips`` (Pebble's HTTPS listeners).

    Debian's pebble package does NOT ship test/certs (no pebble.minica.pem),
    so we always make our own. Uses ``cryptography`` if importable, else openssl.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    if _have_cryptography():
        _make_ca_cryptography(files, dns_names, ips)
    else:
        _make_ca_openssl(files, directory, dns_names, ips)
    os.chmod(files.key, 0o600)
    return files


def _make_ca_cryptography(files: TLSFiles, dns_names: Sequence[str], ips: Sequence[str]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme-delegate e2e TLS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _openssl(args: Sequence[str], *, input_bytes: bytes | None = None, timeout: float = 60) -> str:
    proc = subprocess.run(
        [find_openssl(), *args],
        input=input_bytes,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"openssl {' '.join(args)} failed: {proc.stderr.decode('utf-8', 'replace')}"
        )
    return proc.stdout.decode("utf-8", "replace")


def _make_ca_openssl(
    files: TLSFiles, directory: Path, dns_names: Sequence[str], ips: Sequence[str]
) -> None:
    ca_key = directory / "ca.key"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl(
        [
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(ca_key),
            "-out",
            str(files.ca_cert),
            "-days",
            "2",
            "-subj",
            "/CN=acme-delegate e2e TLS CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ]
    )
    csr = directory / "server.csr"
    _openssl(
        ["req", *ec, "-keyout", str(files.key), "-out", str(csr), "-subj", f"/CN={dns_names[0]}"]
    )
    san = ",".join([f"DNS:{n}" for n in dns_names] + [f"IP:{i}" for i in ips])
    ext = directory / "server.ext"
    ext.write_text(
        f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
        "extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n"
    )
    _openssl(
        [
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(files.ca_cert),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-out",
            str(files.cert),
            "-days",
            "2",
            "-extfile",
            str(ext),
        ]
    )
    os.chmod(ca_key, 0o600)


def make_csr(domains: Sequence[str], directory: Path) -> tuple[str, Path]:
    """(CSR PEM, key path) for ``domains`` (first one is the CN). EC P-256."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / "csr-key.pem"
    if _have_cryptography():
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), False)
            .sign(key, hashes.SHA256())
        )
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        os.chmod(key_path, 0o600)
        return csr.public_bytes(serialization.Encoding.PEM).decode(), key_path
    san = ",".join(f"DNS:{d}" for d in domains)
    csr_path = directory / "request.csr"
    _openssl(
        [
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key_path),
            "-out",
            str(csr_path),
            "-subj",
            f"/CN={domains[0]}",
            "-addext",
            f"subjectAltName={san}",
        ]
    )
    os.chmod(key_path, 0o600)
    return csr_path.read_text(), key_path


def ca_bundle(path: Path, *pem_files: Path) -> Path:
    """Concatenate CA files into one bundle (REQUESTS_CA_BUNDLE *replaces* the trust store:
    when the service under test is on HTTPS with another CA, both must be in it)."""
    path.write_text("".join(p.read_text().rstrip("\n") + "\n" for p in pem_files))
    return path


# --------------------------------------------------------------------------
# Pebble
# --------------------------------------------------------------------------


@dataclasses.dataclass
class PebbleInstance:
    """A running Pebble. ``ca_bundle`` is the CA for its HTTPS endpoints (not the issuing root)."""

    directory_url: str
    management_url: str
    ca_bundle: Path
    dns_server: str
    workdir: Path
    log_path: Path
    config_path: Path
    process: subprocess.Popen[bytes]

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def get(self, url: str, timeout: float = 10.0) -> bytes:
        require_loopback(url)
        with urllib.request.urlopen(url, context=self._ssl(), timeout=timeout) as resp:
            data: bytes = resp.read()
            return data

    def root_pem(self, index: int = 0) -> str:
        """The issuing root (regenerated at each Pebble start): GET <management>/roots/<i>."""
        return self.get(f"{self.management_url}/roots/{index}").decode()

    def intermediate_pem(self, index: int = 0) -> str:
        return self.get(f"{self.management_url}/intermediates/{index}").decode()

    def cert_status(self, serial_hex: str) -> dict[str, object]:
        """GET /cert-status-by-serial/<hex> (``{"Status": "Valid", "Certificate": ...}``)."""
        data: dict[str, object] = json.loads(
            self.get(f"{self.management_url}/cert-status-by-serial/{serial_hex}")
        )
        return data

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None


class PebbleStartError(RuntimeError):
    pass


def pebble_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for Pebble: real validation, no sleeps, no nonce rejects, no authz reuse."""
    env = clean_env()
    env.pop("PEBBLE_VA_ALWAYS_VALID", None)  # must never be set: we want real DNS-01 checks
    env.update(
        {
            "PEBBLE_VA_NOSLEEP": "1",  # else 0-15 s random sleep before each validation
            "PEBBLE_WFE_NONCEREJECT": "0",  # else 5 % of good nonces are rejected
            # else 50 % of new orders reuse a valid authz and skip DNS validation entirely
            "PEBBLE_AUTHZREUSE": "0",
        }
    )
    if extra:
        env.update(extra)
    if env.get("PEBBLE_VA_ALWAYS_VALID"):
        raise ValueError("PEBBLE_VA_ALWAYS_VALID must not be set for these tests")
    return env


@contextlib.contextmanager
def run_pebble(
    dns_server: str,
    *,
    workdir: Path | None = None,
    startup_timeout: float = 20.0,
    extra_env: Mapping[str, str] | None = None,
    domain_blocklist: Sequence[str] = (),
    attempts: int = 3,
) -> Iterator[PebbleInstance]:
    """Start Pebble on free 127.0.0.1 ports, validating DNS-01 through ``dns_server``.

    ``dns_server`` is ``"127.0.0.1:PORT"`` (or ``"[::1]:PORT"``). Pebble 2.4 sends
    ONE UDP query of type TXT for ``_acme-challenge.<name>`` there and reads only
    the TXT records in the answer section: it does not chase CNAMEs, so the DNS
    server must put the whole CNAME chain plus the target's TXT records in the
    answer (as a recursive resolver would).

    Yields a :class:`PebbleInstance`; on exit Pebble is SIGTERMed (SIGKILL after 5 s)
    and a temporary ``workdir`` is removed.
    """
    require_loopback(dns_server)
    pebble = find_pebble()
    own_dir = workdir is None
    base = Path(tempfile.mkdtemp(prefix="pebble-")) if workdir is None else workdir
    base.mkdir(parents=True, exist_ok=True)
    tls = make_test_ca(base / "tls")
    env = pebble_env(extra_env)
    last_error = ""
    proc: subprocess.Popen[bytes] | None = None
    try:
        for attempt in range(attempts):
            port, mport = free_port(), free_port()
            cfg = {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{port}",
                    "managementListenAddress": f"127.0.0.1:{mport}",
                    "certificate": str(tls.cert),
                    "privateKey": str(tls.key),
                    # Only dialled for http-01 / tls-alpn-01, which we never use.
                    "httpPort": free_port(),
                    "tlsPort": free_port(),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                    "domainBlocklist": list(domain_blocklist),
                }
            }
            cfg_path = base / "pebble-config.json"
            cfg_path.write_text(json.dumps(cfg, indent=2))
            log_path = base / f"pebble-{attempt}.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [pebble, "-config", str(cfg_path), "-dnsserver", dns_server],
                    env=env,
                    cwd=base,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            _LIVE[proc.pid] = proc
            inst = PebbleInstance(
                directory_url=f"https://127.0.0.1:{port}/dir",
                management_url=f"https://127.0.0.1:{mport}",
                ca_bundle=tls.ca_cert,
                dns_server=dns_server,
                workdir=base,
                log_path=log_path,
                config_path=cfg_path,
                process=proc,
            )
            deadline = time.monotonic() + startup_timeout
            ready = False
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    inst.get(inst.directory_url, timeout=2)
                    inst.get(f"{inst.management_url}/roots/0", timeout=2)
                    ready = True
                    break
                except (OSError, urllib.error.URLError):
                    time.sleep(0.1)
            if ready:
                try:
                    yield inst
                finally:
                    _kill_group(proc)
                return
            last_error = inst.log_text()
            _kill_group(proc)
            if "address already in use" not in last_error:
                break
        raise PebbleStartError(f"pebble did not start:\n{last_error}")
    finally:
        if proc is not None:
            _kill_group(proc)
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)


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
# Verifying what was issued
# --------------------------------------------------------------------------


class CertificateCheckError(AssertionError):
    pass


@dataclasses.dataclass(frozen=True)
class CertificateInfo:
    sans: tuple[str, ...]
    subject: str
    issuer: str
    serial_hex: str
    not_after: str
    chain_length: int


_PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def split_pem_chain(pem: str | bytes | Path) -> list[str]:
    """All CERTIFICATE blocks in order (leaf first for lego/certbot outputs)."""
    if isinstance(pem, Path):
        text = pem.read_text()
    elif isinstance(pem, bytes):
        text = pem.decode()
    else:
        text = pem
    return [m.group(0) + "\n" for m in _PEM_RE.finditer(text)]


def certificate_sans(pem: str | bytes | Path) -> list[str]:
    """DNS SANs of the first certificate in ``pem``."""
    return list(_inspect(split_pem_chain(pem)[0]).sans)


def _inspect(leaf_pem: str) -> CertificateInfo:
    if _have_cryptography():
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(leaf_pem.encode())
        try:
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            sans = tuple(ext.value.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            sans = ()
        return CertificateInfo(
            sans=sans,
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            serial_hex=format(cert.serial_number, "x"),
            not_after=cert.not_valid_after_utc.isoformat(),
            chain_length=1,
        )
    text = _openssl(
        ["x509", "-noout", "-subject", "-issuer", "-serial", "-enddate", "-ext", "subjectAltName"],
        input_bytes=leaf_pem.encode(),
    )
    fields: dict[str, str] = {}
    sans_list: list[str] = []
    for line in text.splitlines():
        s = line.strip()
        for key in ("subject", "issuer", "serial", "notAfter"):
            if s.startswith(key + "="):
                fields[key] = s.split("=", 1)[1].strip()
        if s.startswith("DNS:"):
            sans_list += [p.strip()[4:] for p in s.split(",") if p.strip().startswith("DNS:")]
    return CertificateInfo(
        sans=tuple(sans_list),
        subject=fields.get("subject", ""),
        issuer=fields.get("issuer", ""),
        serial_hex=fields.get("serial", "").lower().lstrip("0") or "0",
        not_after=fields.get("notAfter", ""),
        chain_length=1,
    )


def verify_issued_certificate(
    cert_pem: str | bytes | Path,
    expected_sans: Iterable[str],
    *,
    root_pem: str | None = None,
    extra_chain_pem: str | bytes | Path | None = None,
) -> CertificateInfo:
    """Check the leaf's DNS SANs equal ``expected_sans`` (as a set, case-insensitive) and,
    with ``root_pem`` (``pebble.root_pem()``), that leaf -> intermediates -> root verifies.

    ``cert_pem`` may be a bundle (lego .crt, certbot fullchain.pem, pylego's
    ``certificate``); ``extra_chain_pem`` adds intermediates (e.g. certbot chain.pem).
    Raises :class:`CertificateCheckError`.
    """
    chain = split_pem_chain(cert_pem)
    if not chain:
        raise CertificateCheckError("no certificate in input")
    if extra_chain_pem is not None:
        chain += [c for c in split_pem_chain(extra_chain_pem) if c not in chain]
    info = _inspect(chain[0])
    want = sorted({s.lower() for s in expected_sans})
    got = sorted({s.lower() for s in info.sans})
    if want != got:
        raise CertificateCheckError(f"SANs differ: expected {want}, got {got}")
    if root_pem is not None:
        _verify_chain(chain, root_pem)
    return dataclasses.replace(info, chain_length=len(chain))


def _verify_chain(chain: list[str], root_pem: str) -> None:
    roots = split_pem_chain(root_pem)
    if not roots:
        raise CertificateCheckError("root_pem holds no certificate")
    if _have_cryptography():
        from cryptography import x509

        certs = [x509.load_pem_x509_certificate(c.encode()) for c in chain]
        root = x509.load_pem_x509_certificate(roots[0].encode())
        path = [*certs, root] if certs[-1] != root else certs
        for child, parent in itertools.pairwise(path):
            try:
                child.verify_directly_issued_by(parent)
            except (ValueError, TypeError) as exc:
                raise CertificateCheckError(
                    f"{child.subject.rfc4514_string()} not issued by "
                    f"{parent.subject.rfc4514_string()}: {exc}"
                ) from exc
            except Exception as exc:  # InvalidSignature
                raise CertificateCheckError(f"bad signature on {child.subject}: {exc!r}") from exc
        return
    with tempfile.TemporaryDirectory(prefix="e2e-verify-") as tmp:
        root_f, inter_f, leaf_f = (Path(tmp) / n for n in ("root.pem", "inter.pem", "leaf.pem"))
        root_f.write_text(roots[0])
        inter_f.write_text("".join(chain[1:]) or roots[0])
        leaf_f.write_text(chain[0])
        try:
            _openssl(["verify", "-CAfile", str(root_f), "-untrusted", str(inter_f), str(leaf_f)])
        except RuntimeError as exc:
            raise CertificateCheckError(str(exc)) from exc


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
    print("usage: harness.py [status | install-venvs [ROOT]]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
