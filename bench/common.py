"""What every benchmark shares: the machine, statistics, tables, progress, result files,
the stand-in and ``acme-delegate serve`` as processes, databases and fast seeding.

Everything here talks to loopback only: the stand-in binds 127.0.0.1, the service is
started on 127.0.0.1, and a PostgreSQL URL whose host is not loopback is refused.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, cast

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
# Local-only secrets: the stand-in accepts this token, nothing else ever sees it.
DO_TOKEN = "dop_v1_bench_" + "0" * 51
ADMIN_TOKEN = "bench-admin-" + "a" * 40
IN_CI = os.environ.get("CI", "").lower() == "true"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
LOOPBACK_NAMES = ("localhost",)


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


class Values:
    """Distinct, well-formed 43-character DNS-01 values, never repeated across runs."""

    def __init__(self) -> None:
        self._salt = secrets.token_hex(8)
        self._n = 0

    def __call__(self) -> str:
        self._n += 1
        digest = hashlib.sha256(f"{self._salt}-{self._n}".encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


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


# --------------------------------------------------------------------------------------
# Loopback guards and ports
# --------------------------------------------------------------------------------------


def require_loopback_host(host: str | None) -> None:
    if host in LOOPBACK_NAMES:
        return
    try:
        if host is not None and ipaddress.ip_address(host.strip("[]")).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"benchmarks only ever talk to loopback, not {host!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_open_files_limit(wanted: int = 8192) -> int:
    """Lift the soft RLIMIT_NOFILE (1,000 clients need 1,000 sockets); returns it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard) if hard != resource.RLIM_INFINITY else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


# --------------------------------------------------------------------------------------
# The stand-in, in a process of its own
# --------------------------------------------------------------------------------------


class StandinProcess:
    """``bench/_standin.py`` as a child process, controlled through ``/_standin/``.

    Its request log's ``monotonic`` stamps use the same system-wide clock as this
    process's ``time.monotonic()``, so runs can be cut out of it by time.
    """

    def __init__(self, *, zones: Sequence[str], per_minute: int = 250, per_hour: int = 5000,
                 token: str = DO_TOKEN) -> None:
        options = {"token": token, "zones": list(zones), "per_minute": per_minute,
                   "per_hour": per_hour}
        self.token = token
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "bench._standin", json.dumps(options)], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=clean_env(),
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            raise RuntimeError("the stand-in process did not start")
        info = json.loads(line)
        self.api_url: str = info["api_url"]
        self.dns_address: tuple[str, int] = (info["dns_host"], int(info["dns_port"]))
        require_loopback_host(httpx.URL(self.api_url).host)
        require_loopback_host(self.dns_address[0])
        self._http = httpx.Client(base_url=self.api_url + "/_standin", timeout=60,
                                  trust_env=False)

    @property
    def dns_hostport(self) -> str:
        host, port = self.dns_address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        self._http.close()
        if self.process.poll() is None:
            assert self.process.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> StandinProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        response = self._http.post("/faults", json=changes)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def set_rate_limits(self, *, per_minute: int, per_hour: int) -> None:
        self._http.put("/ratelimit", json={"per_minute": per_minute, "per_hour": per_hour}
                       ).raise_for_status()

    def log(self) -> dict[str, Any]:
        """The request log: ``requests`` (each with monotonic, wall, method, path, query,
        status), ``total``, ``max_per_minute``."""
        response = self._http.get("/requests")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def api_calls(self, since: float | None = None, until: float | None = None
                  ) -> list[dict[str, Any]]:
        """DigitalOcean API requests (``/v2/...``) answered between two monotonic stamps."""
        return [e for e in self.log()["requests"]
                if e["path"].startswith("/v2/")
                and (since is None or e["monotonic"] >= since)
                and (until is None or e["monotonic"] <= until)]

    def clear_log(self) -> None:
        self._http.delete("/requests").raise_for_status()

    def add_zone(self, name: str) -> None:
        self._http.post("/zones", json={"name": name}).raise_for_status()

    def add_record(self, zone: str, type_: str, name: str, data: str, ttl: int = 30) -> int:
        response = self._http.post("/records", json={"zone": zone, "type": type_,
                                                     "name": name, "data": data, "ttl": ttl})
        response.raise_for_status()
        return int(response.json()["id"])

    def records(self) -> list[dict[str, Any]]:
        response = self._http.get("/records")
        response.raise_for_status()
        records: list[dict[str, Any]] = response.json()["records"]
        return records


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
# Environments and the service process
# --------------------------------------------------------------------------------------


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without ACME_DELEGATE_* settings and proxies; NO_PROXY covers loopback."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ACME_DELEGATE_") and k not in PROXY_VARS}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    if extra:
        env.update(extra)
    return env


