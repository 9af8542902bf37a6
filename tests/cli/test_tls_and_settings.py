"""TLS termination by `serve`, secrets from files, trusted proxies."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from app.config import Settings
from app.standin import Standin
from tests.conftest import DO_TOKEN, challenge_value
from tests.strict_ci import IN_CI
from tests.support.env import cli_env
from tests.support.processes import Serve


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        if IN_CI:
            pytest.fail("openssl is missing (apt-get install openssl)")
        pytest.skip("openssl is missing (apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture
def standin() -> Iterator[Standin]:
    with Standin(token=DO_TOKEN, zones=["example.com"]) as running:
        yield running


def test_serve_terminates_tls_with_hsts(certificate: tuple[Path, Path], standin: Standin,
                                        tmp_path: Path) -> None:
    cert, key = certificate
    env = cli_env(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", do_token=DO_TOKEN,
                  do_api_url=standin.api_url, tls_cert_file=str(cert), tls_key_file=str(key))
    context = ssl.create_default_context(cafile=str(cert))
    with Serve(env, tmp_path / "serve.log", scheme="https", verify=context) as served:
        response = httpx.get(served.url + "/health", verify=context)
        assert response.status_code == 200
        assert response.headers["strict-transport-security"].startswith("max-age=31536000")
        with pytest.raises(httpx.TransportError):
            httpx.get(served.url.replace("https://", "http://") + "/health", timeout=3)


def test_secrets_come_from_files(tmp_path: Path) -> None:
    token, admin = tmp_path / "do", tmp_path / "admin"
    token.write_text("dop_v1_fromfile\n")
    admin.write_text("  admin-from-file  ")
    registration = tmp_path / "registration"
    registration.write_text("register-from-file\n")
    settings = Settings(do_token_file=token, admin_token_file=admin,
                        registration_token_file=registration)
    assert settings.registration_token is not None
    assert settings.registration_token.get_secret_value() == "register-from-file"
    assert settings.token() == "dop_v1_fromfile"
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == "admin-from-file"
    assert "dop_v1_fromfile" not in repr(settings) and "admin-from-file" not in str(settings)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"do_token": "a", "do_token_file": "PATH"}, "not both"),
        ({"do_token_file": "MISSING"}, "cannot read"),
        ({"do_token_file": "EMPTY"}, "is empty"),
        ({"tls_cert_file": "PATH"}, "set both"),
        ({"registration": "token", "admin_token": "a"}, "needs ACME_DELEGATE_REGISTRATION_TOKEN"),
        ({"registration_token": "same", "admin_token": "same"}, "must differ"),
        ({"registration_token": "a", "registration_token_file": "PATH"}, "not both"),
        ({"registration": "open"}, "DELEGATION_DOMAIN"),
        ({"txt_ttl": 29}, "greater than or equal to 30"),
        ({"database_url": "mysql://x/y"}, "sqlite:///PATH or postgresql"),
        ({"trusted_proxies": "10.0.0.0/8, nope"}, "not an address or CIDR"),
        ({"delegation_domain": "bad..name"}, "not a domain name"),
    ],
)
def test_settings_errors_say_what_to_change(tmp_path: Path, values: dict[str, Any],
                                            message: str) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "empty").write_text("\n")
    paths = {"PATH": tmp_path / "f", "MISSING": tmp_path / "nope", "EMPTY": tmp_path / "empty"}
    values = {k: paths.get(v, v) if isinstance(v, str) else v for k, v in values.items()}
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    assert message in str(caught.value)
    for secret in ("x",):
        assert f"'{secret}'" not in str(caught.value)  # input values are not echoed


async def test_trusted_proxies_decide_whose_forwarded_for_counts(harness_factory: Any) -> None:
    v = challenge_value(1)
    async with harness_factory(client_ip="10.0.0.5", trusted_proxies="10.0.0.0/8") as h:
        account = await h.create_account(domain="www.example.com", allowfrom=["192.0.2.0/24"])
        headers = {"X-Api-User": account["username"], "X-Api-Key": account["password"]}
        body = {"subdomain": account["subdomain"], "txt": v}
        # Through the trusted proxy: the right-most untrusted hop is the client.
        ok = await h.client.post("/update", json=body, headers={
            **headers, "X-Forwarded-For": "203.0.113.1, 192.0.2.7, 10.0.0.9"})
        assert ok.status_code == 200
        spoof = await h.client.post("/update", json=body, headers={
            **headers, "X-Forwarded-For": "192.0.2.7, 203.0.113.1"})
        assert spoof.status_code == 401
    async with harness_factory(client_ip="198.51.100.3", trusted_proxies="10.0.0.0/8") as h:
        # Not from a trusted proxy: X-Forwarded-For is ignored.
        spoof = await h.client.post("/update", json=body, headers={
            **headers, "X-Forwarded-For": "192.0.2.7"})
        assert spoof.status_code == 401
    async with harness_factory(client_ip="::ffff:192.0.2.8") as h:
        # IPv4-mapped IPv6 peers match IPv4 networks.
        assert (await h.client.post("/update", json=body, headers=headers)).status_code == 200
