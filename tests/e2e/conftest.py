"""Fixtures of the end-to-end tests.

* ``standin`` (session): the DigitalOcean API + authoritative DNS stand-in. Pebble is
  told its DNS address at start, so it lives as long as Pebble does; each test resets
  its records (``service``).
* ``pebble`` (session): one Pebble, with authz reuse off (tests.support.pebble sets
  ``PEBBLE_AUTHZREUSE=0``), so every order is validated through DNS again.
* ``service`` (per test): a fresh SQLite database, the stand-in reset to its zones with
  its propagation delay on (``PROPAGATION_DELAY``: its DNS serves a change seconds after
  the API call, as DigitalOcean's nameservers do), and ``acme-delegate serve`` as a real
  process on a free loopback port, waiting for the stand-in's DNS before it answers 200.

A missing tool skips the test with the install line of tests.support, except with ``CI=true``,
where it fails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.standin import Standin
from tests.conftest import ADMIN_TOKEN, DO_TOKEN
from tests.e2e.support import PROPAGATION_DELAY, Service
from tests.strict_ci import IN_CI
from tests.support.acme import find_certbot, find_certbot_acmedns, find_lego, find_pylego_python
from tests.support.env import standin_service_env
from tests.support.pebble import PebbleInstance, find_pebble, run_pebble
from tests.support.processes import Serve
from tests.support.tls import find_openssl
from tests.support.tools import ToolMissing

#: Zones of the stand-in: example.com (direct names), example.org (holds the
#: delegation domain), customer.test (a customer's zone: the CNAME of flow 2).
ZONES = ("example.com", "example.org", "customer.test")
DELEGATION_DOMAIN = "acme.example.org"


def require_tool(finder: Callable[[], str]) -> str:
    """The tool's path; skip (fail when CI=true) with the install line of tests.support."""
    try:
        return finder()
    except ToolMissing as exc:
        if IN_CI:
            pytest.fail(f"CI=true, so a missing end-to-end tool is a failure: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def standin() -> Iterator[Standin]:
    with Standin(token=DO_TOKEN, zones=ZONES) as running:
        yield running


@pytest.fixture(scope="session")
def pebble(standin: Standin, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[PebbleInstance]:
    require_tool(find_pebble)
    require_tool(find_openssl)
    with run_pebble(standin.dns_hostport, workdir=tmp_path_factory.mktemp("pebble")
                    ) as instance:
        yield instance


@pytest.fixture(scope="session")
def pylego_python() -> str:
    return require_tool(find_pylego_python)


@pytest.fixture(scope="session")
def lego() -> str:
    return require_tool(find_lego)


@pytest.fixture(scope="session")
def certbot() -> str:
    return require_tool(find_certbot)


@pytest.fixture(scope="session")
def certbot_acmedns() -> str:
    return require_tool(find_certbot_acmedns)


@pytest.fixture
def service(standin: Standin, tmp_path: Path) -> Iterator[Service]:
    standin.state.reset(ZONES)
    standin.state.set_propagation_delay(PROPAGATION_DELAY)
    database = tmp_path / "acme-delegate.sqlite3"
    env = standin_service_env(
        f"sqlite:///{database}", api_url=standin.api_url, dns=standin.dns_hostport,
        token=DO_TOKEN, admin_token=ADMIN_TOKEN,
        delegation_domain=DELEGATION_DOMAIN, registration="open",
        # /cleanup retires values; the reconciler's housekeeping deletes their records from
        # spare budget on its next pass: often enough here to wait for it.
        reconcile_interval="10",
    )
    with Serve(env, tmp_path / "serve.log") as served:
        yield Service(served.url, env, standin, database, served)
