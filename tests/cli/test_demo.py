"""The README's run command without a token: a labelled stand-in, a demo credential, and
two commands that show a value going in over the API and coming out of DNS."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import httpx

from app.demo import DEMO_PROPAGATION_DELAY
from tests.support.env import cli_env
from tests.support.processes import Serve, run_cli


def test_serve_without_a_token_runs_the_demo(tmp_path: Path) -> None:
    env = cli_env(log_format="text", wait_for_dns="20")
    env.pop("ACME_DELEGATE_DO_TOKEN", None)
    with Serve(env, tmp_path / "demo.log", "--standin-dns-port", "0") as served:
        out = served.log()
        assert "STAND-IN MODE" in out and "nothing reaches DigitalOcean" in out
        account = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
        assert account["fulldomain"] == "_acme-challenge.www.example.com"
        # Run the printed curl command's request, as a person would paste it.
        curl = shlex.split(next(line for line in out.splitlines() if line.startswith("curl ")))
        url = curl[curl.index("POST") + 1]
        headers = dict(h.split(": ", 1) for h in (curl[i + 1] for i, a in enumerate(curl)
                                                  if a == "-H"))
        body = curl[curl.index("-d") + 1]
        assert url == served.url + "/update"
        response = httpx.post(url, headers=headers, content=body, timeout=30)
        # 200 once the stand-in's DNS serves the value, after its propagation delay.
        assert response.status_code == 200
        assert response.headers["acme-delegate-dns"] == "live"
        assert response.elapsed.total_seconds() >= DEMO_PROPAGATION_DELAY - 0.1
        value = json.loads(body)["txt"]
        # And the printed DNS query.
        nameserver = re.search(r"--nameserver (\S+)\)", out)
        assert nameserver is not None
        answer = run_cli("dns-query", account["fulldomain"], "--nameserver", nameserver[1],
                         env=env)
        assert answer.stdout.split() == [value]
