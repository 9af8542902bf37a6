"""The README's client commands, run as written (issue 14: no drift between the docs and
what works).

Each block of README.md marked ``<!-- e2e: NAME -->`` is taken from the README at test
time. Shell blocks run in bash as they are, with only these changes:

* the service's URL for ``https://acme-delegate.example.net``, a temporary directory for
  ``/etc/letsencrypt/``, and ``customer.test`` (a zone of the stand-in) for
  ``customer.net``;
* ``lego`` and ``certbot`` on the PATH are thin wrappers that add what a test against
  Pebble needs and a user never types: the CA's directory URL, its CA bundle, loopback
  DNS for the propagation check, and certbot's working directories. Everything the
  README says (flags, provider names, environment variables, files) reaches the client
  unchanged;
* ``acme-delegate`` runs against the live service through ``ACME_DELEGATE_SERVER`` and
  ``ACME_DELEGATE_ADMIN_TOKEN`` (the remote CLI).

Debian's lego here is 4.9.1 and has no acme-dns provider: the lego acme-dns blocks (v4
and v5 forms) are checked for their grammar (v5: the command first, provider ``acmedns``;
v4: options first, provider ``acme-dns``) and then run through pylego (lego 4.34 as a
library) with the block's environment and arguments. No lego v5 binary runs here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import sys
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN, DO_TOKEN
from tests.e2e.support import Service, assert_only_txt_changed
from tests.support.acme import find_lego, pylego_acmedns_command, read_pylego_outcome
from tests.support.env import clean_env
from tests.support.pebble import PebbleInstance
from tests.support.processes import ToolCommand, ToolResult
from tests.support.tls import verify_issued_certificate

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCUMENTED_URL = "https://acme-delegate.example.net"
CLIENTS = Path(__file__).resolve().parent / "clients"


def readme_blocks() -> dict[str, str]:
    text = README.read_text()
    blocks = {m[1]: m[2] for m in re.finditer(
        r"<!-- e2e: ([\w-]+) -->\n```\w*\n(.*?)```", text, re.S)}
    assert blocks, "no e2e blocks in README.md"
    return blocks


def localize(text: str, service: Service, tmp_path: Path) -> str:
    etc = tmp_path / "etc" / "letsencrypt"
    etc.mkdir(parents=True, exist_ok=True)
    return (text.replace(DOCUMENTED_URL, service.url)
            .replace("/etc/letsencrypt/", f"{etc}/")
            .replace("customer.net", "customer.test"))


def write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def shims(tmp_path: Path, pebble: PebbleInstance, service: Service,
          *, certbot: str | None = None) -> Path:
    """``lego`` and ``certbot`` wrappers adding only the test's CA and loopback DNS."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    ns = service.standin.dns_hostport
    write_exe(bin_dir / "lego", "#!/bin/sh\n" + shlex.join([
        find_lego(), "--server", pebble.directory_url, "--path",
        str(tmp_path / "lego"), "--dns.resolvers", ns, "--dns.disable-cp",
        "--dns-timeout", "5"]) + ' "$@"\n')
    if certbot:
        work = tmp_path / "certbot"
        write_exe(bin_dir / "certbot", "#!/bin/sh\n" + shlex.join([certbot]) + ' "$@" ' +
                  shlex.join(["--non-interactive", "--server", pebble.directory_url,
                              "--config-dir", str(work / "config"), "--work-dir",
                              str(work / "work"), "--logs-dir", str(work / "logs"),
                              "--cert-name", "e2e", "--no-random-sleep-on-renew"]) + "\n")
    return bin_dir


