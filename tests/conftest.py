"""Shared fixtures: a real database (SQLite file, and PostgreSQL when reachable), the
DigitalOcean stand-in behind an in-process transport, and the app with its lifespan."""

from __future__ import annotations

import hashlib
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from app.db.migrate import upgrade
from app.main import create_app
from app.observability import Metrics
from app.standin import StandinState, create_standin_app
from app.standin.dns import DNSServer
from app.wiring import Services

# Any truthy CI turns every skip into a failure: the hooks, registered by being here.
from tests.strict_ci import (  # noqa: F401
    IN_CI,
    pytest_make_collect_report,
    pytest_runtest_makereport,
)
from tests.support import databases
from tests.support.ports import is_loopback

DO_TOKEN = "dop_v1_" + "t0k3n" * 12  # recognisable, so a leak is easy to find
ADMIN_TOKEN = "admin-" + "s3cr3t" * 8
REGISTRATION_TOKEN = "register-" + "0p3n" * 8
DO_URL = "http://do.test"
# One database per checkout and per pytest-xdist worker, beside whatever else is on the server.
TEST_DATABASE = databases.checkout_database_name()


def postgres_available() -> str | None:
    """None when PostgreSQL answers, else why not. A fresh database each session: its
    schema is this checkout's, whatever an earlier run or another branch left behind."""
    try:
        databases.create_postgres(TEST_DATABASE)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


_PG_PROBLEM: list[str | None] = []


def require_postgres() -> None:
    if not _PG_PROBLEM:
        _PG_PROBLEM.append(postgres_available())
    problem = _PG_PROBLEM[0]
    if problem is None:
        return
    message = (
        f"PostgreSQL is not reachable at {databases.postgres_server_url()} ({problem}). Install and start "
        "PostgreSQL 15 (apt-get install postgresql) or set ACME_DELEGATE_TEST_POSTGRES_URL."
    )
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


_migrated_postgres: list[bool] = []


def fresh_postgres() -> str:
    """The tests' PostgreSQL database, migrated and emptied."""
    require_postgres()
    url = databases.postgres_url(TEST_DATABASE)
    if not _migrated_postgres:
        upgrade(url)
        _migrated_postgres.append(True)
    databases.empty_tables(url)
    return url


@pytest.fixture
def postgres_url() -> str:
    return fresh_postgres()


@pytest.fixture(scope="session")
def sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per test process (an Alembic upgrade costs about
    0.2 s, a copy of its result 1 ms; a thousand tests start from an empty database)."""
    path = tmp_path_factory.mktemp("schema") / "migrated.sqlite3"
    upgrade(f"sqlite:///{path}")
    # The upgrade's engine is gone, so SQLite has folded its write-ahead log into the file.
    assert not Path(f"{path}-wal").exists()
    return path


def migrated_sqlite(schema: Path, path: Path) -> str:
    shutil.copyfile(schema, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        schema: Path = request.getfixturevalue("sqlite_schema")
        return migrated_sqlite(schema, tmp_path / "acme-delegate.sqlite3")
    return fresh_postgres()


@pytest.fixture
def sqlite_url(sqlite_schema: Path, tmp_path: Path) -> str:
    return migrated_sqlite(sqlite_schema, tmp_path / "acme-delegate.sqlite3")


@pytest.fixture
def do_state() -> StandinState:
    return standin_state()


def standin_state() -> StandinState:
    """The stand-in's state: two zones, some unrelated records that must never change."""
    state = StandinState()
    state.add_zone("example.com")
    state.add_zone("example.org")
    state.add_record("example.com", "A", "www", "192.0.2.10")
    state.add_record("example.com", "TXT", "@", "v=spf1 -all")
    state.add_record("example.com", "MX", "@", "mail.example.com.", priority=10)
    return state


@pytest.fixture
def make_settings(database_url: str) -> Callable[..., Settings]:
    return settings_maker(database_url)


