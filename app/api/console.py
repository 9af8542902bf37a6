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
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response

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
_RAW_HEADERS = [(k.encode(), v.encode()) for k, v in HEADERS.items()]


class ConsoleHeaders:
    """The console's headers on every answer under it, replacing any of the same name."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", [])
                        if k.lower().decode("latin-1") not in HEADERS]
                message["headers"] = [*kept, *_RAW_HEADERS]
            await send(message)

        try:
            await self.app(scope, receive, with_headers)
        except HTTPException as exc:  # StaticFiles' 404 and 405: answered here, with headers
            await error_response(exc.status_code, "not_found" if exc.status_code == 404
                                 else "method_not_allowed")(scope, receive, with_headers)


async def index() -> FileResponse:
    """The console's one page; it routes by the URL's fragment."""
    return FileResponse(CONSOLE / "index.html", media_type="text/html; charset=utf-8",
                        headers=HEADERS)


def install(app: FastAPI) -> None:
    """Serve the console (``/console/`` arrives here as ``/console``: see NormalizePath)."""
    app.add_api_route("/console", index, methods=["GET"], include_in_schema=False)
    app.mount("/console/assets",
              ConsoleHeaders(StaticFiles(directory=CONSOLE / "assets", follow_symlink=False)),
              name="console-assets")
