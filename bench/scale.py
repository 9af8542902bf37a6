"""Scale: 100,000 credentials in SQLite and in PostgreSQL against 100.

    .venv/bin/python -m bench.scale [--databases sqlite,postgres] [--credentials 100000]
                                    [--baseline 100] [--live-fraction 0.01]

For each database and each size (the baseline, then the large one): a fresh database
seeded straight through SQL (``app.db.tables``, keys hashed with
``app.core.keys.hash_key``: no HTTP), spread over 10 zones, with ``--live-fraction`` of
the credentials holding one live TXT value (a record in the stand-in and its row, as if
they had updated once); then ``acme-delegate serve``:

* start-up: time to healthy, and the time its start-up reconcile pass kept the process
  busy (the pass runs at every start and every RECONCILE_INTERVAL; the measurements wait
  for it to end);
* ``/update`` latency on the repeat path (value already live: the database work of a
  request, no DigitalOcean call) with 1 client and with 16, from 64 credentials spread
  over the whole table; the same 64-credential working set at both sizes. Both sizes'
  services run side by side and are measured in alternating rounds (small, large, large,
  small, ...): other work on the machine then weighs on both alike;
* ``/update`` with a new value (create + evict), paced, a few samples;
* RSS of the serve process after start-up, after the measurements, and its peak;
* after ``serve`` stops, ``acme-delegate reconcile`` (one full pass, a process of its
  own): wall time and peak RSS.

The target: ``/update`` latency with 100,000 credentials within 20 % of 100.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    IN_CI,
    BenchSkip,
    Progress,
    latency_summary,
    machine,
    plot_result,
    require_database,
    say,
    service_env,
    table,
    workdir_for,
    write_result,
)
from bench.loadgen import HttpClient, update
from bench.overhead import SETUP_CONCURRENCY, UNTHROTTLED, Job, closed_loop, paced, prefill
from tests.support.databases import drop_database, fresh_database, postgres_version
from tests.support.processes import Serve, run_cli
from tests.support.seed import Credential, Values, seed_accounts, seed_live_values
from tests.support.standin import StandinProcess

NAME = "scale"
ZONES = [f"zone{k}.example" for k in range(10)]
SAMPLE = 64
PACED_ACCOUNTS = 4
LATENCY_TARGET = 1.20


def sample_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them if n <= k)."""
    if n <= k:
        return list(range(n))
    step = n / k
    return [int(i * step) for i in range(k)]


@dataclass
class Size:
    """One database size with its stand-in and its serve process."""

    n: int
    name: str
    url: str
    env: dict[str, str]
    standin: StandinProcess
    served: Serve
    sample: list[Credential]
    pacers: list[Credential]
    result: dict[str, Any]
    primed: dict[str, str] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)


def ring(credentials: list[Credential], primed: dict[str, str]) -> Job:
    """A job that cycles through ``credentials``, each with its live value."""
    state = {"i": -1}

    def next_request() -> tuple[Credential, str]:
        state["i"] = (state["i"] + 1) % len(credentials)
        credential = credentials[state["i"]]
        return credential, primed[credential.username]

    return next_request


