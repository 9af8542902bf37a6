"""Request overhead: ``/update`` latency and throughput of ``acme-delegate serve``.

    .venv/bin/python -m bench.overhead [--databases sqlite,postgres] [--latencies 0,100]
                                       [--concurrency 1,2,4,8,16,32,64] [--quick]

For each database (SQLite, PostgreSQL) and each stand-in latency (0 ms, 100 ms) a fresh
database, a fresh stand-in process and a fresh ``serve`` process, then:

* **repeat path**: each client repeats a value that is already live. That is a normal
  acme-dns request (authentication, scope check, name lock, read of the name's values,
  two small writes and an audit row) that costs no DigitalOcean call. Closed loop, one
  connection and one credential per client, concurrency 1 to 64; the stand-in's log
  proves that no DigitalOcean call was made.
* **repeat path without the DNS wait**: the same, from a second ``serve`` on the same
  database with ACME_DELEGATE_WAIT_FOR_DNS=0. By default a 200 waits until the
  nameservers serve the value, so each repeat also asks the stand-in's DNS server once:
  a Python process on the same cores whose answers, not the service, then set the pace
  (DigitalOcean's nameservers would cost a network round trip and no CPU here). Both
  are reported; ``--no-dns-off`` skips this one.
* **the floor**: at each concurrency, the same clients and bodies against a bare FastAPI
  route that parses the body (``bench/_floor.py``, served like ``serve``), in
  ``--rounds`` rounds alternating with the service (the order swapped each round), so
  the machine's other load falls on both alike; ``floor_ratio`` is the service's
  throughput over the floor's.
* **new-value path, paced**: a new value every ``--paced-interval`` seconds, a rate the
  DigitalOcean budget sustains. In steady state a name holds MAX_VALUES_PER_NAME=2
  values, so each update overwrites the oldest record in place: one DigitalOcean call.
* **new-value path, short burst**: ``--burst-concurrency`` clients, unpaced, for as many
  updates as what is left of one minute's budget. It shows the service's own capacity
  for new values; it is not sustainable, because the budget (ACME_DELEGATE_DO_RATE_PER_
  MINUTE, default 240, at most 250) caps new values at budget / calls-per-update a minute.
  That ceiling is reported as the new-value throughput.

The stand-in's own rate limits are raised (the service paces itself; this measures the
service, not a 429), and so is the service's abuse limit per credential
(ACME_DELEGATE_UPDATES_PER_MINUTE, default 60): each client here is one credential sending
thousands of requests a minute, which that limit exists to refuse. The limit's counter
is still taken on every request, so its cost is measured. The load generator is a raw
HTTP/1.1 client in this process; the stand-in runs in a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
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
    summarize_calls,
    table,
    workdir_for,
    write_result,
)
from bench.loadgen import HttpClient, update
from tests.support.databases import drop_database, fresh_database, postgres_version
from tests.support.env import clean_env
from tests.support.processes import Serve
from tests.support.seed import Credential, Values, seed_accounts
from tests.support.standin import StandinProcess

NAME = "overhead"
ZONE = "example.com"
BUDGET_PER_MINUTE = 240  # the service's default ACME_DELEGATE_DO_RATE_PER_MINUTE
BUDGET_HEADROOM = 235  # DigitalOcean calls one configuration may spend in all
PACED_ACCOUNTS = 4
# Setup traffic (priming values) stays below what any measured level sends.
SETUP_CONCURRENCY = 8
UNTHROTTLED = "1000000"  # ACME_DELEGATE_UPDATES_PER_MINUTE for load from few credentials
# A client's next request: which credential, which value.
Job = Callable[[], tuple[Credential, str]]


def same_value(credential: Credential, value: str) -> Job:
    """A client that repeats one (live) value."""
    return lambda: (credential, value)


def fresh_values(credential: Credential, values: Values) -> Job:
    """A client that sends a new value every time."""
    return lambda: (credential, values())


async def closed_loop(served: Serve, jobs: Sequence[Job], *, total: int, seconds: float,
                      warmup: int, samples: list[float] | None = None) -> dict[str, Any]:
    """One client per job, each sending its job's next request back to back, until
    ``total`` requests or ``seconds`` have passed; latencies of 200s only (also appended
    to ``samples`` when given)."""
    clients = [HttpClient(served.host, served.port) for _ in jobs]
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    issued = 0
    try:
        async def warm(client: HttpClient, job: Job) -> None:
            for _ in range(warmup):
                await update(client, *job())

        await asyncio.gather(*(warm(c, j) for c, j in zip(clients, jobs, strict=True)))
        deadline = time.perf_counter() + seconds

        async def worker(client: HttpClient, job: Job) -> None:
            nonlocal issued
            while issued < total and time.perf_counter() < deadline:
                issued += 1
                try:
                    reply, took = await update(client, *job())
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    statuses[type(exc).__name__] += 1
                    await client.close()
                    continue
                statuses[str(reply.status)] += 1
                if reply.status == 200:
                    latencies.append(took)

        cpu_before, client_before = served.cpu_seconds(), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker(c, j) for c, j in zip(clients, jobs, strict=True)))
        wall = time.perf_counter() - started
        server_cpu = served.cpu_seconds() - cpu_before
        client_cpu = time.process_time() - client_before
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    if samples is not None:
        samples.extend(latencies)
    done = sum(statuses.values())
    return {
        "concurrency": len(jobs),
        "served": len(latencies),
        "requests_done": done,
        "server_cpu_s": server_cpu,
        "wall_s": wall,
        **latency_summary(latencies),
        "throughput_rps": round(len(latencies) / wall, 1) if wall else math.nan,
        "seconds": round(wall, 2),
        "server_cpu_ms_per_request": round(server_cpu * 1000 / done, 3) if done else math.nan,
        "server_cores_busy": round(server_cpu / wall, 2) if wall else math.nan,
        "loadgen_cores_busy": round(client_cpu / wall, 2) if wall else math.nan,
        "statuses": dict(statuses),
        "errors": done - statuses.get("200", 0),
    }


def merged(rounds: Sequence[dict[str, Any]], samples: Sequence[float]) -> dict[str, Any]:
    """One level's result from its rounds (``samples``: the 200s' latencies of all)."""
    wall = sum(r["wall_s"] for r in rounds)
    served = sum(r["served"] for r in rounds)
    done = sum(r["requests_done"] for r in rounds)
    cpu = sum(r["server_cpu_s"] for r in rounds)
    statuses: Counter[str] = Counter()
    for r in rounds:
        statuses.update(r["statuses"])
    return {
        "concurrency": rounds[0]["concurrency"],
        **latency_summary(samples),
        "throughput_rps": round(served / wall, 1) if wall else math.nan,
        "seconds": round(wall, 2),
        "rounds": len(rounds),
        "server_cpu_ms_per_request": round(cpu * 1000 / done, 3) if done else math.nan,
        "server_cores_busy": round(cpu / wall, 2) if wall else math.nan,
        "loadgen_cores_busy": round(
            sum(r["loadgen_cores_busy"] * r["wall_s"] for r in rounds) / wall, 2)
        if wall else math.nan,
        "statuses": dict(statuses),
        "errors": done - statuses.get("200", 0),
    }


async def alternating(served: Serve, floor: Serve, jobs: Sequence[Job], *, total: int,
                      seconds: float, warmup: int, rounds: int) -> tuple[dict[str, Any],
                                                                          dict[str, Any]]:
    """The service and the floor at one concurrency, in ``rounds`` alternating rounds
    (which one goes first swaps each round), so that the machine's other load falls on
    both alike; returns (service, floor)."""
    results: dict[str, list[dict[str, Any]]] = {"service": [], "floor": []}
    samples: dict[str, list[float]] = {"service": [], "floor": []}
    targets = {"service": served, "floor": floor}
    for i in range(rounds):
        for side in (("service", "floor") if i % 2 == 0 else ("floor", "service")):
            results[side].append(await closed_loop(
                targets[side], jobs, total=max(1, total // rounds), seconds=seconds / rounds,
                warmup=warmup if i == 0 else 0, samples=samples[side]))
    return (merged(results["service"], samples["service"]),
            merged(results["floor"], samples["floor"]))


async def prefill(served: Serve, credentials: Sequence[Credential], values: Values,
                  per_account: int) -> int:
    """``per_account`` new values on each credential (so the next one evicts); errors."""
    errors = 0

    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def fill(credential: Credential) -> None:
        nonlocal errors
        async with gate:
            client = HttpClient(served.host, served.port)
            try:
                for _ in range(per_account):
                    reply, _ = await update(client, credential, values())
                    errors += reply.status != 200
            finally:
                await client.close()

    await asyncio.gather(*(fill(c) for c in credentials))
    return errors


async def paced(served: Serve, standin: StandinProcess, credentials: Sequence[Credential],
                values: Values, *, count: int, interval: float) -> dict[str, Any]:
    """New values, one every ``interval`` seconds, round robin over ``credentials``."""
    clients = [HttpClient(served.host, served.port) for _ in credentials]
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    since = time.monotonic()
    start = time.perf_counter()
    cpu_before = served.cpu_seconds()
    try:
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
            reply, took = await update(clients[i % len(clients)],
                                       credentials[i % len(credentials)], values())
            statuses[str(reply.status)] += 1
            if reply.status == 200:
                latencies.append(took)
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    server_cpu = served.cpu_seconds() - cpu_before
    calls = standin.api_calls(since, time.monotonic())
    ok = statuses.get("200", 0)
    return {
        "interval_s": interval,
        # Includes whatever the idle server does between updates (little: no reconcile
        # pass falls inside a run), so it is an upper bound.
        "server_cpu_ms_per_update": round(server_cpu * 1000 / count, 3) if count else math.nan,
        **latency_summary(latencies),
        "statuses": dict(statuses),
        "errors": sum(statuses.values()) - ok,
        "do_calls": summarize_calls(calls),
        "do_calls_per_update": round(len(calls) / ok, 2) if ok else math.nan,
    }


async def burst(served: Serve, standin: StandinProcess, credentials: Sequence[Credential],
                values: Values, *, count: int) -> dict[str, Any]:
    """``count`` new values from ``len(credentials)`` clients back to back."""
    since = time.monotonic()
    jobs = [fresh_values(c, values) for c in credentials]
    result = await closed_loop(served, jobs, total=count, seconds=120, warmup=0)
    calls = standin.api_calls(since, time.monotonic())
    ok = result["n"]
    result.update(do_calls=summarize_calls(calls),
                  do_calls_per_update=round(len(calls) / ok, 2) if ok else math.nan)
    return result


async def primed_values(served: Serve, repeaters: Sequence[Credential], values: Values
                        ) -> tuple[dict[str, str], int]:
    """Make one value live for each repeater (one create each); (values, errors)."""
    primed = {c.username: values() for c in repeaters}
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def prime(credential: Credential) -> int:
        async with gate:
            client = HttpClient(served.host, served.port)
            try:
                reply, _ = await update(client, credential, primed[credential.username])
                return int(reply.status != 200)
            finally:
                await client.close()

    return primed, sum(await asyncio.gather(*(prime(c) for c in repeaters)))


async def repeat_levels(served: Serve, floor: Serve, repeaters: Sequence[Credential],
                        primed: dict[str, str], *, concurrency: Sequence[int], requests: int,
                        seconds: float, warmup: int, rounds: int, progress: Progress,
                        note: str = "") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The repeat path and the floor at each concurrency, alternating."""
    levels, floors = [], []
    for level in concurrency:
        progress.update(note=f"repeat path{note} and floor, concurrency {level}", force=True)
        jobs = [same_value(c, primed[c.username]) for c in repeaters[:level]]
        service, bare = await alternating(served, floor, jobs, total=requests,
                                          seconds=seconds, warmup=warmup, rounds=rounds)
        service["floor_ratio"] = (round(service["throughput_rps"] / bare["throughput_rps"], 3)
                                  if bare["throughput_rps"] else math.nan)
        levels.append(service)
        floors.append(bare)
    return levels, floors


