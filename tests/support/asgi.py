"""One request handed to an ASGI app as uvicorn would hand it, with exactly the bytes
given: the hostile-input tests and ``bench.inprocess`` call the app this way."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    # What the app raised after answering (Starlette re-raises a 500's exception to the
    # server, which logs it): a crash even when the client got a tidy body.
    raised: BaseException | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


async def asgi_request(
    app: Any,
    method: str,
    raw_path: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
    chunks: Sequence[bytes] = (),
    *,
    query: bytes = b"",
    client: tuple[str, int] = ("127.0.0.1", 40000),
    timeout: float | None = 30,
) -> RawResponse:
    """One request with exactly these bytes, as uvicorn would hand it to the app
    (path percent-decoded as UTF-8 with replacement, headers as given); ``timeout``
    None calls the app with no deadline (and no task of its own)."""
    has_host = any(k.lower() == b"host" for k, _ in headers)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path.decode("latin-1"), errors="replace"),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": ([] if has_host else [(b"host", b"acme.test")])
        + [(k.lower(), v) for k, v in headers],
        "client": client,
        "server": ("acme.test", 80),
    }
    pending = list(chunks) or [b""]
    done = asyncio.Event()
    started: dict[str, Any] = {}
    body = bytearray()

    async def receive() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.update(message)
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    raised: BaseException | None = None
    try:
        if timeout is None:
            await app(scope, receive, send)
        else:
            await asyncio.wait_for(app(scope, receive, send), timeout)
    except Exception as exc:
        if not started:
            raise
        raised = exc
    done.set()
    assert started, "the app sent no response"
    return RawResponse(started["status"], list(started.get("headers", [])), bytes(body),
                       raised)
