"""Locating the external programs tests and benchmarks drive (Pebble, openssl, lego,
certbot, the pip-installed clients), with an install line when one is missing.

Only the standard library: ``python3 -m tests.support.acme`` runs outside the project's
virtual environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess


class ToolMissing(RuntimeError):
    """A required external tool is not installed; the message says how to install it."""

    def __init__(self, tool: str, hint: str, detail: str = "") -> None:
        self.tool = tool
        super().__init__(f"{tool} not found{': ' + detail if detail else ''}. Install: {hint}")


def env_path(var: str) -> str | None:
    """The path an environment variable names, None when unset or blank."""
    val = os.environ.get(var, "").strip()
    return val or None


def find_executable(tool: str, env_var: str, *candidates: str, hint: str) -> str:
    """``env_var``'s path (which must be executable), else the first executable candidate,
    else ``tool`` on PATH, else ToolMissing with ``hint``."""
    explicit = env_path(env_var)
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit
        raise ToolMissing(tool, hint, f"{env_var}={explicit} is not executable")
    for cand in candidates:
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which(tool)
    if found:
        return found
    raise ToolMissing(tool, hint)


def python_can_import(python: str, module: str, timeout: float = 30.0) -> bool:
    try:
        proc = subprocess.run(
            [python, "-c", f"import {module}"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0
