"""Real ACME clients against ``acme-delegate serve``, the DigitalOcean stand-in and Pebble.

Every flow but the last issues a real certificate from Pebble, which validates DNS-01 by
asking the stand-in's DNS server, and checks its SANs and its chain up to Pebble's root.
After each flow the stand-in's records are compared with a snapshot taken before the
client ran: nothing may change but TXT records at the names the flow's credentials are
bound to. See tests/support/acme.py and FINDINGS.md for why each client is driven the way it is.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import pytest

from app.standin import Standin
from tests.e2e.support import (
    PROPAGATION_DELAY,
    Service,
    assert_only_txt_changed,
    customer_cname,
    write_private_json,
)
from tests.support.acme import (
    PylegoOutcome,
    acmedns_storage_account,
    certbot_acmedns_command,
    certbot_manual_command,
    lego_httpreq_command,
    pylego_acmedns_command,
    read_pylego_outcome,
    write_acmedns_hook,
    write_acmedns_registration_file,
)
from tests.support.pebble import PebbleInstance
from tests.support.processes import ToolResult
from tests.support.tls import verify_issued_certificate

pytestmark = pytest.mark.e2e

APEX_AND_WILDCARD = ["example.com", "*.example.com"]
DIRECT_NAME = "_acme-challenge.example.com"


def verify(pem: str | Path, sans: list[str], pebble: PebbleInstance) -> None:
    info = verify_issued_certificate(pem, sans, root_pem=pebble.root_pem())
    assert info.chain_length >= 2, "expected the leaf and Pebble's intermediate"
    assert pebble.cert_status(info.serial_hex)["Status"] == "Valid"


def dns_txt(standin: Standin, name: str) -> set[str]:
    """TXT strings the stand-in's DNS server answers at ``name`` (after CNAMEs)."""
    host, port = standin.dns_address
    answer = dns.query.udp(dns.message.make_query(name, "TXT"), host, port=port, timeout=5)
    return {
        b"".join(rdata.strings).decode()
        for rrset in answer.answer if rrset.rdtype == dns.rdatatype.TXT
        for rdata in rrset
    }