def service_env(database_url: str, standin: StandinProcess, **settings: str) -> dict[str, str]:
    """The environment of ``acme-delegate serve`` (and its CLI) for a benchmark.

    RECONCILE_INTERVAL is a day so that no periodic reconcile pass lands inside a
    measurement (the pass at start-up still runs); LOG_LEVEL stays at the default INFO.
    """
    values = {
        "DATABASE_URL": database_url,
        "DO_TOKEN": standin.token,
        "DO_API_URL": standin.api_url,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "RECONCILE_INTERVAL": "86400",
        "LOG_LEVEL": "INFO",
        # 200 waits for the stand-in's DNS (never DigitalOcean's nameservers, the default).
        "NAMESERVERS": "{}:{}".format(*standin.dns_address),
    }
    values.update({k.upper(): v for k, v in settings.items()})
    return clean_env({f"ACME_DELEGATE_{k}": v for k, v in values.items()})


def proc_status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), 0 when gone."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    return 0.0


class Serve:
    """``python -m app serve`` on a free loopback port; SIGTERM on exit. ``floor=True``
    serves ``bench._floor`` instead: a bare FastAPI route, served the same way."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *,
                 ready_timeout: float = 120.0, floor: bool = False) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self.url = f"http://{self.host}:{self.port}"
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = ([sys.executable, "-m", "bench._floor", str(self.port)] if floor else
                [sys.executable, "-m", "app", "serve", "--host", self.host,
                 "--port", str(self.port)])
        with log_path.open("w") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                argv, cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
            )
        try:
            self._wait_healthy(ready_timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False) as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"serve exited with {self.process.returncode}:\n"
                                       f"{self.log_tail()}")
                try:
                    if http.get(self.url + "/health", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not become healthy:\n{self.log_tail()}")
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kb(self) -> int:
        return proc_status_kb(self.pid, "VmRSS")

    def hwm_kb(self) -> int:
        """Peak RSS so far."""
        return proc_status_kb(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def wait_idle(self, *, below: float = 0.05, window: float = 1.0, timeout: float = 900.0,
                  progress: Progress | None = None) -> float:
        """Block until the process uses less than ``below`` of a core over ``window``
        seconds (e.g. the start-up reconcile pass is over); returns the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            before = self.cpu_seconds()
            time.sleep(window)
            if (self.cpu_seconds() - before) / window < below:
                return time.monotonic() - started
            if progress is not None:
                progress.update(note="waiting for the start-up reconcile pass")
        raise TimeoutError(f"serve still busy after {timeout:.0f}s")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_cli(*args: str, env: Mapping[str, str], timeout: float) -> tuple[
        subprocess.CompletedProcess[str], float, int]:
    """``python -m app ARGS``: (completed process, seconds, peak RSS in kB sampled)."""
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "app", *args], cwd=ROOT, env=dict(env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    deadline = started + timeout
    try:
        while process.poll() is None:
            peak = max(peak, proc_status_kb(process.pid, "VmHWM"))
            if time.monotonic() > deadline:
                process.kill()
                break
            time.sleep(0.2)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    seconds = time.monotonic() - started
    return (subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr),
            seconds, peak)


# --------------------------------------------------------------------------------------
# Databases
# --------------------------------------------------------------------------------------