async def measure(served: Serve, floor: Serve, standin: StandinProcess,
                  credentials: Sequence[Credential], *, concurrency: Sequence[int],
                  requests: int, seconds: float, warmup: int, rounds: int,
                  paced_updates: int, paced_interval: float, burst_updates: int,
                  burst_concurrency: int, progress: Progress) -> dict[str, Any]:
    values = Values()
    top = max(concurrency)
    repeaters = credentials[:top]
    pacers = credentials[top:top + PACED_ACCOUNTS]
    bursters = credentials[top + PACED_ACCOUNTS:top + PACED_ACCOUNTS + burst_concurrency]
    out: dict[str, Any] = {}

    # Repeat path: every repeater's value goes live once (one create each), then repeats.
    primed, out["prime_errors"] = await primed_values(served, repeaters, values)
    out["primed"] = primed
    since = time.monotonic()
    out["repeat"], out["floor"] = await repeat_levels(
        served, floor, repeaters, primed, concurrency=concurrency, requests=requests,
        seconds=seconds, warmup=warmup, rounds=rounds, progress=progress)
    out["repeat_do_calls"] = summarize_calls(standin.api_calls(since, time.monotonic()))

    # New values: two live values on every account first, so each update evicts one.
    progress.update(note="new-value path, paced", force=True)
    out["prefill_errors"] = await prefill(served, pacers, values, 2)
    out["new_value_paced"] = await paced(served, standin, pacers, values,
                                         count=paced_updates, interval=paced_interval)
    progress.update(note="new-value path, burst", force=True)
    out["prefill_errors"] += await prefill(served, bursters, values, 2)
    spent = len(standin.api_calls())
    affordable = max(0, (BUDGET_HEADROOM - spent) // 2)
    count = min(burst_updates, affordable)
    out["new_value_burst"] = (await burst(served, standin, bursters, values, count=count)
                              if count >= len(bursters) else None)
    out["do_calls_total"] = len(standin.api_calls())
    return out


def run(*, databases: Sequence[str] = ("sqlite", "postgres"),
        latencies_ms: Sequence[float] = (0, 100),
        concurrency: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
        requests: int = 2000, seconds: float = 5.0, warmup: int = 5, rounds: int = 4,
        paced_updates: int = 20, paced_interval: float = 0.6,
        burst_updates: int = 50, burst_concurrency: int = 8, dns_off: bool = True,
        results_dir: Path | None = None, workdir: Path | None = None,
        postgres_database: str = "acme_delegate_bench", show_progress: bool = True,
        plot: bool = True) -> dict[str, Any]:
    """Run the benchmark; returns (and writes) the result."""
    work = workdir or workdir_for(NAME)
    progress = Progress("overhead", enabled=show_progress)
    configs: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for database in databases:
        try:
            require_database(database)
        except BenchSkip as exc:
            if IN_CI:
                raise
            skipped[database] = str(exc)
            say(f"skipping {database}: {exc}", enabled=show_progress)
            continue
        for latency in latencies_ms:
            progress.label = f"overhead [{database}, DigitalOcean latency {latency:g} ms]"
            url = fresh_database(database, workdir=work, name=postgres_database)
            count = max(concurrency) + PACED_ACCOUNTS + burst_concurrency
            credentials = list(seed_accounts(url, count, zones=[ZONE],
                                             keep=range(count)).values())
            with StandinProcess(zones=[ZONE], per_minute=1_000_000, per_hour=10_000_000
                                ) as standin:
                standin.set_faults(latency_ms=latency)
                # One credential per client sends thousands of requests here; the abuse
                # limit per credential (UPDATES_PER_MINUTE) would answer 429 to most.
                env = service_env(url, standin, updates_per_minute=UNTHROTTLED)
                with Serve(env, work / f"serve-{database}-{latency:g}.log") as served, \
                        Serve(clean_env(), work / f"floor-{database}-{latency:g}.log",
                              program=("-m", "bench._floor")) as floor:
                    result = asyncio.run(measure(
                        served, floor, standin, credentials, concurrency=concurrency,
                        requests=requests, seconds=seconds, warmup=warmup, rounds=rounds,
                        paced_updates=paced_updates, paced_interval=paced_interval,
                        burst_updates=burst_updates, burst_concurrency=burst_concurrency,
                        progress=progress))
                    result["serve_rss_kb"] = served.rss_kb()
                primed = result.pop("primed")
                if dns_off:
                    # The same database and values, a serve whose 200 does not wait for DNS.
                    quiet = {**env, "ACME_DELEGATE_WAIT_FOR_DNS": "0"}
                    top = max(concurrency)
                    with Serve(quiet, work / f"serve-{database}-{latency:g}-nodns.log"
                               ) as served, \
                            Serve(clean_env(), work / f"floor-{database}-{latency:g}-nodns.log",
                                  program=("-m", "bench._floor")) as floor:
                        since = time.monotonic()
                        result["repeat_dns_off"], result["floor_dns_off"] = asyncio.run(
                            repeat_levels(served, floor, credentials[:top], primed,
                                          concurrency=concurrency, requests=requests,
                                          seconds=seconds, warmup=warmup, rounds=rounds,
                                          progress=progress, note=" (no DNS wait)"))
                        result["repeat_dns_off_do_calls"] = summarize_calls(
                            standin.api_calls(since, time.monotonic()))
            per_update = result["new_value_paced"]["do_calls_per_update"]
            configs.append({
                "database": database,
                "do_latency_ms": latency,
                **result,
                "budget_per_minute": BUDGET_PER_MINUTE,
                "new_value_ceiling_per_minute": (
                    round(BUDGET_PER_MINUTE / per_update, 1)
                    if per_update and not math.isnan(per_update) else math.nan),
            })
            drop_database(database, workdir=work, name=postgres_database)
    progress.done("done")
    info = machine()
    if "postgres" in databases and "postgres" not in skipped:
        info["postgres"] = postgres_version()
    output = {
        "benchmark": NAME,
        "machine": info,
        "params": {"databases": list(databases), "latencies_ms": list(latencies_ms),
                   "concurrency": list(concurrency), "requests_per_level": requests,
                   "seconds_per_level": seconds, "warmup_per_client": warmup,
                   "alternating_rounds": rounds,
                   "paced_updates": paced_updates, "paced_interval_s": paced_interval,
                   "burst_updates_max": burst_updates, "burst_concurrency": burst_concurrency,
                   "log_level": "INFO", "dns_off": dns_off},
        "skipped": skipped,
        "configs": configs,
    }
    write_result(NAME, output, results_dir)
    if plot:
        plot_result(NAME, output, results_dir, verbose=show_progress)
    return output


def report(result: dict[str, Any]) -> str:
    repeat_rows = []
    new_rows = []
    for config in result["configs"]:
        where = (config["database"], f"{config['do_latency_ms']:g} ms")
        for wait, key in (("on", ""), ("off", "_dns_off")):
            for level, bare in zip(config.get(f"repeat{key}", []),
                                   config.get(f"floor{key}", []), strict=True):
                repeat_rows.append([
                    *where, wait, level["concurrency"], level["p50_ms"], level["p99_ms"],
                    level["throughput_rps"], bare["throughput_rps"], level["floor_ratio"],
                    level["p99_ms"] / level["p50_ms"] if level["p50_ms"] else math.nan,
                    level["server_cpu_ms_per_request"], bare["server_cpu_ms_per_request"],
                    level["errors"]])
        for mode in ("new_value_paced", "new_value_burst"):
            row = config.get(mode)
            if not row:
                continue
            label = (f"paced, 1 per {row['interval_s']:g} s" if mode == "new_value_paced"
                     else f"burst, {row['concurrency']} clients")
            cpu = row.get("server_cpu_ms_per_update",
                          row.get("server_cpu_ms_per_request", math.nan))
            new_rows.append([*where, label, row["n"], row["p50_ms"], row["p99_ms"],
                             row.get("throughput_rps", math.nan), cpu,
                             row["do_calls_per_update"],
                             config["new_value_ceiling_per_minute"], row["errors"]])
    text = table("Repeat path (value already live: no DigitalOcean call) beside the floor "
                 "(a bare FastAPI route parsing the same body), alternating rounds",
                 ["database", "DO latency", "DNS wait", "clients", "p50 ms", "p99 ms", "req/s",
                  "floor req/s", "/ floor", "p99/p50", "server CPU ms/req",
                  "floor CPU ms/req", "errors"], repeat_rows)
    text += "\n" + table(
        "New-value path (a full name: the oldest record overwritten in place)",
        ["database", "DO latency", "load", "n", "p50 ms", "p99 ms", "req/s",
         "server CPU ms/update", "DO calls/update", "ceiling updates/min", "errors"],
        new_rows)
    do_repeat = [c["repeat_do_calls"]["total"]
                 + c.get("repeat_dns_off_do_calls", {}).get("total", 0)
                 for c in result["configs"]]
    text += f"\nDigitalOcean calls during the repeat path: {do_repeat}\n"
    for config in result["configs"]:
        setting = f"{config['database']}, DO {config['do_latency_ms']:g} ms"
        if config["prime_errors"] or config["prefill_errors"]:
            text += (f"{setting}: setup errors (priming {config['prime_errors']}, prefill "
                     f"{config['prefill_errors']})\n")
        for level in config["repeat"] + config.get("repeat_dns_off", []):
            if level["errors"]:
                text += (f"{setting}, {level['concurrency']} clients: statuses "
                         f"{level['statuses']}\n")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--latencies", default="0,100", help="stand-in latency, ms")
    parser.add_argument("--concurrency", default="1,2,4,8,16,32,64")
    parser.add_argument("--requests", type=int, default=2000, help="per concurrency level")
    parser.add_argument("--seconds", type=float, default=5.0, help="cap per level")
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating rounds of service and floor per level")
    parser.add_argument("--paced-updates", type=int, default=20)
    parser.add_argument("--paced-interval", type=float, default=0.6)
    parser.add_argument("--burst-updates", type=int, default=50)
    parser.add_argument("--burst-concurrency", type=int, default=8)
    parser.add_argument("--no-dns-off", action="store_true",
                        help="skip the repeat path with WAIT_FOR_DNS=0")
    parser.add_argument("--quick", action="store_true",
                        help="tiny parameters: a check that it runs, not a measurement")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    params: dict[str, Any] = {
        "databases": [d for d in args.databases.split(",") if d],
        "latencies_ms": [float(x) for x in args.latencies.split(",") if x],
        "concurrency": [int(x) for x in args.concurrency.split(",") if x],
        "requests": args.requests, "seconds": args.seconds, "rounds": args.rounds,
        "paced_updates": args.paced_updates, "paced_interval": args.paced_interval,
        "burst_updates": args.burst_updates, "burst_concurrency": args.burst_concurrency,
        "dns_off": not args.no_dns_off, "results_dir": args.results_dir,
    }
    if args.quick:
        params.update(concurrency=[1, 4], requests=50, seconds=2, paced_updates=3,
                      paced_interval=0.1, burst_updates=8, burst_concurrency=2)
    result = run(**params)
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
