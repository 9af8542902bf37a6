"""tests/support keeps the promises its callers rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.env import clean_env, cli_env
from tests.support.ports import require_loopback

ROOT = Path(__file__).resolve().parent.parent
#: What CI's `python3 -m tests.support.acme install-venvs` cannot import: it runs before
#: the project's virtual environment exists.
NOT_STDLIB = ("app", "httpx", "sqlalchemy", "pydantic", "pytest")


def test_the_acme_cli_modules_load_with_the_standard_library_alone() -> None:
    probe = (
        "import json, sys\n"
        "import tests.support.acme\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {NOT_STDLIB!r})))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("target", ["http://127.0.0.1:8080/x", "[::1]:53", "localhost",
                                    "127.0.0.53:5353", "https://[::1]/"])
def test_loopback_targets_pass(target: str) -> None:
    assert require_loopback(target) == target


@pytest.mark.parametrize("target", ["http://192.0.2.1/", "ns1.digitalocean.com:53",
                                    "8.8.8.8", "https://example.com:443/", "[2001:db8::1]:53"])
def test_anything_else_is_refused(target: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        require_loopback(target)


def test_children_inherit_no_setting_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"ACME_DELEGATE_DO_TOKEN": "caller's", "LEGO_CA_CERTIFICATES": "/x",
                        "HTTPS_PROXY": "http://proxy.example:3128",
                        "REQUESTS_CA_BUNDLE": "/y"}.items():
        monkeypatch.setenv(name, value)
    env = clean_env({"EXTRA": "1"})
    assert not {"ACME_DELEGATE_DO_TOKEN", "LEGO_CA_CERTIFICATES", "HTTPS_PROXY",
                "REQUESTS_CA_BUNDLE"} & set(env)
    assert env["EXTRA"] == "1" and "127.0.0.1" in env["NO_PROXY"]
    service = cli_env(do_token="ours")
    assert service["ACME_DELEGATE_DO_TOKEN"] == "ours"
    # Never DigitalOcean's nameservers, unless the caller names others.
    assert service["ACME_DELEGATE_NAMESERVERS"] == "127.0.0.1:53"
    assert service["ACME_DELEGATE_WAIT_FOR_DNS"] == "0"
