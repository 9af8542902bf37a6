"""The API docs work offline (served from the package, nothing from a CDN), can be turned
off, and the running version is in /health and the build_info metric."""

from __future__ import annotations

import re
from typing import Any

from app import __version__
from tests.conftest import Harness

URL = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")


async def test_docs_pages_load_nothing_from_elsewhere(harness: Harness) -> None:
    for page in ("/docs", "/redoc"):
        response = await harness.client.get(page)
        assert response.status_code == 200, page
        html = response.text
        assert URL.findall(html) == [], (page, URL.findall(html))
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        assert assets, page
        for asset in assets:
            assert asset.startswith("/"), asset
            fetched = await harness.client.get(asset)
            assert fetched.status_code == 200 and len(fetched.content) > 1000, asset
        # The page's script names the schema on this server, and Swagger UI's validator
        # badge (which calls validator.swagger.io) is off.
        assert "'/openapi.json'" in html or '"/openapi.json"' in html
    assert '"validatorUrl": null' in (await harness.client.get("/docs")).text


async def test_docs_can_be_turned_off(harness_factory: Any) -> None:
    async with harness_factory(api_docs=False) as harness:
        for page in ("/docs", "/redoc", "/docs-assets/swagger-ui-bundle.js"):
            assert (await harness.client.get(page)).status_code == 404, page
        assert (await harness.client.get("/openapi.json")).status_code == 200


async def test_version_in_health_and_metrics(harness: Harness) -> None:
    health = await harness.client.get("/health")
    assert health.json() == {"status": "ok", "version": __version__}
    metrics = (await harness.client.get("/metrics")).text
    line = next(m for m in metrics.splitlines() if m.startswith("acme_delegate_build_info{"))
    assert f'version="{__version__}"' in line and line.endswith(" 1.0")