def run_script(script: str, *, service: Service, pebble: PebbleInstance,
               tmp_path: Path, bin_dir: Path, extra: dict[str, str] | None = None
               ) -> ToolResult:
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "acme-delegate").exists()
    env = clean_env({
        "PATH": f"{bin_dir}:{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ACME_DELEGATE_SERVER": service.url,
        "ACME_DELEGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "LEGO_CA_CERTIFICATES": str(pebble.ca_bundle),
        "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle),
        "NO_PROXY": "127.0.0.1,localhost,::1",
        **(extra or {})})
    command = ToolCommand(argv=["bash", "-euo", "pipefail", "-c", script], env=env,
                                  cwd=tmp_path, timeout=240)
    return command.run()


def certificate(tmp_path: Path) -> Path:
    found = sorted((tmp_path / "lego" / "certificates").glob("*.crt"))
    found = [p for p in found if not p.name.endswith(".issuer.crt")]
    assert len(found) == 1, found
    return found[0]


def certbot_fullchain(tmp_path: Path) -> Path:
    return tmp_path / "certbot" / "config" / "live" / "e2e" / "fullchain.pem"


def verify(pem: Path | str, sans: list[str], pebble: PebbleInstance) -> None:
    info = verify_issued_certificate(pem, sans, root_pem=pebble.root_pem())
    assert pebble.cert_status(info.serial_hex)["Status"] == "Valid"


# --- lego httpreq (Debian's lego 4.9.1 runs the block itself) ---------------------------


def test_readme_lego_httpreq(service: Service, pebble: PebbleInstance, lego: str,
                             tmp_path: Path) -> None:
    script = localize(readme_blocks()["lego-v4-httpreq"], service, tmp_path)
    assert "--accept-tos" in script  # else lego stops to ask (stdin is closed here)
    before = service.records()
    result = run_script(script, service=service, pebble=pebble, tmp_path=tmp_path,
                        bin_dir=shims(tmp_path, pebble, service))
    assert result.ok, result.describe()
    verify(certificate(tmp_path), ["www.example.com"], pebble)
    assert_only_txt_changed(before, service.records(), ["_acme-challenge.www.example.com"])
    assert [r for r in service.value_rows() if r[2] == "live"] == []  # cleaned up


def test_readme_lego_httpreq_raw_with_cname_support_off(
        service: Service, pebble: PebbleInstance, lego: str, tmp_path: Path) -> None:
    """The delegated name behind the customer's CNAME, with lego's CNAME support off and
    RAW mode, as the README says. The CNAME is made (as the customer would) between the
    block's `accounts create` and its lego line."""
    block = localize(readme_blocks()["lego-v4-httpreq-raw"], service, tmp_path)
    assert "LEGO_DISABLE_CNAME_SUPPORT=true" in block and "HTTPREQ_MODE=RAW" in block
    cname = write_exe(tmp_path / "make-cname", "#!" + sys.executable + "\n" + f'''
import httpx
admin = {{"Authorization": "Bearer {ADMIN_TOKEN}"}}
[account] = [a for a in httpx.get("{service.url}/admin/accounts", headers=admin).json()
             if a["domain"] == "www.customer.test"]
httpx.post("{service.standin.api_url}/v2/domains/customer.test/records",
           headers={{"Authorization": "Bearer {DO_TOKEN}"}},
           json={{"type": "CNAME", "name": "_acme-challenge.www",
                  "data": account["fulldomain"] + ".", "ttl": 60}}).raise_for_status()
''')
    lines = block.splitlines(keepends=True)
    client = next(i for i, line in enumerate(lines) if line.startswith("LEGO_DISABLE"))
    script = "".join([*lines[:client], f"{cname}\n", *lines[client:]])
    result = run_script(script, service=service, pebble=pebble, tmp_path=tmp_path,
                        bin_dir=shims(tmp_path, pebble, service))
    assert result.ok, result.describe()
    verify(certificate(tmp_path), ["www.customer.test"], pebble)
    assert [r for r in service.value_rows() if r[2] == "live"] == []  # cleaned up


# --- lego acme-dns: the v4 and v5 blocks, through pylego --------------------------------


