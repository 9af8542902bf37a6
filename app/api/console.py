"""The operator console at /console/: static files that call the admin API from the browser.

The admin token is typed into the page, kept in ``sessionStorage`` and sent as
``Authorization: Bearer``; no cookie is ever set, so no other site can make the browser
act with it (no CSRF). Every asset comes from the package (no CDN: it works air-gapped),
under a Content-Security-Policy that allows scripts, styles and requests from this origin
only, and no inline script or style: the page writes whatever it shows as text.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response

CONSOLE = Path(__file__).resolve().parent.parent / "console"

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    # Revalidate every time: an upgrade never runs new pages against old scripts.
    "cache-control": "no-cache",
}
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".svg": "image/svg+xml"}


async def index() -> FileResponse:
    """The console's one page; it routes by the URL's fragment."""
    return FileResponse(CONSOLE / "index.html", media_type="text/html; charset=utf-8",
                        headers=HEADERS)


def install(app: FastAPI) -> None:
    """Serve the console (``/console/`` arrives here as ``/console``: see NormalizePath)."""
    # The files the page may load, listed once: a name outside the list is a 404, whatever
    # it holds (no path from a URL ever reaches the filesystem).
    assets = {path.name: path for path in (CONSOLE / "assets").iterdir()
              if path.suffix in _TYPES}

    async def asset(name: str) -> Response:
        """A script, the stylesheet or the icon."""
        path = assets.get(name)
        if path is None:
            return JSONResponse({"error": "not_found"}, status_code=404, headers=HEADERS)
        return FileResponse(path, media_type=_TYPES[path.suffix], headers=HEADERS)

    app.add_api_route("/console", index, methods=["GET"], include_in_schema=False)
    app.add_api_route("/console/assets/{name}", asset, methods=["GET"],
                      include_in_schema=False)