def acme_value(seed: str) -> str:
    """A DNS-01 value: base64url(SHA-256(...)), 43 characters."""
    digest = hashlib.sha256(seed.encode() + os.urandom(16)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


# --------------------------------------------------------------------------------------
# 1. lego acme-dns (pylego), direct name, apex + wildcard
# --------------------------------------------------------------------------------------


def test_lego_acmedns_direct_name(service: Service, pebble: PebbleInstance,
                                  pylego_python: str, tmp_path: Path) -> None:
    """An account from ``accounts create --format lego`` as lego's storage file; lego
    puts two values at once at ``_acme-challenge.example.com`` (apex + wildcard)."""
    storage_data = service.create_account("example.com", fmt="lego", server_url=service.url)
    account = storage_data["example.com"]
    assert account["fulldomain"] == DIRECT_NAME
    assert account["server_url"] == service.url
    storage = write_private_json(tmp_path / "lego-acme-dns.json", storage_data)
    before = service.records()

    cmd = pylego_acmedns_command(
        pebble, api_base=service.url, storage_path=storage, domains=APEX_AND_WILDCARD,
        dns_resolver=service.standin.dns_hostport, workdir=tmp_path / "pylego",
        python=pylego_python, require_recursive_value=True)
    result = cmd.run()
    outcome = read_pylego_outcome(cmd)
    assert outcome.ok, f"{outcome.code}: {outcome.detail}\n{result.describe()}"
    verify(outcome.certificate, APEX_AND_WILDCARD, pebble)

    # lego used the stored account: no registration happened.
    assert acmedns_storage_account(storage, "example.com") == account
    assert [a["username"] for a in service.accounts()] == [account["username"]]
    # Both values of the order are live at the one bound name, nowhere else.
    assert_only_txt_changed(before, service.records(), [DIRECT_NAME])
    assert len(service.txt_at(DIRECT_NAME)) == 2
    assert sorted(v for _, v, s in service.value_rows() if s == "live") == \
        service.txt_at(DIRECT_NAME)


# --------------------------------------------------------------------------------------
# 2. lego acme-dns (pylego) registers itself; delegated name behind a CNAME
# --------------------------------------------------------------------------------------


def test_lego_acmedns_registers_then_issues_after_cname(
        service: Service, pebble: PebbleInstance, pylego_python: str,
        tmp_path: Path) -> None:
    """Run 1 registers through ``/register`` and stops asking for the CNAME; the customer
    creates it in their zone; run 2 issues for the name and its wildcard."""
    domain = "www.customer.test"
    storage = tmp_path / "lego-acme-dns.json"

    def run(domains: list[str], workdir: str) -> tuple[PylegoOutcome, str]:
        cmd = pylego_acmedns_command(
            pebble, api_base=service.url, storage_path=storage, domains=domains,
            dns_resolver=service.standin.dns_hostport, workdir=tmp_path / workdir,
            python=pylego_python, require_recursive_value=True)
        result = cmd.run()
        return read_pylego_outcome(cmd), result.describe()

    before_run1 = service.records()
    # One name only: with apex + wildcard lego would lose the CNAME message (FINDINGS.md).
    first, described = run([domain], "run1")
    assert first.cname_required, f"{first.code}: {first.detail}\n{described}"
    stored = acmedns_storage_account(storage, domain)
    assert stored is not None, "lego did not store the account it registered"
    fulldomain = stored["fulldomain"]
    assert fulldomain.endswith("." + "acme.example.org")
    assert first.cname_target() == fulldomain + "."
    assert stored["server_url"] == service.url
    registered = service.accounts()
    assert [(a["username"], a["fulldomain"], a["mode"]) for a in registered] == \
        [(stored["username"], fulldomain, "delegated")]
    assert service.records() == before_run1, "registering wrote DNS records"

    customer_cname(service.standin, "customer.test", "_acme-challenge.www", fulldomain + ".")
    before_run2 = service.records()
    second, described = run([domain, "*." + domain], "run2")
    assert second.ok, f"{second.code}: {second.detail}\n{described}"
    verify(second.certificate, [domain, "*." + domain], pebble)

    assert_only_txt_changed(before_run2, service.records(), [fulldomain])
    assert len(service.txt_at(fulldomain)) == 2
    assert dns_txt(service.standin, "_acme-challenge." + domain) == set(service.txt_at(fulldomain))
    assert len(service.accounts()) == 1, "run 2 registered again"


# --------------------------------------------------------------------------------------
# 3. lego --dns httpreq (Debian's lego 4.9.1), Basic auth, cleanup
# --------------------------------------------------------------------------------------


def test_lego_httpreq_basic_auth_and_cleanup(service: Service, pebble: PebbleInstance,
                                             lego: str, tmp_path: Path) -> None:
    account = service.create_account("example.com")
    other = service.create_account("other.example.com")
    before = service.records()
    writes_before = service.do_writes()

    def run(workdir: str, domains: list[str], username: str, password: str
            ) -> tuple[ToolResult, dict[str, Path]]:
        cmd = lego_httpreq_command(
            pebble, endpoint=service.url, domains=domains,
            dns_resolver=service.standin.dns_hostport, workdir=tmp_path / workdir,
            username=username, password=password, lego=lego)
        return cmd.run(), cmd.outputs

    # The right user with a wrong key: refused, nothing written.
    wrong_key, _ = run("wrong-key", ["example.com"], account["username"], "k" * 40)
    assert not wrong_key.ok, wrong_key.describe()
    assert "401" in wrong_key.output and "forbidden" in wrong_key.output, wrong_key.describe()
    # A valid credential bound to another name: refused, nothing written.
    wrong_name, _ = run("wrong-name", ["example.com"], other["username"], other["password"])
    assert not wrong_name.ok, wrong_name.describe()
    assert "401" in wrong_name.output and "forbidden" in wrong_name.output, wrong_name.describe()
    assert service.records() == before
    assert service.do_writes() == writes_before
    assert service.value_rows() == []

    issued, outputs = run("ok", APEX_AND_WILDCARD, account["username"], account["password"])
    assert issued.ok, issued.describe()
    verify(outputs["certificate"], APEX_AND_WILDCARD, pebble)

    # Cleanup retired both values, and housekeeping removed them: DNS, the stand-in and the
    # database are back to before.
    service.cleaned_up()
    after = service.records()
    assert_only_txt_changed(before, after, [DIRECT_NAME])
    assert service.all_txt() == []
    assert after == before
    assert service.value_rows() == []
    events = [(e["event"], e["outcome"], e["name"]) for e in service.audit()
              if e["event"] in ("present", "cleanup")]
    assert sorted(events) == sorted(
        [("present", "ok", DIRECT_NAME)] * 2 + [("cleanup", "ok", DIRECT_NAME)] * 2), events
    writes = service.do_writes()[len(writes_before):]
    assert sum(w.startswith("POST ") for w in writes) == 2, writes
    assert sum(w.startswith("DELETE ") for w in writes) == 2, writes


def test_lego_httpreq_delegated_name_behind_cname(service: Service,
                                                  pebble: PebbleInstance, lego: str,
                                                  tmp_path: Path) -> None:
    """A delegated account: lego follows the customer's CNAME and sends the target as
    ``fqdn``; in RAW mode it sends the certificate's domain instead. Both issue and clean
    up after themselves."""
    domain = "www.customer.test"
    account = service.create_account(domain, delegated=True)
    fulldomain = account["fulldomain"]
    customer_cname(service.standin, "customer.test", "_acme-challenge.www", fulldomain + ".")
    before = service.records()

    for raw_mode in (False, True):
        cmd = lego_httpreq_command(
            pebble, endpoint=service.url, domains=[domain],
            dns_resolver=service.standin.dns_hostport,
            workdir=tmp_path / ("raw" if raw_mode else "default"),
            username=account["username"], password=account["password"], raw_mode=raw_mode,
            lego=lego)
        result = cmd.run()
        assert result.ok, f"raw_mode={raw_mode}\n{result.describe()}"
        verify(cmd.outputs["certificate"], [domain], pebble)
        service.cleaned_up()
        assert_only_txt_changed(before, service.records(), [fulldomain])
        assert service.records() == before
        assert service.value_rows() == []
    events = [(e["event"], e["outcome"], e["name"]) for e in service.audit()
              if e["event"] in ("present", "cleanup")]
    assert sorted(events) == [("cleanup", "ok", fulldomain)] * 2 + \
        [("present", "ok", fulldomain)] * 2, events


# --------------------------------------------------------------------------------------
# 4. certbot --manual with acme-delegate's own hooks
# --------------------------------------------------------------------------------------


def test_certbot_manual_with_acme_delegate_hooks(service: Service,
                                                 pebble: PebbleInstance,
                                                 certbot: str, tmp_path: Path) -> None:
    credentials = write_private_json(tmp_path / "acme-delegate.json",
                                     service.create_account("example.com", fmt="cert-manager"))
    exe = Path(sys.executable).parent / "acme-delegate"
    assert exe.exists(), f"{exe} missing: install the project into its venv"
    common = ["--server", service.url, "--credentials", str(credentials)]
    auth = shlex.join([str(exe), "hook", "certbot-auth", *common,
                       "--nameserver", service.standin.dns_hostport, "--timeout", "30"])
    cleanup = shlex.join([str(exe), "hook", "certbot-cleanup", *common])
    before = service.records()

    cmd = certbot_manual_command(pebble, domains=APEX_AND_WILDCARD,
                                         workdir=tmp_path / "certbot", auth_hook=auth,
                                         cleanup_hook=cleanup, certbot=certbot)
    result = cmd.run()
    assert result.ok, result.describe() + "\n" + _tail(cmd.outputs["log"])
    verify(cmd.outputs["fullchain"], APEX_AND_WILDCARD, pebble)

    log = cmd.outputs["log"].read_text(errors="replace")
    assert log.count(f"{DIRECT_NAME} answers the value") == 2, _tail(cmd.outputs["log"])
    # The cleanup hook retired both values, and housekeeping removed them.
    service.cleaned_up()
    assert_only_txt_changed(before, service.records(), [DIRECT_NAME])
    assert service.all_txt() == []
    assert service.records() == before
    assert service.value_rows() == []
    events = [(e["event"], e["outcome"]) for e in service.audit()
              if e["event"] in ("update", "cleanup")]
    assert sorted(events) == [("cleanup", "ok")] * 2 + [("update", "ok")] * 2, events


def test_certbot_with_a_hook_that_does_not_wait(service: Service,
                                                pebble: PebbleInstance,
                                                certbot: str, tmp_path: Path) -> None:
    """joohoi's acme-dns-auth.py: POST /update, exit at once on 200, no DNS check of its
    own; Pebble validates right after. With DNS lagging the API by PROPAGATION_DELAY,
    this works only because 200 means the nameservers serve the value."""
    # The hook's storage is keyed by the bare domain, as cert-manager's secret is.
    storage = write_private_json(tmp_path / "acmedns-storage.json",
                                 service.create_account("example.com", fmt="cert-manager"))
    hooks = write_acmedns_hook(tmp_path / "hook", service.url, storage)
    before = service.records()

    cmd = certbot_manual_command(pebble, domains=APEX_AND_WILDCARD,
                                         workdir=tmp_path / "certbot", auth_hook=hooks.auth,
                                         certbot=certbot)
    result = cmd.run()
    assert result.ok, result.describe() + "\n" + _tail(cmd.outputs["log"])
    verify(cmd.outputs["fullchain"], APEX_AND_WILDCARD, pebble)
    assert "CNAME" not in result.output, "the hook registered instead of using its account"

    assert_only_txt_changed(before, service.records(), [DIRECT_NAME])
    assert len(service.txt_at(DIRECT_NAME)) == 2
    waits = [json.loads(line)["fields"] for line in service.log().splitlines()
             if '"dns.wait"' in line]
    assert [w["outcome"] for w in waits] == ["seen", "seen"], waits
    # Each update waited for the lagging DNS before its 200.
    assert all(w["seconds"] >= PROPAGATION_DELAY - 0.5 for w in waits), waits


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not written)"


