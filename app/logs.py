"""Logging as events with fields, as text (``event=txt.created name=…``) or JSON lines.

Callers pass only non-secret fields; values are fingerprinted by the caller, keys and
tokens are never passed at all. Every line carries the request id of the request it
belongs to, when there is one.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def event(logger: logging.Logger, what: str, level: int = logging.INFO, /, **fields: Any) -> None:
    if not logger.isEnabledFor(level):
        return
    parts = [f"event={what}"]
    clean = {key: value for key, value in fields.items() if value is not None}
    for key, value in clean.items():
        text = str(value)
        if not text or any(c.isspace() or c in '"=' for c in text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    # Fields go under one key: names such as "name" would clash with LogRecord's own.
    logger.log(level, " ".join(parts), extra={"event": what, "fields": {
        k: v if isinstance(v, int | float | bool) else str(v) for k, v in clean.items()}})


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class _EventJson(JsonFormatter):
    """JSON lines; an event's message is its name (its fields are already keys)."""

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        if "event" in log_data:
            log_data["message"] = log_data["event"]
        if log_data.get("request_id") is None:
            log_data.pop("request_id", None)
        return log_data


def configure(level: str, fmt: str) -> None:
    """Root logging for the CLI and the server: one handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestId())
    if fmt == "json":
        handler.setFormatter(_EventJson(
            "{levelname}{name}{message}{request_id}", style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
        ))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("alembic", "httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