def settings_maker(database_url: str) -> Callable[..., Settings]:
    """``make(**overrides)``: the tests' Settings on ``database_url``."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "do_token": DO_TOKEN,
            "do_api_url": DO_URL,
            "delegation_domain": "acme.example.org",
            "registration": "open",
            "admin_token": ADMIN_TOKEN,
            "registration_token": REGISTRATION_TOKEN,
        }
        values.update(overrides)
        return Settings(**values)

    return make


def _loopback(host: object) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    return host == "ip6-localhost" or is_loopback(host)


@pytest.fixture(autouse=True, scope="session")
def loopback_only() -> Iterator[None]:
    """Tests talk to loopback only: a connect, a datagram or a name lookup for anything
    else fails loudly (DigitalOcean's nameservers above all: ACME_DELEGATE_NAMESERVERS
    defaults to them). Subprocesses get loopback settings from ``cli_env`` instead."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_sendto, real_getaddrinfo = socket.socket.sendto, socket.getaddrinfo

    def check(address: Any) -> None:
        if isinstance(address, tuple) and not _loopback(address[0]):
            raise OSError(f"test guard: {address[0]} is not loopback")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        check(args[-1])
        return real_sendto(self, data, *args)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode()
        if host is not None and not _loopback(host):
            raise socket.gaierror(socket.EAI_NONAME, f"test guard: {host} is not loopback")
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        patch.setattr(socket.socket, "sendto", sendto)
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield


@asynccontextmanager
async def dns_for(state: StandinState) -> AsyncIterator[str]:
    """The stand-in's DNS server for ``state`` on loopback, as NAMESERVERS spells it."""
    server = DNSServer(state)
    host, port = await server.start()
    try:
        yield f"{host}:{port}"
    finally:
        await server.close()


@dataclass
class Harness:
    """The app under test, its DigitalOcean stand-in (API and DNS), and an HTTP client."""

    client: httpx.AsyncClient
    services: Services
    do: StandinState
    metrics: Metrics
    app: Any = None  # the ASGI app itself, for tests that watch its messages

    def txt_at(self, name: str) -> list[str]:
        return sorted(r.data for r in self.do.find_records(name, "TXT"))

    def snapshot(self) -> set[tuple[str, str, str, str]]:
        """Every record in the stand-in, as (zone, type, name, data)."""
        return {(r.zone, r.type, r.name, r.data) for r in self.do.all_records()}

    def do_calls(self, method: str | None = None) -> int:
        return sum(
            1
            for entry in self.do.requests()
            if entry.path.startswith("/v2/") and (method is None or entry.method == method)
        )

    async def create_account(self, **body: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/admin/accounts", json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def update(self, account: dict[str, Any], txt: str, **kwargs: Any) -> httpx.Response:
        return await self.client.post(
            "/update",
            json={"subdomain": account["subdomain"], "txt": txt},
            headers={"X-Api-User": account["username"], "X-Api-Key": account["password"]},
            **kwargs,
        )


def do_transport(state: StandinState) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_standin_app(
        state, token=DO_TOKEN)))


@pytest.fixture
def harness_factory(
    make_settings: Callable[..., Settings], do_state: StandinState
) -> Callable[..., Any]:
    """``async with harness_factory(**settings) as h`` runs the app with its lifespan; its
    NAMESERVERS are the stand-in's DNS server on loopback."""

    @asynccontextmanager
    async def build(client_ip: str = "127.0.0.1", **overrides: Any) -> AsyncIterator[Harness]:
        async with dns_for(do_state) as nameservers, do_transport(do_state) as do_http:
            settings = make_settings(**{"nameservers": nameservers, **overrides})
            app = create_app(settings, http=do_http, reconcile=False)
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app, client=(client_ip, 40000))
                async with httpx.AsyncClient(transport=transport, base_url="http://acme.test"
                                             ) as client:
                    yield Harness(client, app.state.services, do_state, app.state.metrics, app)

    return build


@pytest.fixture
async def harness(harness_factory: Callable[..., Any]) -> AsyncIterator[Harness]:
    async with harness_factory() as h:
        yield h


def challenge_value(n: int) -> str:
    """A distinct, well-formed 43-character DNS-01 value."""
    import base64

    digest = hashlib.sha256(f"value-{n}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.fixture
def values() -> Iterator[str]:
    return (challenge_value(n) for n in range(10_000))
