"""Logging as events with fields: ``event=txt.created name=… account=…``.

Callers pass only non-secret fields; values are fingerprinted by the caller,
keys and tokens are never passed at all.
"""

from __future__ import annotations

import logging
from typing import Any


def event(logger: logging.Logger, what: str, level: int = logging.INFO, /, **fields: Any) -> None:
    if not logger.isEnabledFor(level):
        return
    parts = [f"event={what}"]
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if not text or any(c.isspace() or c in '"=' for c in text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    logger.log(level, " ".join(parts))