DEFAULT_POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_server_url() -> str:
    """The server to create benchmark databases on (env ACME_DELEGATE_BENCH_POSTGRES_URL)."""
    url = os.environ.get("ACME_DELEGATE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_SERVER)
    from app.db.engine import async_url

    require_loopback_host(async_url(url).host)
    return url


def _database_url(name: str) -> str:
    from app.db.engine import async_url

    return str(async_url(postgres_server_url()).set(drivername="postgresql", database=name)
               .render_as_string(hide_password=False))


async def _admin(statements: Sequence[str]) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.db.engine import async_url

    engine = create_async_engine(async_url(postgres_server_url()), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


def postgres_problem() -> str | None:
    """None when the benchmark PostgreSQL server answers, else why not."""
    try:
        asyncio.run(asyncio.wait_for(_admin(["SELECT 1"]), 5))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def postgres_version() -> str:
    async def query() -> str:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        from app.db.engine import async_url

        engine = create_async_engine(async_url(postgres_server_url()))
        try:
            async with engine.connect() as conn:
                return str((await conn.execute(text("SHOW server_version"))).scalar())
        finally:
            await engine.dispose()

    try:
        return asyncio.run(query())
    except Exception:
        return "unknown"


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain database name: {name!r}")
    return name


def fresh_database(kind: str, *, workdir: Path, name: str) -> str:
    """An empty, migrated database: ``sqlite`` (a file in workdir) or ``postgres``
    (database ``name``, dropped and created)."""
    from app.db.migrate import upgrade

    if kind == "sqlite":
        path = workdir / f"{name}.sqlite3"
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    elif kind == "postgres":
        db = _identifier(name)
        asyncio.run(_admin([f"DROP DATABASE IF EXISTS {db} WITH (FORCE)",
                            f"CREATE DATABASE {db}"]))
        url = _database_url(db)
    else:
        raise ValueError(f"unknown database kind {kind!r}")
    upgrade(url)
    return url


def drop_database(kind: str, *, workdir: Path, name: str) -> None:
    if kind == "postgres":
        with contextlib.suppress(Exception):
            asyncio.run(_admin([f"DROP DATABASE IF EXISTS {_identifier(name)} WITH (FORCE)"]))
    else:
        for suffix in ("", "-wal", "-shm", ".lock"):
            Path(f"{workdir / name}.sqlite3{suffix}").unlink(missing_ok=True)


def require_database(kind: str) -> None:
    """BenchSkip when ``postgres`` is asked for and unreachable."""
    if kind == "postgres":
        problem = postgres_problem()
        if problem is not None:
            raise BenchSkip(
                f"PostgreSQL is not reachable at {postgres_server_url()} ({problem}). "
                "Install and start it (apt-get install postgresql) or set "
                "ACME_DELEGATE_BENCH_POSTGRES_URL.")


# --------------------------------------------------------------------------------------
# Credentials, seeded straight into the database
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    id: int
    username: str
    key: str
    label: str
    name: str
    zone: str


def seed_accounts(database_url: str, count: int, *, zones: Sequence[str],
                  keep: Iterable[int] = (), batch: int = 5000,
                  progress: Progress | None = None) -> dict[int, Credential]:
    """Insert ``count`` direct accounts (``_acme-challenge.h<i>.<zone>``) in batches, as
    ``AccountService.create`` would shape them (uuid4 username and label, SHA-256 key
    hash); returns the credentials (with their keys) of the indices in ``keep``.

    Must run on a freshly created database: account ids are then 1..count.
    """
    from sqlalchemy import Table, func, insert, select

    from app.core.keys import hash_key, new_key, new_username
    from app.core.names import challenge_name, new_delegation_label
    from app.db.engine import create_engine
    from app.db.tables import AccountRow

    wanted = set(keep)
    kept: dict[int, Credential] = {}
    now = dt.datetime.now(dt.UTC)

    async def insert_all() -> None:
        engine = create_engine(database_url, pool=False)
        try:
            async with engine.connect() as conn:
                start = int((await conn.execute(select(func.count()).select_from(
                    AccountRow))).scalar() or 0)
            if start:
                raise RuntimeError("seed_accounts needs an empty accounts table")
            for first in range(0, count, batch):
                rows: list[dict[str, Any]] = []
                for i in range(first, min(first + batch, count)):
                    zone = zones[i % len(zones)]
                    domain = f"h{i}.{zone}"
                    key, username, label = new_key(), new_username(), new_delegation_label()
                    name = challenge_name(domain)
                    rows.append({"username": username, "key_hash": hash_key(key),
                                 "label": label, "name": name, "zone": zone, "mode": "direct",
                                 "domain": domain, "allowfrom": [], "note": None,
                                 "created_at": now})
                    if i in wanted:
                        kept[i] = Credential(i + 1, username, key, label, name, zone)
                async with engine.begin() as conn:
                    await conn.execute(insert(cast(Table, AccountRow.__table__)), rows)
                if progress is not None:
                    progress.update(min(first + batch, count), "seeding credentials")
        finally:
            await engine.dispose()

    asyncio.run(insert_all())
    return kept


def seed_live_values(database_url: str, standin: StandinProcess,
                     accounts: Sequence[tuple[int, str, str]], values: Values,
                     progress: Progress | None = None) -> int:
    """One live TXT value per (account id, name, zone): a record in the stand-in and its
    ``txt_values`` row, as if the account had updated once. Returns how many."""
    from sqlalchemy import Table, insert

    from app.core.names import relative_name
    from app.db.engine import create_engine
    from app.db.tables import TxtValueRow

    now = dt.datetime.now(dt.UTC)
    rows = []
    for n, (account_id, name, zone) in enumerate(accounts):
        value = values()
        record_id = standin.add_record(zone, "TXT", relative_name(name, zone), value)
        rows.append({"name": name, "zone": zone, "value": value, "state": "live",
                     "record_id": record_id, "account_id": account_id, "created_at": now,
                     "updated_at": now})
        if progress is not None:
            progress.update(n + 1, "seeding live values")

    async def insert_all() -> None:
        engine = create_engine(database_url, pool=False)
        try:
            async with engine.begin() as conn:
                if rows:
                    await conn.execute(insert(cast(Table, TxtValueRow.__table__)), rows)
        finally:
            await engine.dispose()

    asyncio.run(insert_all())
    return len(rows)


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
