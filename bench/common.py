"""What every benchmark shares to measure and report: the machine, statistics, tables,
progress, result files, and the service's settings during a measurement.

Processes, ports, environments, databases and seeding are the tests' support package's
(tests/support/), shared with the test suite.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from tests.support.databases import postgres_problem, postgres_server_url
from tests.support.env import standin_service_env
from tests.support.standin import StandinProcess

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
# A local-only secret: only the benchmark's own service ever sees it.
ADMIN_TOKEN = "bench-admin-" + "a" * 40
IN_CI = os.environ.get("CI", "").lower() == "true"


class BenchSkip(Exception):
    """A benchmark (or part of it) cannot run here; the message says what to install."""


# --------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Where the numbers come from: cores, memory, CPU model, versions, commit."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = shutil.which("git") or "git"
        commit = subprocess.run(  # noqa: S603 - fixed arguments
            [git, "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5).stdout.strip()
        changed = subprocess.run(  # noqa: S603 - fixed arguments
            [git, "-C", str(ROOT), "status", "--porcelain", "--", "app", "migrations"],
            capture_output=True, text=True, timeout=5).stdout.strip()
        if commit and changed:
            commit += "+uncommitted-app-changes"
    import sqlite3

    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_total_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "commit": commit,
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        # Other sessions share this machine: the load when the result was written.
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------------------------------
# Statistics and values
# --------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100) of unsorted values; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """n, p50, p90, p99, max and mean in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else math.nan,
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else math.nan,
    }


def fmt(value: Any, digits: int | None = None) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if digits is None:
            digits = 1 if abs(value) >= 10 or value == 0 else 2 if abs(value) >= 1 else 3
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table (printed as is; the same text goes into bench/README.md)."""
    body = [[fmt(c) if not isinstance(c, str) else c for c in row] for row in rows]
    lines = [f"### {title}", "", "| " + " | ".join(columns) + " |",
             "|" + "|".join("---:" if i else "---" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Progress on long runs
# --------------------------------------------------------------------------------------


class Progress:
    """A one-line progress display on stderr: rewritten in place on a terminal, a line
    every ``every`` seconds otherwise; silent when ``enabled`` is False."""

    def __init__(self, label: str, total: int | None = None, *, enabled: bool = True,
                 every: float = 5.0, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = 0.2 if self.tty else every
        self.started = time.monotonic()
        self._last = 0.0
        self._width = 0

    def update(self, done: int | None = None, note: str = "", *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        parts = [self.label]
        if done is not None:
            parts.append(f"{done:,}/{self.total:,}" if self.total else f"{done:,}")
        parts.append(f"{now - self.started:6.1f}s")
        if note:
            parts.append(note)
        text = "  ".join(parts)
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self, note: str = "") -> None:
        if not self.enabled:
            return
        self.update(note=note, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def say(message: str, *, enabled: bool = True) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


def write_result(name: str, result: dict[str, Any], results_dir: Path | None = None) -> Path:
    """Write ``<results_dir>/<name>.json`` (default bench/results/)."""
    directory = results_dir or RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=False, allow_nan=True) + "\n")
    return path


def plot_result(name: str, result: dict[str, Any], results_dir: Path | None = None,
                *, verbose: bool = True) -> Path | None:
    """The benchmark's PNG, or None (with a message) when matplotlib is missing."""
    from bench import plot

    try:
        return plot.render(name, result, results_dir or RESULTS_DIR)
    except plot.PlottingUnavailable as exc:
        say(str(exc), enabled=verbose)
        return None


def summarize_calls(calls: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Counts by ``METHOD kind`` (kind: domains, records, record) plus total and 429s."""
    out: dict[str, int] = {"total": len(calls), "429": 0}
    for call in calls:
        parts = call["path"].strip("/").split("/")  # v2, domains[, zone, records[, id]]
        kind = {2: "domains", 3: "domain", 4: "records", 5: "record"}.get(len(parts), "other")
        key = f"{call['method']} {kind}"
        out[key] = out.get(key, 0) + 1
        if call["status"] == 429:
            out["429"] += 1
    return out


# --------------------------------------------------------------------------------------
# The service and its database, as every benchmark runs them
# --------------------------------------------------------------------------------------


def service_env(database_url: str, standin: StandinProcess, **settings: str) -> dict[str, str]:
    """The environment of ``acme-delegate serve`` (and its CLI) for a benchmark.

    RECONCILE_INTERVAL is a day so that no periodic reconcile pass lands inside a
    measurement (the pass at start-up still runs); LOG_LEVEL stays at the default INFO.
    """
    return standin_service_env(database_url, api_url=standin.api_url,
                               dns=standin.dns_hostport, token=standin.token,
                               admin_token=ADMIN_TOKEN,
                               **{"reconcile_interval": "86400", **settings})


def require_database(kind: str) -> None:
    """BenchSkip when ``postgres`` is asked for and unreachable."""
    if kind == "postgres":
        problem = postgres_problem()
        if problem is not None:
            raise BenchSkip(
                f"PostgreSQL is not reachable at {postgres_server_url()} ({problem}). "
                "Install and start it (apt-get install postgresql) or set "
                "ACME_DELEGATE_TEST_POSTGRES_URL.")


def workdir_for(name: str, base: Path | None = None) -> Path:
    """A scratch directory for one benchmark run (databases, logs, client state)."""
    default = Path(tempfile.gettempdir()) / "acme-delegate-bench"
    root = base or Path(os.environ.get("ACME_DELEGATE_BENCH_WORKDIR", default))
    path = root / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def timer() -> Iterator[dict[str, float]]:
    box: dict[str, float] = {}
    started = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - started