def lego_invocation(block: str) -> tuple[list[str], dict[str, str], list[str]]:
    """(shell lines before lego, lego's environment assignments, lego's argv)."""
    joined = block.replace("\\\n", " ")
    lines = [line for line in joined.splitlines() if line.strip()]

    def command(line: str) -> tuple[dict[str, str], list[str]]:
        words = shlex.split(line)
        env: dict[str, str] = {}
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        return env, words

    [lego_line] = [line for line in lines if command(line)[1][:1] == ["lego"]]
    env, words = command(lego_line)
    return lines[:lines.index(lego_line)], env, words[1:]


def parse_lego(args: list[str], *, version: int) -> tuple[str, str, list[str]]:
    """(email, provider, domains), checking lego's grammar for ``version``."""
    if version == 5:
        assert args[0] == "run", "lego v5 takes the command first: lego run --email …"
        options = args[1:]
    else:
        assert args[-1] == "run", "lego v4 takes the command last: lego --email … run"
        options = args[:-1]
    assert "--accept-tos" in options, "without --accept-tos lego stops to ask"
    values: dict[str, list[str]] = {}
    i = 0
    while i < len(options):
        flag = options[i]
        if flag == "--accept-tos":
            i += 1
            continue
        values.setdefault(flag, []).append(options[i + 1])
        i += 2
    assert set(values) <= {"--email", "--dns", "-d"}, values
    return values["--email"][0], values["--dns"][0], values["-d"]


@pytest.mark.parametrize(("block", "version", "provider"), [
    ("lego-v4-acmedns", 4, "acme-dns"), ("lego-v5-acmedns", 5, "acmedns")])
def test_readme_lego_acmedns(service: Service, pebble: PebbleInstance,
                             pylego_python: str, tmp_path: Path, block: str, version: int,
                             provider: str) -> None:
    text = localize(readme_blocks()[block], service, tmp_path)
    setup, env, args = lego_invocation(text)
    email, named, domains = parse_lego(args, version=version)
    assert named == provider
    assert set(env) == {"ACME_DNS_API_BASE", "ACME_DNS_STORAGE_PATH"}
    prepared = run_script("\n".join(setup), service=service, pebble=pebble,
                          tmp_path=tmp_path, bin_dir=shims(tmp_path, pebble, service))
    assert prepared.ok, prepared.describe()
    storage = Path(env["ACME_DNS_STORAGE_PATH"].replace("$PWD", str(tmp_path)))
    assert json.loads(storage.read_text())["example.com"]["server_url"] == service.url
    before = service.records()
    # lego 4.34 knows the provider as acme-dns (v5's acmedns is the same code renamed).
    cmd = pylego_acmedns_command(
        pebble, api_base=env["ACME_DNS_API_BASE"], storage_path=storage, domains=domains,
        dns_resolver=service.standin.dns_hostport, workdir=tmp_path / "pylego",
        python=pylego_python, email=email, require_recursive_value=True)
    result = cmd.run()
    outcome = read_pylego_outcome(cmd)
    assert outcome.ok, f"{outcome.code}: {outcome.detail}\n{result.describe()}"
    verify(outcome.certificate, domains, pebble)
    assert_only_txt_changed(before, service.records(), ["_acme-challenge.example.com"])
    assert len(service.accounts()) == 1  # the stored account, no registration


# --- certbot --------------------------------------------------------------------------


def test_readme_certbot_hooks(service: Service, pebble: PebbleInstance,
                              certbot: str, tmp_path: Path) -> None:
    script = localize(readme_blocks()["certbot-hooks"], service, tmp_path)
    # The hook waits for the authoritative nameservers: here the stand-in's DNS.
    script = script.replace("certbot-auth --server", "certbot-auth --nameserver "
                            f"{service.standin.dns_hostport} --server")
    result = run_script(script, service=service, pebble=pebble, tmp_path=tmp_path,
                        bin_dir=shims(tmp_path, pebble, service, certbot=certbot))
    assert result.ok, result.describe()
    verify(certbot_fullchain(tmp_path), ["example.com", "*.example.com"], pebble)
    assert [r for r in service.value_rows() if r[2] == "live"] == []  # cleaned up
    credentials = tmp_path / "etc" / "letsencrypt" / "acme-delegate.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600


