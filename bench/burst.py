"""Burst: 1,000 credentials put a new value at the same moment, under the request budget.

    .venv/bin/python -m bench.burst [--scale 1.0] [--latency-ms 100]

Every credential has its own name, so every update needs one DigitalOcean create, and
the service may send at most ACME_DELEGATE_DO_RATE_PER_MINUTE (default 240) a minute.
The stand-in enforces DigitalOcean's own limits (250 a minute, 5,000 an hour) and
answers 429 above them. Each client behaves as acme-dns clients should: on a 503 with
``Retry-After`` it waits that long and sends the same value again (bounded: at most
``--max-attempts`` tries and ``--deadline`` seconds in all).

Measured: 429s the stand-in sent; the time until every value is live (the client got its
200), against the theoretical minimum: with a sliding window of B requests a minute, N
creates need at least ``(ceil(N / B) - 1)`` windows after the first instant (240 s for
1,000 at 240/min; the service's window is DigitalOcean's minute, a slot counting from
when its request was answered; the naive N / B minutes is 250 s); 503s and retries;
client-visible errors (anything but 200, or 503 with a Retry-After). ``--scale 0.3``
runs 300 credentials (one window, about a minute). ``--load N`` runs N busy loops (one
process each) beside it for the whole run: a shared or slower machine, reproducibly
(N = 4 on two cores gives the service about a third of a core); its result is
``burst-load<N>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    Progress,
    machine,
    plot_result,
    service_env,
    summarize_calls,
    table,
    workdir_for,
    write_result,
)
from bench.loadgen import HttpClient, update
from tests.support.databases import fresh_database
from tests.support.ports import raise_open_files_limit
from tests.support.processes import Serve
from tests.support.seed import Credential, Values, seed_accounts
from tests.support.standin import StandinProcess

NAME = "burst"
ZONE = "example.com"
FULL = 1000
BUDGET = 240  # the service's default ACME_DELEGATE_DO_RATE_PER_MINUTE
SERVICE_WINDOW = 60.0  # the service's minute (app/pacing/budget.py: MINUTE)


def theory(n: int, budget: int) -> dict[str, Any]:
    windows = max(math.ceil(n / budget) - 1, 0)
    return {
        "budget_per_minute": budget,
        "window_s": 60.0,
        "sliding_window_lower_bound_s": windows * 60.0,
        "service_window_lower_bound_s": windows * SERVICE_WINDOW,
        "naive_rate_s": round(n / budget * 60.0, 1),
    }


async def client(served: Serve, credential: Credential, value: str, *, started: float,
                 deadline: float, max_attempts: int, stats: dict[str, Any]) -> None:
    """One acme-dns client: retry after Retry-After until 200, the deadline or the cap."""
    for attempt in range(1, max_attempts + 1):
        http = HttpClient(served.host, served.port, timeout=120)
        stats["attempts"] += 1
        sent = time.monotonic() - started
        try:
            reply, took = await update(http, credential, value)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            stats["log"].append((round(sent, 3), round(time.monotonic() - started, 3),
                                 type(exc).__name__, None))
            stats["statuses"][type(exc).__name__] += 1
            stats["errors"].append(type(exc).__name__)
            stats["error_at"].append(time.monotonic() - started)
            await asyncio.sleep(1)
            continue
        finally:
            await http.close()
        stats["statuses"][str(reply.status)] += 1
        stats["log"].append((round(sent, 3), round(time.monotonic() - started, 3),
                             reply.status, reply.headers.get("retry-after")))
        if reply.status == 200:
            stats["live_at"].append(time.monotonic() - started)
            stats["latency"].append(took)
            stats["attempts_to_live"].append(attempt)
            return
        retry_after = reply.headers.get("retry-after")
        if reply.status in (503, 429) and retry_after is not None:
            wait = float(retry_after)
            stats["retry_after"].append(wait)
        else:
            stats["errors"].append(f"{reply.status} {reply.body[:80]!r}")
            stats["error_at"].append(time.monotonic() - started)
            wait = 1.0
        if time.monotonic() + wait > deadline:
            stats["gave_up"] += 1
            return
        await asyncio.sleep(wait)
    stats["gave_up"] += 1


async def burst(served: Serve, credentials: Sequence[Credential], *, deadline_s: float,
                max_attempts: int, progress: Progress) -> tuple[dict[str, Any], float]:
    values = Values()
    stats: dict[str, Any] = {"attempts": 0, "statuses": Counter(), "live_at": [],
                             "latency": [], "attempts_to_live": [], "retry_after": [],
                             "errors": [], "error_at": [], "gave_up": 0, "log": []}
    started = time.monotonic()
    deadline = started + deadline_s
    tasks = [asyncio.create_task(client(served, c, values(), started=started,
                                        deadline=deadline, max_attempts=max_attempts,
                                        stats=stats))
             for c in credentials]
    pending = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=1.0)
        progress.update(len(stats["live_at"]), f"503s so far {stats['statuses']['503']:,}")
    return stats, started


@contextmanager
def busy_loops(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` processes that do nothing but spin, for as long as the block runs."""
    spinning = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(count)]
    try:
        yield spinning
    finally:
        for process in spinning:
            process.kill()
            process.wait()