# --------------------------------------------------------------------------------------
# 5. certbot with the certbot-dns-acmedns plugin (own venv), api_url ending in "/"
# --------------------------------------------------------------------------------------


def test_certbot_dns_acmedns_plugin(service: Service, pebble: PebbleInstance,
                                    certbot_acmedns: str, tmp_path: Path) -> None:
    accounts = service.create_account("example.com", fmt="cert-manager")
    registration = write_acmedns_registration_file(tmp_path / "reg.json", accounts)
    before = service.records()

    cmd = certbot_acmedns_command(
        pebble, api_url=service.url + "/", registration_file=registration,
        domains=APEX_AND_WILDCARD, workdir=tmp_path / "certbot", certbot=certbot_acmedns)
    result = cmd.run()
    assert result.ok, result.describe() + "\n" + _tail(cmd.outputs["log"])
    verify(cmd.outputs["fullchain"], APEX_AND_WILDCARD, pebble)

    # The plugin posted to "//update" (api_url + "/update"), and it was served as /update.
    access = [json.loads(line) for line in service.log().splitlines()
              if '"http.request"' in line]
    wire = [(a["fields"]["path"], a["fields"]["route"], a["fields"]["status"]) for a in access
            if a["fields"]["method"] == "POST"]
    assert wire.count(("//update", "/update", 200)) == 2, wire
    assert_only_txt_changed(before, service.records(), [DIRECT_NAME])
    assert len(service.txt_at(DIRECT_NAME)) == 2


