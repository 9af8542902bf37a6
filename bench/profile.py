"""Where a repeat ``/update`` spends the server's time: py-spy samples ``serve`` under load.

    .venv/bin/pip install py-spy     # a profiling tool, not a dependency of the service
    .venv/bin/python -m bench.profile [--database sqlite|postgres] [--clients 8]
                                      [--seconds 15] [--top 40] [--no-dns-wait]

One fresh database, stand-in and ``serve`` (as ``bench.overhead`` sets them up), the
repeat path from ``--clients`` clients, and ``py-spy record`` on the server process
meanwhile (``--idle`` off: only samples where a thread is running). Prints the share of
samples whose stack passes through each function (inclusive), the top ``--top``, and a
few groups that answer "where did it go" (SQLAlchemy, the database driver, logging,
the middleware, ...). The raw collapsed stacks are kept in the work directory.
``--no-dns-wait`` serves with ACME_DELEGATE_WAIT_FOR_DNS=0: each 200 then no longer asks
the stand-in's DNS server first (see bench.overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.common import require_database, service_env, workdir_for
from bench.loadgen import HttpClient, update
from bench.overhead import UNTHROTTLED, ZONE, closed_loop, same_value
from tests.support.databases import drop_database, fresh_database
from tests.support.processes import Serve
from tests.support.seed import Values, seed_accounts
from tests.support.standin import StandinProcess

NAME = "profile"

# Groups of frames, by a substring of "function (file)"; a sample counts once per group.
GROUPS = {
    "SQLAlchemy": "(sqlalchemy/",
    "aiosqlite (its thread)": "(aiosqlite/",
    "asyncpg": "(asyncpg/",
    "sqlite3 module": "(sqlite3/",
    "logging (incl. JSON formatting)": "(logging/",
    "limits (abuse counters)": "(limits/",
    "starlette": "(starlette/",
    "fastapi": "(fastapi/",
    "pydantic": "(pydantic",
    "uvicorn + h11": "(uvicorn/",
    "h11": "(h11/",
    "prometheus_client": "(prometheus_client/",
    "asyncio event loop": "(asyncio/",
    "app.observability (access log, metrics)": "(app/observability.py",
    "app.api.guards": "(app/api/guards.py",
    "app.db": "(app/db/",
    "app.core": "(app/core/",
    "app.api": "(app/api/",
}


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def summarize(raw: Path, top: int) -> str:
    total = 0
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        leaf = frames[-1]
        selfs[leaf] += count
        package = leaf.rpartition("(")[2].split("/")[0].split(".py")[0]
        leaves[package] += count
        for group, needle in GROUPS.items():
            if any(needle in f for f in frames):
                groups[group] += count
    lines = [f"{total} samples", "", "| group | share of samples |", "|---|---:|"]
    lines += [f"| {g} | {groups[g] / total:.0%} |" for g in GROUPS if groups[g]]
    lines += ["", "| package of the running frame (self time) | share |", "|---|---:|"]
    lines += [f"| {p} | {n / total:.0%} |" for p, n in leaves.most_common(15)]
    lines += ["", "| function (self time) | share |", "|---|---:|"]
    lines += [f"| `{f[:110]}` | {n / total:.1%} |" for f, n in selfs.most_common(top // 2)]
    lines += ["", "| function (inclusive) | share |", "|---|---:|"]
    lines += [f"| `{f[:110]}` | {n / total:.1%} |" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


async def load(served: Serve, credentials: Sequence[object], seconds: float,
               clients: int) -> dict[str, object]:
    values = Values()
    primed = {}
    for credential in credentials:
        client = HttpClient(served.host, served.port)
        value = values()
        await update(client, credential, value)  # type: ignore[arg-type]
        await client.close()
        primed[credential] = value
    jobs = [same_value(c, primed[c]) for c in credentials]  # type: ignore[arg-type]
    return await closed_loop(served, jobs, total=10**9, seconds=seconds, warmup=5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="sqlite", choices=["sqlite", "postgres"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples a second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--gil", action="store_true",
                        help="sample only the thread holding the GIL (Python's own CPU: "
                             "no fsync or other thread waiting in a system call)")
    parser.add_argument("--no-dns-wait", action="store_true",
                        help="ACME_DELEGATE_WAIT_FOR_DNS=0: a 200 asks no nameserver first")
    args = parser.parse_args(argv)
    spy = py_spy()
    require_database(args.database)
    work = workdir_for(NAME)
    url = fresh_database(args.database, workdir=work, name="acme_delegate_bench_profile")
    credentials = list(seed_accounts(url, args.clients, zones=[ZONE],
                                     keep=range(args.clients)).values())
    raw = work / f"{args.database}.collapsed"
    try:
        with StandinProcess(zones=[ZONE], per_minute=1_000_000, per_hour=10_000_000
                            ) as standin:
            env = service_env(url, standin, updates_per_minute=UNTHROTTLED,
                              **({"wait_for_dns": "0"} if args.no_dns_wait else {}))
            with Serve(env, work / f"serve-{args.database}.log") as served:
                recorder = subprocess.Popen(  # noqa: S603 - py-spy on our own child
                    [spy, "record", "--pid", str(served.pid), "--rate", str(args.rate),
                     "--format", "raw", "--output", str(raw), "--duration",
                     str(int(args.seconds) + 2), "--nonblocking",
                     *(["--gil"] if args.gil else [])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                time.sleep(1)
                result = asyncio.run(load(served, credentials, args.seconds, args.clients))
                _, err = recorder.communicate(timeout=args.seconds + 60)
                if recorder.returncode != 0:
                    raise SystemExit(f"py-spy failed: {err}")
    finally:
        drop_database(args.database, workdir=work, name="acme_delegate_bench_profile")
    print(f"{args.database}, {args.clients} clients"
          f"{', no DNS wait' if args.no_dns_wait else ''}: {result['throughput_rps']} req/s, "
          f"{result['server_cpu_ms_per_request']} ms server CPU per request, "
          f"errors {result['errors']}\n")
    print(summarize(raw, args.top))
    print(f"\nraw stacks: {raw}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