def run(*, scale: float = 1.0, credentials: int | None = None, budget: int = BUDGET,
        latency_ms: float = 100.0, max_attempts: int = 60, deadline_s: float = 900.0,
        load: int = 0, results_dir: Path | None = None, workdir: Path | None = None,
        show_progress: bool = True, plot: bool = True) -> dict[str, Any]:
    n = credentials if credentials is not None else max(1, round(FULL * scale))
    work = workdir or workdir_for(NAME)
    raise_open_files_limit(4 * n + 1024)
    progress = Progress(f"burst [{n:,} credentials]", total=n, enabled=show_progress)
    url = fresh_database("sqlite", workdir=work, name="burst")
    creds = list(seed_accounts(url, n, zones=[ZONE], keep=range(n), progress=progress
                               ).values())
    with StandinProcess(zones=[ZONE]) as standin:  # DigitalOcean's limits: 250/min, 5000/h
        standin.set_faults(latency_ms=latency_ms)
        # Every client here connects from 127.0.0.1; in a real burst 1,000 credentials are
        # 1,000 hosts, so the per-address connection bound (32) would not apply to them.
        env = service_env(url, standin, do_rate_per_minute=str(budget),
                          max_connections_per_address=str(n + 64))
        with Serve(env, work / "serve.log") as served, busy_loops(load):
            stats, started = asyncio.run(burst(served, creds, deadline_s=deadline_s,
                                               max_attempts=max_attempts, progress=progress))
            finished = time.monotonic()
            rss = served.hwm_kb()
        log = standin.log()
        calls = [e for e in log["requests"] if e["path"].startswith("/v2/")]
        in_burst = [e for e in calls if e["monotonic"] >= started]
        txt_live = sum(1 for r in standin.records() if r["type"] == "TXT")
    progress.done(f"{len(stats['live_at']):,} live")
    live_at = sorted(stats["live_at"])
    ideal = theory(n, budget)
    all_live = len(live_at) == n
    time_to_all = live_at[-1] if all_live else math.nan
    errors = Counter(stats["errors"])
    output = {
        "benchmark": NAME,
        "machine": machine(),
        "params": {"credentials": n, "scale": scale, "budget_per_minute": budget,
                   "do_latency_ms": latency_ms, "max_attempts": max_attempts,
                   "deadline_s": deadline_s, "standin_limits": "250/min, 5000/h",
                   "busy_loops": load},
        "credentials": n,
        "theory": ideal,
        "values_live": len(live_at),
        "txt_records_at_standin": txt_live,
        "all_live": all_live,
        "time_to_all_live_s": round(time_to_all, 1),
        "ratio_to_sliding_window_bound": (
            round(time_to_all / ideal["sliding_window_lower_bound_s"], 3)
            if all_live and ideal["sliding_window_lower_bound_s"] else math.nan),
        "served_first_try": sum(1 for a in stats["attempts_to_live"] if a == 1),
        "attempts": stats["attempts"],
        "requests_per_value": round(stats["attempts"] / n, 3),
        "attempts_per_value_max": max(stats["attempts_to_live"], default=0),
        "statuses": dict(stats["statuses"]),
        "retry_after_s": ({"min": min(stats["retry_after"]),
                           "median": statistics.median(stats["retry_after"]),
                           "max": max(stats["retry_after"])} if stats["retry_after"] else {}),
        "client_errors": sum(errors.values()),
        "client_error_kinds": dict(errors.most_common(10)),
        "client_errors_when_s": ({"first": round(min(stats["error_at"]), 2),
                                  "last": round(max(stats["error_at"]), 2)}
                                 if stats["error_at"] else {}),
        "gave_up": stats["gave_up"],
        "do_calls": summarize_calls(in_burst),
        "do_429": sum(1 for e in calls if e["status"] == 429),
        "do_max_per_60s": log["max_per_minute"],
        "do_call_times_s": [round(e["monotonic"] - started, 3) for e in in_burst],
        "live_at_s": [round(t, 3) for t in live_at],
        # Every request: (sent, answered) seconds after the start, status, Retry-After.
        "requests_log": sorted(stats["log"]),
        "wall_s": round(finished - started, 1),
        "serve_peak_rss_kb": rss,
    }
    name = f"{NAME}-load{load}" if load else NAME
    write_result(name, output, results_dir)
    if plot:
        plot_result(name, output, results_dir, verbose=show_progress)
    return output


