"""``acme-delegate serve`` and ``migrate``."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import click

from app.cli.common import clean_errors, configure_logging, settings, sqlite_owner

if TYPE_CHECKING:
    from app.config import Settings
    from app.demo import Demo


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Serve HTTPS with this certificate (PEM; or TLS_CERT_FILE).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Its private key (PEM; or TLS_KEY_FILE).")
@click.option("--standin-dns-port", default=8053, show_default=True,
              type=click.IntRange(0, 65535),
              help="Without a DigitalOcean token: the stand-in's DNS port on 127.0.0.1.")
def serve(host: str, port: int, tls_cert: Path | None, tls_key: Path | None,
          standin_dns_port: int) -> None:
    """Run the API (migrations are applied first).

    Without a DigitalOcean token it runs against a local stand-in of the
    DigitalOcean API and DNS, issues a demo credential and says how to use it.
    """
    from app.db.migrate import upgrade

    config = settings()
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_cert is not None:
        config = config.model_copy(update={"tls_cert_file": tls_cert,
                                           "tls_key_file": tls_key})
    configure_logging(config)
    with contextlib.ExitStack() as stack:
        demo = None
        if config.token() is None:
            from app.demo import start_demo

            demo = stack.enter_context(start_demo(config, dns_port=standin_dns_port))
            config = demo.settings
        stack.enter_context(sqlite_owner(config.database_url))
        upgrade(config.database_url)
        started = clean_errors(lambda: asyncio.run(_serve(config, host, port, demo)))
    if not started:
        raise SystemExit(3)  # uvicorn's status for a server that could not start


async def _serve(config: Settings, host: str, port: int, demo: Demo | None) -> bool:
    """Build the service graph once: check the provider, issue the demo credential, then
    hand the same services to the app. Whether the server started."""
    from app.main import create_app
    from app.observability import Metrics
    from app.server import build_server
    from app.wiring import build_services, check_provider

    metrics = Metrics()
    async with build_services(config, metrics=metrics) as services:
        await check_provider(services)
        if demo is not None:
            from app.demo import announce

            issued = await services.accounts.create(
                domain="www.example.com", delegated=False, note="demo", via="demo")
            scheme = "https" if config.tls_cert_file else "http"
            announce(issued, api_url=f"{scheme}://{host}:{port}",
                     dns_hostport=demo.dns_hostport)
        server = build_server(create_app(config, services=services, metrics=metrics), config,
                              host=host, port=port,
                              on_refused=metrics.connections_refused.inc)
        await server.serve()
        return server.started


@click.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from app.db.migrate import upgrade

    upgrade(settings().database_url)
    click.echo("database is up to date")