def prepare(database: str, n: int, *, name: str, work: Path, live_fraction: float,
            idle_timeout: float, stack: contextlib.ExitStack, progress: Progress) -> Size:
    """Seed a fresh database, start its stand-in and its serve process, and wait until
    serve's start-up reconcile pass is over."""
    progress.label = f"scale [{database}, {n:,} credentials]"
    progress.total = n
    url = fresh_database(database, workdir=work, name=name)
    sample_at = sample_indices(n - PACED_ACCOUNTS, SAMPLE)
    pacer_at = list(range(n - PACED_ACCOUNTS, n))
    seeded_at = time.monotonic()
    kept = seed_accounts(url, n, zones=ZONES, keep=[*sample_at, *pacer_at], progress=progress)
    result: dict[str, Any] = {"database": database, "credentials": n,
                              "seed_seconds": round(time.monotonic() - seeded_at, 1)}
    standin = stack.enter_context(StandinProcess(zones=ZONES, per_minute=1_000_000,
                                                 per_hour=10_000_000))
    # Live values on accounts outside the measured sample, spread over the table.
    busy = set(sample_at) | set(pacer_at)
    free = [i for i in range(n) if i not in busy]
    live = min(len(free), max(1, round(n * live_fraction)) if live_fraction > 0 else 0)
    candidates = [free[i] for i in sample_indices(len(free), live)]
    accounts = [(i + 1, f"_acme-challenge.h{i}.{ZONES[i % len(ZONES)]}",
                 ZONES[i % len(ZONES)]) for i in candidates]
    progress.total = len(accounts)
    result["live_values"] = seed_live_values(url, standin, accounts, Values(),
                                             progress=progress)
    env = service_env(url, standin, updates_per_minute=UNTHROTTLED)
    started = time.monotonic()
    served = stack.enter_context(Serve(env, work / f"serve-{database}-{n}.log",
                                       ready_timeout=300))
    result["start_to_healthy_s"] = round(time.monotonic() - started, 2)
    # The pass runs at start-up, before or after /health answers: timed from the start,
    # before the next size is prepared.
    progress.update(note="start-up reconcile pass", force=True)
    served.wait_idle(timeout=idle_timeout, progress=progress)
    result["startup_reconcile_busy_s"] = round(time.monotonic() - started, 1)
    result["serve_rss_kb_idle"] = served.rss_kb()
    return Size(n, name, url, env, standin, served, [kept[i] for i in sample_at],
                [kept[i] for i in pacer_at], result)


async def prime(size: Size) -> None:
    values = Values()
    size.primed = {c.username: values() for c in size.sample}

    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(credential: Credential) -> int:
        async with gate:
            client = HttpClient(size.served.host, size.served.port)
            try:
                reply, _ = await update(client, credential, size.primed[credential.username])
                return int(reply.status != 200)
            finally:
                await client.close()

    size.result["prime_errors"] = sum(await asyncio.gather(*(one(c) for c in size.sample)))


async def measure(sizes: Sequence[Size], *, rounds: int, requests: int, seconds: float,
                  paced_updates: int, progress: Progress) -> None:
    """Repeat-path latency in interleaved rounds (A B, B A, ...), so that whatever else the
    machine does falls on both sizes alike; then a few paced new values on each."""
    for size in sizes:
        await prime(size)
    levels: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for r in range(rounds):
        order = sizes if r % 2 == 0 else list(reversed(sizes))
        for size in order:
            for clients in (1, 16):
                progress.update(note=f"round {r + 1}/{rounds}: {size.n:,} credentials, "
                                     f"{clients} client(s)", force=True)
                # Client i cycles through its share of the 64: every request reads
                # another account and another name, spread over the whole table.
                jobs = [ring(list(size.sample[i::clients]), size.primed)
                        for i in range(clients)]
                pooled = size.samples.setdefault(f"repeat_c{clients}", [])
                part = await closed_loop(size.served, jobs, total=requests // rounds,
                                         seconds=seconds / rounds, warmup=2, samples=pooled)
                levels.setdefault(clients, {}).setdefault(size.name, []).append(part)
    for size in sizes:
        for clients in (1, 16):
            parts = levels[clients][size.name]
            wall = sum(p["seconds"] for p in parts)
            pooled = size.samples[f"repeat_c{clients}"]
            size.result[f"repeat_c{clients}"] = {
                "concurrency": clients, **latency_summary(pooled),
                "throughput_rps": round(len(pooled) / wall, 1) if wall else math.nan,
                "errors": sum(p["errors"] for p in parts),
                "rounds_p50_ms": [p["p50_ms"] for p in parts],
            }
        progress.update(note=f"new-value path, {size.n:,} credentials", force=True)
        values = Values()
        size.result["prefill_errors"] = await prefill(size.served, size.pacers, values, 2)
        size.result["new_value_paced"] = await paced(size.served, size.standin, size.pacers,
                                                     values, count=paced_updates,
                                                     interval=0.5)


