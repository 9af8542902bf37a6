"""Running ``acme-delegate`` as a real process on loopback, for tests."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Unless a test says otherwise, a process waits for no DNS, and its nameservers are on
# loopback: the default, DigitalOcean's, must never be asked from a test.
QUIET_DNS = {"wait_for_dns": "0", "nameservers": "127.0.0.1:53"}


def cli_env(**settings: str) -> dict[str, str]:
    """The environment minus any ACME_DELEGATE_ setting of the caller, plus ``settings``
    (and ``QUIET_DNS`` where they do not say)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACME_DELEGATE_")}
    env.update({f"ACME_DELEGATE_{k.upper()}": v for k, v in {**QUIET_DNS, **settings}.items()})
    return env


def run_cli(*args: str, env: Mapping[str, str], timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], env=dict(env), capture_output=True, text=True,
        timeout=timeout, check=False,
    )


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def serve(env: Mapping[str, str], log_path: Path, *extra: str, port: int | None = None,
          ready_timeout: float = 30, scheme: str = "http",
          verify: ssl.SSLContext | bool = True) -> Iterator[Served]:
    """``acme-delegate serve`` on a free loopback port, stopped (SIGTERM) on exit."""
    port = port or free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port),
             *extra],
            env=dict(env), stdout=log, stderr=subprocess.STDOUT, text=True,
        )
    served = Served(f"{scheme}://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited with {process.returncode}:\n{served.log()}")
            try:
                if httpx.get(served.url + "/health", timeout=1, verify=verify
                             ).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not become healthy:\n{served.log()}")
            time.sleep(0.1)
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
