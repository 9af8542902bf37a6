"""The DigitalOcean stand-in (app.standin) in a process of its own, controlled through its
``/_standin/`` API.

A separate process keeps the stand-in's work off the interpreter that measures (one GIL,
two cores). ``python -m tests.support.standin OPTIONS`` is that process: OPTIONS is a JSON
object (token, zones, per_minute, per_hour); it prints one JSON line with its addresses
and runs until its stdin closes, so it never outlives whoever started it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from tests.support.env import ROOT, clean_env
from tests.support.ports import hostport, require_loopback

#: A local-only secret: the stand-in accepts this token, nothing else ever sees it.
TOKEN = "dop_v1_standin_" + "0" * 49


class StandinProcess:
    """The stand-in as a child process. Its request log's ``monotonic`` stamps use the same
    system-wide clock as this process's ``time.monotonic()``, so runs can be cut out of it
    by time."""

    def __init__(self, *, zones: Sequence[str], per_minute: int = 250,
                 per_hour: int = 5000, token: str = TOKEN) -> None:
        options = {"token": token, "zones": list(zones), "per_minute": per_minute,
                   "per_hour": per_hour}
        self.token = token
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.standin", json.dumps(options)], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=clean_env(),
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            raise RuntimeError("the stand-in process did not start")
        info = json.loads(line)
        self.api_url: str = require_loopback(info["api_url"])
        self.dns_address: tuple[str, int] = (require_loopback(info["dns_host"]),
                                             int(info["dns_port"]))
        self._http = httpx.Client(base_url=self.api_url + "/_standin", timeout=60,
                                  trust_env=False)

    @property
    def dns_hostport(self) -> str:
        return hostport(*self.dns_address)

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        self._http.close()
        if self.process.poll() is None:
            assert self.process.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> StandinProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        response = self._http.post("/faults", json=changes)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def set_rate_limits(self, *, per_minute: int, per_hour: int) -> None:
        self._http.put("/ratelimit", json={"per_minute": per_minute, "per_hour": per_hour}
                       ).raise_for_status()

    def log(self) -> dict[str, Any]:
        """The request log: ``requests`` (each with monotonic, wall, method, path, query,
        status), ``total``, ``max_per_minute``."""
        response = self._http.get("/requests")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def api_calls(self, since: float | None = None, until: float | None = None
                  ) -> list[dict[str, Any]]:
        """DigitalOcean API requests (``/v2/...``) answered between two monotonic stamps."""
        return [e for e in self.log()["requests"]
                if e["path"].startswith("/v2/")
                and (since is None or e["monotonic"] >= since)
                and (until is None or e["monotonic"] <= until)]

    def clear_log(self) -> None:
        self._http.delete("/requests").raise_for_status()

    def add_zone(self, name: str) -> None:
        self._http.post("/zones", json={"name": name}).raise_for_status()

    def add_record(self, zone: str, type_: str, name: str, data: str, ttl: int = 30) -> int:
        response = self._http.post("/records", json={"zone": zone, "type": type_,
                                                     "name": name, "data": data, "ttl": ttl})
        response.raise_for_status()
        return int(response.json()["id"])

    def records(self) -> list[dict[str, Any]]:
        response = self._http.get("/records")
        response.raise_for_status()
        records: list[dict[str, Any]] = response.json()["records"]
        return records


def main() -> int:
    from app.standin import RateLimits, Standin

    options = json.loads(sys.argv[1])
    limits = RateLimits(per_minute=options["per_minute"], per_hour=options["per_hour"])
    with Standin(token=options["token"], zones=options["zones"], rate_limits=limits) as standin:
        host, port = standin.dns_address
        print(json.dumps({"api_url": standin.api_url, "dns_host": host, "dns_port": port}),
              flush=True)
        # Blocks until the parent closes our stdin (or dies).
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
