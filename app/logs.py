"""Logging as events with fields, as text (``event=txt.created name=…``) or JSON lines.

Callers pass only non-secret fields; values are fingerprinted by the caller, keys and
tokens are never passed at all. Every line carries the request id of the request it
belongs to, when there is one.

Text lines are read by people and by fail2ban-style tools, and fields carry what clients
sent (a percent-decoded path, an attempted username): every control character is
escaped (``\\n``, ``\\x1b``, ``\\u2028``…), so a client cannot end a line or forge
the next one. JSON lines need no more than JSON's own escaping.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonEncoder, JsonFormatter

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: whatever a
# terminal or a line-oriented reader could take for the end of a line or a command.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# What makes a text field need quotes: whitespace (as str.isspace), a quote, an equals
# sign, or a control. One search per field: a generator over its characters cost more
# than the rest of the access log line.
_NEEDS_QUOTES = re.compile('[\\s"=\x00-\x1f\x7f-\x9f\u2028\u2029]')


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as a visible escape."""
    return _CONTROL.sub(_escape_char, text)


def event(logger: logging.Logger, what: str, level: int = logging.INFO, /, **fields: Any) -> None:
    if not logger.isEnabledFor(level):
        return
    clean = {key: value for key, value in fields.items() if value is not None}
    # Fields go under one key: names such as "name" would clash with LogRecord's own.
    logger.log(level, _EventText(what, clean), extra={"event": what, "fields": {
        k: v if isinstance(v, int | float | bool) else str(v) for k, v in clean.items()}})


class _EventText:
    """An event's message as text, ``event=<what> key=value …``, built only when a
    formatter asks for it (``str``): a JSON line's message is the event's name alone."""

    __slots__ = ("fields", "what")

    def __init__(self, what: str, fields: dict[str, Any]) -> None:
        self.what = what
        self.fields = fields

    def __str__(self) -> str:
        parts = [f"event={self.what}"]
        for key, value in self.fields.items():
            text = str(value)
            if not text or _NEEDS_QUOTES.search(text):
                # Control characters are escaped by the text formatter, for every message.
                text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
            parts.append(f"{key}={text}")
        return " ".join(parts)


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class _EventJson(JsonFormatter):
    """JSON lines; an event's message is its name (its fields are already keys)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.msg
        if type(message) is not _EventText:
            return super().format(record)
        # The event's name is the message: its text is never built. Put back afterwards,
        # for any other handler of the same record.
        record.msg = message.what
        try:
            return super().format(record)
        finally:
            record.msg = message

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        if log_data.get("request_id") is None:
            log_data.pop("request_id", None)
        return log_data


class _SafeText(logging.Formatter):
    """Text lines where nothing a client sent can start a line of its own: the message is
    escaped (events already are; uvicorn's and libraries' messages may quote a request),
    and a traceback's lines are indented under the line they belong to."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return _indent(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indent(super().formatStack(stack_info))


# python-json-logger's own encoder, built once: its default serializer, ``json.dumps`` with
# ``cls=``, builds one for every line. The same options, so the same output (ASCII only).
_ENCODE = JsonEncoder().encode


def _serialize(data: dict[str, Any], **_options: Any) -> str:
    return _ENCODE(data)


def _indent(text: str) -> str:
    return "\n".join("  | " + escape_controls(line) for line in text.splitlines())


def configure(level: str, fmt: str) -> None:
    """Root logging for the CLI and the server: one handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestId())
    if fmt == "json":
        handler.setFormatter(_EventJson(
            "{levelname}{name}{message}{request_id}", style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time", json_serializer=_serialize,
        ))
    else:
        handler.setFormatter(_SafeText("%(asctime)s %(levelname)s %(name)s %(message)s"))
    # Nothing here prints where a line was logged from, nor its thread or process: not
    # worked out for every record either (the logging HOWTO's "Optimization").
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("alembic", "httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Database drivers log statements with their parameters and result rows at DEBUG
    # (challenge values, key hashes): never, at any level. Their warnings still show.
    for driver in ("sqlalchemy", "aiosqlite", "asyncpg"):
        logging.getLogger(driver).setLevel(max(logging.WARNING, root.level))