# --------------------------------------------------------------------------------------
# 6. acme.sh and the old goacmedns, byte for byte over a socket
# --------------------------------------------------------------------------------------

ACMESH_UA = "acme.sh/3.1.1 (https://github.com/acmesh-official/acme.sh)"
GOACMEDNS_UA = "goacmedns (linux; amd64)"


def raw_http(url: str, request: bytes, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is, read one response (Content-Length or chunked)."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname and parts.port
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before the headers: {data!r}"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()

        def more() -> bytes:
            chunk = sock.recv(65536)
            assert chunk, "connection closed in the middle of the body"
            return chunk

        if "content-length" in headers:
            while len(body) < int(headers["content-length"]):
                body += more()
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            raw, body = body, b""
            while True:
                while b"\r\n" not in raw:
                    raw += more()
                size_line, _, raw = raw.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(raw) < size + 2:
                    raw += more()
                body, raw = body + raw[:size], raw[size + 2:]
                if size == 0:
                    break
    return int(status_line.split()[1]), headers, body


def host_header(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def acmesh_register(url: str) -> bytes:
    """acme.sh ``_post "" "$ACMEDNS_BASE_URL/register" "" "POST"``: curl -X POST, no
    body, no Content-Type (captured from curl 7.88 as acme.sh calls it)."""
    return (f"POST /register HTTP/1.1\r\nHost: {host_header(url)}\r\n"
            f"User-Agent: {ACMESH_UA}\r\nAccept: */*\r\n\r\n").encode()


def acmesh_update(url: str, username: str, password: str, subdomain: str, txt: str) -> bytes:
    """acme.sh: ``data="{\\"subdomain\\":\\"$SUB\\", \\"txt\\": \\"$txt\\"}"`` sent with
    curl ``--data``, hence a form Content-Type on JSON bytes."""
    body = f'{{"subdomain":"{subdomain}", "txt": "{txt}"}}'.encode()
    return (f"POST /update HTTP/1.1\r\nHost: {host_header(url)}\r\n"
            f"User-Agent: {ACMESH_UA}\r\nAccept: */*\r\n"
            f"X-Api-User: {username}\r\nX-Api-Key: {password}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n").encode() + body


def go_post(url: str, path: str, body: bytes, extra: dict[str, str] | None = None) -> bytes:
    """Go net/http as old goacmedns (cpu/goacmedns postAPI) sends it: Host, User-Agent,
    Content-Length (also 0 for POST), the header map sorted, then Accept-Encoding."""
    headers = {"Content-Type": "application/json", **(extra or {})}
    lines = [f"POST {path} HTTP/1.1", f"Host: {host_header(url)}",
             f"User-Agent: {GOACMEDNS_UA}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in sorted(headers.items())]
    lines += ["Accept-Encoding: gzip", "", ""]
    return "\r\n".join(lines).encode() + body


def acmesh_sed(response: str, field: str) -> str:
    """What acme.sh's ``echo "$response" | sed -n 's/^{.*"F":[ ]*"\\([^"]*\\)".*}/\\1/p'``
    extracts (current acme.sh), and the same with the older ``sed -E ...;t;d`` form."""
    current = subprocess.run(
        ["sed", "-n", f's/^{{.*"{field}":[ ]*"\\([^"]*\\)".*}}/\\1/p'],
        input=response + "\n", capture_output=True, text=True, check=True).stdout
    older = subprocess.run(
        ["sed", "-E", f's/^\\{{.*?"{field}":"([^"]*)".*\\}}/\\1/g;t;d'],
        input=response + "\n", capture_output=True, text=True, check=True).stdout
    assert current == older, (field, current, older)
    return current.rstrip("\n")


def go_field(obj: dict[str, Any], name: str) -> Any:
    """encoding/json's case-insensitive match of a struct field name."""
    matches = [v for k, v in obj.items() if k.lower() == name.lower()]
    assert len(matches) == 1, (name, obj)
    return matches[0]


def test_acmesh_and_old_goacmedns_on_the_wire(service: Service) -> None:
    url = service.url
    before = service.records()
    bound: list[str] = []

    # acme.sh, no account yet: register, read the answer with sed, then update.
    status, _, body = raw_http(url, acmesh_register(url))
    assert status == 201, body
    text = body.decode()
    assert "\n" not in text.rstrip("\n") and text.startswith("{"), f"not one line: {text!r}"
    account = json.loads(text)
    parsed = {f: acmesh_sed(text, f) for f in ("username", "password", "subdomain", "fulldomain")}
    assert parsed == {f: account[f] for f in parsed}
    bound.append(parsed["fulldomain"])
    value = acme_value("acme.sh")
    status, _, body = raw_http(url, acmesh_update(url, parsed["username"], parsed["password"],
                                                  parsed["subdomain"], value))
    assert f'"{value}"' in body.decode(), (status, body)  # acme.sh's only success test
    assert status == 200
    # 200 means live: DNS, which lags the API by PROPAGATION_DELAY, serves it already.
    assert value in dns_txt(service.standin, parsed["fulldomain"])

    # acme.sh with a direct account from the CLI (ACMEDNS_USERNAME/PASSWORD/SUBDOMAIN set).
    direct = service.create_account("example.com")
    bound.append(direct["fulldomain"])
    value = acme_value("acme.sh direct")
    status, _, body = raw_http(url, acmesh_update(url, direct["username"], direct["password"],
                                                  direct["subdomain"], value))
    assert (status, f'"{value}"' in body.decode()) == (200, True), body
    assert value in dns_txt(service.standin, DIRECT_NAME)

    # Old goacmedns: Go field names, exactly 201 / 200, response read case-insensitively.
    for register_body in (b"", b'{"AllowFrom":["127.0.0.0/8"]}'):
        status, _, body = raw_http(url, go_post(url, "/register", register_body))
        assert status == 201, body
        registered = json.loads(body)
        fulldomain = go_field(registered, "FullDomain")
        bound.append(fulldomain)
        assert go_field(registered, "allowfrom") == (["127.0.0.0/8"] if register_body else [])
        values = [acme_value("go 1"), acme_value("go 2")]
        for txt in values:
            update = json.dumps({"SubDomain": go_field(registered, "SubDomain"), "Txt": txt},
                                separators=(",", ":")).encode()
            status, _, body = raw_http(url, go_post(url, "/update", update, {
                "X-Api-User": go_field(registered, "Username"),
                "X-Api-Key": go_field(registered, "Password")}))
            assert status == 200, body
            assert json.loads(body) == {"txt": txt}
        assert dns_txt(service.standin, fulldomain) == set(values)

    assert_only_txt_changed(before, service.records(), bound)
    assert len({*bound}) == 4
