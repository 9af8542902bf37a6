"""The console in a real browser: the service on a loopback port (in a thread, the
DigitalOcean stand-in behind it in process) and Debian's chromium driven by Selenium.
One server and one browser per module: starting Chromium costs about a second."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from app.config import Settings
from app.db.migrate import upgrade
from app.main import create_app
from app.standin import StandinState
from tests.conftest import ADMIN_TOKEN, DO_TOKEN, DO_URL, do_transport
from tests.strict_ci import IN_CI
from tests.support.ports import free_port

CHROMIUM = os.environ.get("ACME_DELEGATE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ACME_DELEGATE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
# Quiet, offline, throwaway: Chromium must not reach anything but the loopback server.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
    "--disable-dev-shm-usage", "--metrics-recording-only", "--password-store=basic",
)


@dataclass
class LiveService:
    url: str
    do: StandinState
    settings: Settings


class _Server:
    """``create_app`` under uvicorn on a free loopback port, in a thread of its own."""

    def __init__(self, settings: Settings, do: StandinState) -> None:
        self.settings = settings
        self.do = do
        self.port = free_port()
        self.server: uvicorn.Server | None = None
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="console-live-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self.failure = exc

    async def _serve(self) -> None:
        async with do_transport(self.do) as http:
            app = create_app(self.settings, http=http)
            config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None,
                                    access_log=False, lifespan="on")
            self.server = uvicorn.Server(config)
            await self.server.serve()

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not (self.server is not None and self.server.started):
            if self.failure is not None or not self.thread.is_alive() \
                    or time.monotonic() > deadline:
                raise RuntimeError(f"the live server did not start: {self.failure!r}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture(scope="module")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    database = tmp_path_factory.mktemp("console") / "acme-delegate.sqlite3"
    url = f"sqlite:///{database}"
    upgrade(url)
    do = StandinState()
    do.add_zone("example.com")
    do.add_zone("example.org")
    settings = Settings(database_url=url, do_token=DO_TOKEN, do_api_url=DO_URL,
                        delegation_domain="acme.example.org", admin_token=ADMIN_TOKEN,
                        public_url="https://acme-delegate.example.net",
                        # The console is not about DNS propagation; nameservers on loopback
                        # all the same, so nothing is ever asked beyond this machine.
                        wait_for_dns=0, nameservers=["127.0.0.1:9"])
    server = _Server(settings, do)
    server.start()
    try:
        yield LiveService(f"http://127.0.0.1:{server.port}", do, settings)
    finally:
        server.stop()


def _need(path: str, package: str) -> None:
    if Path(path).exists():
        return
    message = f"{path} is missing: apt-get install {package}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A fresh headless Chromium (its own profile) for the module."""
    _need(CHROMIUM, "chromium")
    _need(CHROMEDRIVER, "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="acme-delegate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument("--window-size=1280,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
