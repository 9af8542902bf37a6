"""The floor: a bare FastAPI route that parses an ``/update`` body, served the way
``acme-delegate serve`` serves the service (same uvicorn, same HTTP/1.1 protocol class,
no access log), in a process of its own. ``bench.overhead`` measures it beside the real
``/update`` with the same load generator; the ratio says what the service adds.

argv[1] is the port; the process prints nothing and runs until it is terminated.
"""

from __future__ import annotations

import json
import sys

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def floor_app() -> FastAPI:
    app = FastAPI()

    @app.post("/update")
    async def update(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        return JSONResponse({"txt": body["txt"]})

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return app


def main() -> int:
    import uvicorn

    from app.server import HeadTimeoutProtocol

    uvicorn.run(floor_app(), host="127.0.0.1", port=int(sys.argv[1]), proxy_headers=False,
                server_header=False, log_config=None, log_level="warning", access_log=False,
                http=HeadTimeoutProtocol, h11_max_incomplete_event_size=16 * 1024,
                timeout_keep_alive=5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
