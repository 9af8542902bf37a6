"""The floor: a bare FastAPI route that parses an ``/update`` body, served the way
``acme-delegate serve`` serves the service (same uvicorn server class, same HTTP/1.1
protocol class, no access log), in a process of its own. ``bench.overhead`` measures it
beside the real ``/update`` with the same load generator; the ratio says what the
service adds.

Its arguments are ``serve``'s (``serve --host H --port P``: tests.support.processes.Serve
starts it as it starts the service); it prints nothing and runs until it is terminated.
"""

from __future__ import annotations

import argparse
import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


def floor_app() -> FastAPI:
    # FastAPI's own OpenTelemetry off, as the service has it (app.main): a per-request
    # check any bare app can skip, so the floor does not carry it.
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})

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

    from app.server import HeadTimeoutProtocol, Server

    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The service's own server class (its heap settled once started, app.server).
    Server(uvicorn.Config(
        floor_app(), host=args.host, port=args.port, proxy_headers=False,
        server_header=False, log_config=None, log_level="warning", access_log=False,
        http=HeadTimeoutProtocol, h11_max_incomplete_event_size=16 * 1024,
        timeout_keep_alive=5)).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