def report(result: dict[str, Any]) -> str:
    t = result["theory"]
    rows = [
        ["credentials updating at once", result["credentials"]],
        ["values live (client got 200)", result["values_live"]],
        ["TXT records at the stand-in", result["txt_records_at_standin"]],
        ["429s sent by the stand-in (DigitalOcean)", result["do_429"]],
        ["most DigitalOcean requests in any 60 s", result["do_max_per_60s"]],
        ["time until every value is live, s", result["time_to_all_live_s"]],
        [f"lower bound, {t['budget_per_minute']}/min sliding window, s",
         t["sliding_window_lower_bound_s"]],
        ["lower bound with the service's window, s", t["service_window_lower_bound_s"]],
        [f"naive {result['credentials']:,} / {t['budget_per_minute']} per minute, s",
         t["naive_rate_s"]],
        ["served on the first try", result["served_first_try"]],
        ["requests sent (with retries)", result["attempts"]],
        ["requests per value", result["requests_per_value"]],
        ["time / sliding-window bound", result["ratio_to_sliding_window_bound"]],
        ["most tries for one value", result["attempts_per_value_max"]],
        ["Retry-After seen (min / median / max), s",
         " / ".join(f"{result['retry_after_s'][k]:g}" for k in ("min", "median", "max"))
         if result["retry_after_s"] else "-"],
        ["client-visible errors", result["client_errors"]],
        ["clients that gave up", result["gave_up"]],
    ]
    text = table(f"Burst of {result['credentials']:,} (budget "
                 f"{t['budget_per_minute']}/min, DigitalOcean latency "
                 f"{result['params']['do_latency_ms']:g} ms)", ["", "value"], rows)
    text += f"\nStatuses: {result['statuses']}\n"
    if result["client_error_kinds"]:
        when = result["client_errors_when_s"]
        text += (f"Errors: {result['client_error_kinds']} (between {when['first']:g} s and "
                 f"{when['last']:g} s after the start)\n")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of 1,000 credentials (0.3: one budget window)")
    parser.add_argument("--credentials", type=int, default=None, help="overrides --scale")
    parser.add_argument("--budget", type=int, default=BUDGET,
                        help="ACME_DELEGATE_DO_RATE_PER_MINUTE (at most 250)")
    parser.add_argument("--latency-ms", type=float, default=100.0,
                        help="stand-in latency per DigitalOcean request")
    parser.add_argument("--max-attempts", type=int, default=60)
    parser.add_argument("--deadline", type=float, default=900.0, help="seconds, in all")
    parser.add_argument("--load", type=int, default=0,
                        help="busy-loop processes beside the run (a loaded machine)")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(scale=args.scale, credentials=args.credentials, budget=args.budget,
                 latency_ms=args.latency_ms, max_attempts=args.max_attempts,
                 deadline_s=args.deadline, load=max(0, args.load),
                 results_dir=args.results_dir)
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
