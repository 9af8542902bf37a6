"""Both servers together on loopback: context managers and `python -m app.standin`."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.query
import dns.rcode
import httpx
import pytest

from app.standin import RateLimits, Standin, StandinError, StandinState, start_standin

ROOT = Path(__file__).resolve().parents[2]


def test_sync_context_manager_serves_api_and_dns() -> None:
    with Standin(zones=["example.com"], token="T") as standin:
        headers = {"Authorization": "Bearer T"}
        with httpx.Client(base_url=standin.api_url, headers=headers) as client:
            created = client.post(
                "/v2/domains/example.com/records",
                json={"type": "TXT", "name": "_acme-challenge", "data": "live", "ttl": 30},
            )
            assert created.status_code == 201
            assert client.get("/_standin/requests").json()["total"] == 1
        host, port = standin.dns_address
        query = dns.message.make_query("_acme-challenge.example.com", "TXT")
        answer = dns.query.udp(query, host, port=port, timeout=2)
        assert answer.answer[0][0].to_text() == '"live"'
        assert dns.query.tcp(query, host, port=port, timeout=2).answer == answer.answer
        assert standin.dns_hostport == f"127.0.0.1:{port}"
    with pytest.raises(StandinError):
        _ = standin.api_url


async def test_async_context_manager_shares_state() -> None:
    state = StandinState(rate_limits=RateLimits(per_minute=2, per_hour=10))
    state.add_zone("example.com")
    async with Standin(state=state, token="T") as standin:
        assert standin.state is state
        headers = {"Authorization": "Bearer T"}
        async with httpx.AsyncClient(base_url=standin.api_url, headers=headers) as client:
            statuses = [(await client.get("/v2/domains")).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        host, port = standin.dns_address
        query = dns.message.make_query("example.com", "SOA")
        answer = await dns.asyncquery.udp(query, host, port=port, timeout=2)
        assert answer.rcode() == dns.rcode.NOERROR


def test_start_standin_and_close_are_idempotent() -> None:
    standin = start_standin(zones=["example.com"])
    try:
        assert standin.start() is standin
        with httpx.Client() as client:
            assert client.get(f"{standin.api_url}/v2/domains").status_code == 401
    finally:
        standin.close()
    standin.close()


def test_refuses_non_loopback_hosts() -> None:
    with pytest.raises(StandinError, match="loopback"):
        Standin(host="0.0.0.0")


def test_busy_port_is_reported() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StandinError, match="failed to start"):
            start_standin(http_port=port)


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    with Standin(host="::1", zones=["example.com"]) as standin:
        assert standin.api_url.startswith("http://[::1]:")
        with httpx.Client() as client:
            assert client.get(f"{standin.api_url}/_standin/zones").status_code == 200
        host, port = standin.dns_address
        answer = dns.query.udp(
            dns.message.make_query("example.com", "NS"), host, port=port, timeout=2
        )
        assert len(answer.answer[0]) == 3


def test_module_cli_runs_until_interrupted() -> None:
    command = [
        sys.executable,
        "-m",
        "app.standin",
        "--zone",
        "example.com",
        "--zone",
        "example.org",
    ]
    command += ["--http-port", "0", "--dns-port", "0", "--token", "cli-token"]
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            api_line = process.stdout.readline()
            dns_line = process.stdout.readline()
            api_url = api_line.split()[3].removesuffix("/v2")
            headers = {"Authorization": "Bearer cli-token"}
            with httpx.Client(headers=headers) as client:
                domains = client.get(f"{api_url}/v2/domains").json()["domains"]
            assert [d["name"] for d in domains] == ["example.com", "example.org"]
            host, port = dns_line.split()[2].rsplit(":", 1)
            query = dns.message.make_query("example.org", "SOA")
            assert dns.query.udp(query, host, port=int(port), timeout=2).answer
        finally:
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=10)
        assert process.returncode == 0, stderr
