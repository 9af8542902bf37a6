"""Pebble, the ACME test server: Debian's ``pebble`` on free loopback ports with a TLS
CA of our own, validating DNS-01 through a DNS server we name, stopped on exit.

Only the standard library at import time (see ``tests.support.acme``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tests.support.env import clean_env
from tests.support.ports import free_port, require_loopback
from tests.support.processes import kill_group, start_group
from tests.support.tls import make_test_ca
from tests.support.tools import find_executable


def find_pebble() -> str:
    """Path to Debian's pebble (env ACME_E2E_PEBBLE overrides)."""
    return find_executable(
        "pebble", "ACME_E2E_PEBBLE", "/usr/bin/pebble",
        hint="apt-get update && apt-get install -y pebble   (Debian bookworm: 2.4.0+ds1-2+b4)")


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
                proc = start_group([pebble, "-config", str(cfg_path), "-dnsserver", dns_server],
                                   env=env, cwd=base, stdout=log, stderr=subprocess.STDOUT)
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
                    kill_group(proc)
                return
            last_error = inst.log_text()
            kill_group(proc)
            if "address already in use" not in last_error:
                break
        raise PebbleStartError(f"pebble did not start:\n{last_error}")
    finally:
        if proc is not None:
            kill_group(proc)
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)