def test_readme_certbot_dns_acmedns(service: Service, pebble: PebbleInstance,
                                    certbot_acmedns: str, tmp_path: Path) -> None:
    blocks = readme_blocks()
    ini = localize(blocks["certbot-dns-acmedns-ini"], service, tmp_path)
    assert not re.search(r"dns_acmedns_api_url = \S+/\n", ini), "no trailing slash"
    ini_path = tmp_path / "etc" / "letsencrypt" / "acmedns.ini"
    ini_path.write_text(ini)
    ini_path.chmod(0o600)
    # The README's floor: certbot 2.1 or later.
    version = ToolCommand(argv=[certbot_acmedns, "--version"], env=os.environ.copy(),
                                  cwd=tmp_path, timeout=60).run()
    major, minor = (int(n) for n in re.findall(r"(\d+)\.(\d+)", version.output)[0])
    assert (major, minor) >= (2, 1), version.output
    script = localize(blocks["certbot-dns-acmedns"], service, tmp_path)
    # The plugin's default 10 s propagation pause is all it does; keep the test short.
    script = script.replace("--dns-acmedns-credentials",
                            "--dns-acmedns-propagation-seconds 0 --dns-acmedns-credentials")
    result = run_script(script, service=service, pebble=pebble, tmp_path=tmp_path,
                        bin_dir=shims(tmp_path, pebble, service, certbot=certbot_acmedns))
    assert result.ok, result.describe()
    verify(certbot_fullchain(tmp_path), ["example.com", "*.example.com"], pebble)
    access = [json.loads(line) for line in service.log().splitlines()
              if '"http.request"' in line]
    posts = [a["fields"]["path"] for a in access if a["fields"]["method"] == "POST"
             and a["fields"]["route"] == "/update"]
    assert posts == ["/update", "/update"], posts  # not //update: no trailing slash


def test_readme_acme_dns_auth_script(service: Service, pebble: PebbleInstance,
                                     certbot_acmedns: str, tmp_path: Path) -> None:
    blocks = readme_blocks()
    settings = localize(blocks["acme-dns-auth-config"], service, tmp_path)
    script = (CLIENTS / "acme-dns-auth.py").read_text()
    for line in settings.strip().splitlines():
        key = line.split("=", 1)[0].strip()
        script, count = re.subn(rf"^{key} = .*$", line, script, flags=re.M)
        assert count == 1, key
    # The hook runs with a python that has requests (certbot's own).
    python = Path(certbot_acmedns).parent / "python"
    script = re.sub(r"^#!.*$", f"#!{python}", script, count=1, flags=re.M)
    write_exe(tmp_path / "etc" / "letsencrypt" / "acme-dns-auth.py", script)
    commands = localize(blocks["acme-dns-auth"], service, tmp_path)
    result = run_script(commands, service=service, pebble=pebble, tmp_path=tmp_path,
                        bin_dir=shims(tmp_path, pebble, service, certbot=certbot_acmedns))
    assert result.ok, result.describe()
    verify(certbot_fullchain(tmp_path), ["example.com", "*.example.com"], pebble)
    # It used the stored credential: no registration.
    assert len(service.accounts()) == 1
    events = [e["event"] for e in service.audit()]
    assert events.count("update") == 2 and "account.register" not in events


def test_every_e2e_block_has_a_test() -> None:
    tested = {"lego-v4-httpreq", "lego-v4-httpreq-raw", "lego-v4-acmedns", "lego-v5-acmedns",
              "certbot-hooks", "certbot-dns-acmedns-ini", "certbot-dns-acmedns",
              "acme-dns-auth-config", "acme-dns-auth"}
    assert set(readme_blocks()) == tested