def run_database(database: str, *, baseline: int, credentials: int, work: Path,
                 live_fraction: float, rounds: int, requests: int, seconds: float,
                 paced_updates: int, postgres_database: str, idle_timeout: float,
                 cli_reconcile: bool, reconcile_timeout: float, progress: Progress
                 ) -> list[dict[str, Any]]:
    with contextlib.ExitStack() as stack:
        sizes = [prepare(database, n, name=f"{postgres_database}_{tag}", work=work,
                         live_fraction=live_fraction, idle_timeout=idle_timeout, stack=stack,
                         progress=progress)
                 for n, tag in ((baseline, "small"), (credentials, "large"))]
        progress.label = f"scale [{database}]"
        asyncio.run(measure(sizes, rounds=rounds, requests=requests, seconds=seconds,
                            paced_updates=paced_updates, progress=progress))
        for size in sizes:
            size.result["serve_rss_kb_after"] = size.served.rss_kb()
            size.result["serve_rss_kb_peak"] = size.served.hwm_kb()
            size.served.stop()
        for size in sizes:
            if not cli_reconcile:
                size.result["reconcile"] = None
                continue
            progress.update(note=f"acme-delegate reconcile, {size.n:,} credentials",
                            force=True)
            completed = run_cli("reconcile", env=size.env, timeout=reconcile_timeout,
                                sample_every=0.2)
            try:
                report = json.loads(completed.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                report = {"error": (completed.stderr or completed.stdout)[-500:]}
            size.result["reconcile"] = {
                "seconds": round(completed.seconds, 1), "returncode": completed.returncode,
                "timed_out": completed.timed_out, "peak_rss_kb": completed.peak_rss_kb,
                "report": report}
        for size in sizes:
            if database == "sqlite":
                db_file = work / f"{size.name}.sqlite3"
                size.result["sqlite_bytes"] = db_file.stat().st_size if db_file.exists() \
                    else None
    for size in sizes:
        drop_database(database, workdir=work, name=size.name)
    return [size.result for size in sizes]


def run(*, databases: Sequence[str] = ("sqlite", "postgres"), credentials: int = 100_000,
        baseline: int = 100, live_fraction: float = 0.01, rounds: int = 4,
        requests: int = 2000, seconds: float = 12.0, paced_updates: int = 10,
        results_dir: Path | None = None, workdir: Path | None = None,
        postgres_database: str = "acme_delegate_bench", idle_timeout: float = 900.0,
        cli_reconcile: bool = True, reconcile_timeout: float = 900.0,
        show_progress: bool = True, plot: bool = True) -> dict[str, Any]:
    work = workdir or workdir_for(NAME)
    progress = Progress("scale", enabled=show_progress)
    runs: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    comparisons = []
    for database in databases:
        try:
            require_database(database)
        except BenchSkip as exc:
            if IN_CI:
                raise
            skipped[database] = str(exc)
            say(f"skipping {database}: {exc}", enabled=show_progress)
            continue
        small, large = run_database(
            database, baseline=baseline, credentials=credentials, work=work,
            live_fraction=live_fraction, rounds=rounds, requests=requests, seconds=seconds,
            paced_updates=paced_updates, postgres_database=postgres_database,
            idle_timeout=idle_timeout, cli_reconcile=cli_reconcile,
            reconcile_timeout=reconcile_timeout, progress=progress)
        runs += [small, large]
        comparison: dict[str, Any] = {"database": database, "baseline": baseline,
                                      "credentials": credentials}
        for key in ("repeat_c1", "repeat_c16"):
            for stat in ("p50_ms", "p99_ms"):
                a, b = small[key][stat], large[key][stat]
                comparison[f"{key}_{stat}_ratio"] = round(b / a, 3) if a else math.nan
        comparison["target_met"] = comparison["repeat_c1_p50_ms_ratio"] <= LATENCY_TARGET
        comparisons.append(comparison)
    progress.done("done")
    info = machine()
    if "postgres" in databases and "postgres" not in skipped:
        info["postgres"] = postgres_version()
    output = {
        "benchmark": NAME,
        "machine": info,
        "params": {"databases": list(databases), "credentials": credentials,
                   "baseline": baseline, "live_fraction": live_fraction, "zones": len(ZONES),
                   "sample_credentials": SAMPLE, "rounds": rounds, "requests": requests,
                   "seconds_cap": seconds, "paced_updates": paced_updates,
                   "cli_reconcile": cli_reconcile},
        "skipped": skipped,
        "runs": runs,
        "comparisons": comparisons,
        "latency_target_ratio": LATENCY_TARGET,
    }
    write_result(NAME, output, results_dir)
    if plot:
        plot_result(NAME, output, results_dir, verbose=show_progress)
    return output


def report(result: dict[str, Any]) -> str:
    rows = []
    for r in result["runs"]:
        rows.append([r["database"], r["credentials"], r["repeat_c1"]["p50_ms"],
                     r["repeat_c1"]["p99_ms"], r["repeat_c16"]["p50_ms"],
                     r["repeat_c16"]["p99_ms"], r["repeat_c16"]["throughput_rps"],
                     r["new_value_paced"]["p50_ms"], round(r["serve_rss_kb_idle"] / 1024, 1),
                     round(r["serve_rss_kb_peak"] / 1024, 1), r["startup_reconcile_busy_s"],
                     r["reconcile"]["seconds"] if r["reconcile"] else "-",
                     round(r["reconcile"]["peak_rss_kb"] / 1024, 1) if r["reconcile"] else "-"])
    text = table("Scale: repeat-path /update latency, memory, reconcile",
                 ["database", "credentials", "1 client p50 ms", "p99 ms", "16 clients p50 ms",
                  "p99 ms", "req/s", "new value p50 ms", "serve RSS MiB", "peak MiB",
                  "start-up pass s", "reconcile s", "reconcile RSS MiB"], rows)
    cmp_rows = [[c["database"], f"{c['credentials']:,} / {c['baseline']:,}",
                 c["repeat_c1_p50_ms_ratio"], c["repeat_c1_p99_ms_ratio"],
                 c["repeat_c16_p50_ms_ratio"], c["repeat_c16_p99_ms_ratio"],
                 "met" if c["target_met"] else "MISSED"] for c in result["comparisons"]]
    text += "\n" + table("Latency ratio, large / baseline (target: p50 at most 1.20)",
                         ["database", "sizes", "1 client p50", "1 client p99",
                          "16 clients p50", "16 clients p99", "target"], cmp_rows)
    for database, why in result["skipped"].items():
        text += f"\nNot run: {database}: {why}\n"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--credentials", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=100)
    parser.add_argument("--live-fraction", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved measurement rounds (baseline, large, large, ...)")
    parser.add_argument("--requests", type=int, default=2000, help="per size and level")
    parser.add_argument("--seconds", type=float, default=12.0, help="cap per size and level")
    parser.add_argument("--no-cli-reconcile", action="store_true",
                        help="skip the separate `acme-delegate reconcile` pass (the start-up "
                             "pass of serve is still timed)")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(databases=[d for d in args.databases.split(",") if d],
                 credentials=args.credentials, baseline=args.baseline,
                 live_fraction=args.live_fraction, rounds=args.rounds,
                 requests=args.requests, seconds=args.seconds,
                 cli_reconcile=not args.no_cli_reconcile, results_dir=args.results_dir)
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
