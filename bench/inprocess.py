"""The repeat ``/update`` in process: the ASGI app called directly, without HTTP.

    .venv/bin/python -m bench.inprocess [--database sqlite|postgres] [--clients 8]
                                        [--requests 4000] [--dns-wait] [--profile 30]

``bench.overhead`` measures the service as deployed (a server process, HTTP over
loopback, a load generator on the other core): its figures are the ones that count. This
measures what the app itself costs a request, to compare two commits or to find where a
cost lies: the same settings, database and stand-in as ``bench.overhead``, and
``--clients`` coroutines in this process each calling the ASGI app (the app built by
``app.main.create_app``, with its middleware) with the next repeat request as soon as
the last is answered. No socket, no HTTP parser, no second process: CPU time per
request, steady enough to compare, and ready for a profiler:

* ``--profile N``: cProfile over the measured requests, the top N functions by own time;
* under valgrind, ``valgrind --tool=callgrind .venv/bin/python -m bench.inprocess …``
  counts instructions, repeatable whatever else the machine does (see bench/README.md).

``--dns-wait`` keeps the wait for DNS on (each 200 then asks the stand-in's DNS server,
another process): off by default, as the app's own cost is what this measures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import os
import pstats
import resource
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import require_database, say, service_env, workdir_for
from bench.loadgen import update_request
from bench.overhead import UNTHROTTLED, ZONE
from tests.support.asgi import asgi_request
from tests.support.databases import drop_database, fresh_database
from tests.support.processes import proc_cpu_seconds, process_tree
from tests.support.seed import Credential, Values, seed_accounts
from tests.support.standin import StandinProcess

NAME = "inprocess"


class Driver:
    """Sends repeats to an ASGI app as uvicorn would hand them to it
    (``tests.support.asgi``), with no deadline of its own."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def update(self, credential: Credential, value: str) -> int:
        body, headers = update_request(credential, value)
        reply = await asgi_request(
            self.app, "POST", b"/update",
            [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
             (b"content-length", str(len(body)).encode()),
             *((k.encode(), v.encode()) for k, v in headers.items())],
            [body], timeout=None)
        return reply.status


def app_children_cpu(other: int | None) -> float:
    """CPU seconds so far of this process's children but ``other`` and its own (the
    stand-in): the app's (a SQLite WAL's sync process, ``app.db.syncer``)."""
    others = set(process_tree(other)) if other is not None else set()
    return sum(proc_cpu_seconds(pid) for pid in process_tree(os.getpid())[1:]
               if pid not in others)


async def drive(driver: Driver, jobs: Sequence[tuple[Credential, str]], total: int,
                standin: int | None = None
                ) -> tuple[Counter[int], float, float, float, float, float]:
    """``total`` repeats from one coroutine per job; (statuses, wall s, this process's CPU
    s in user and in kernel mode, all threads, the event loop's thread's CPU s, and the
    app's child processes' CPU s: see ``app_children_cpu``)."""
    statuses: Counter[int] = Counter()
    left = total

    async def client(credential: Credential, value: str) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            statuses[await driver.update(credential, value)] += 1

    wall, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    loop, children = time.thread_time(), app_children_cpu(standin)
    await asyncio.gather(*(client(*job) for job in jobs))
    loop, children = time.thread_time() - loop, app_children_cpu(standin) - children
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (statuses, time.perf_counter() - wall, after.ru_utime - before.ru_utime,
            after.ru_stime - before.ru_stime, loop, children)


async def _callgrind(state: str) -> None:
    """Under ``valgrind --tool=callgrind --instr-atstart=no``: instrumentation on or off
    (``callgrind_control -i``), so that the counts cover the measured requests only."""
    if os.environ.get("BENCH_CALLGRIND") != "1":
        return
    control = await asyncio.create_subprocess_exec(
        "callgrind_control", "-i", state, str(os.getpid()),
        stdout=asyncio.subprocess.DEVNULL)
    if await control.wait() != 0:
        raise SystemExit("callgrind_control failed: is this process under callgrind?")


async def measure(env: dict[str, str], credentials: Sequence[Credential], *, clients: int,
                  requests: int, warmup: int, profile: int, floor: bool,
                  profile_file: Path | None = None, standin: int | None = None
                  ) -> dict[str, Any]:
    # The service's settings, read from the environment a `serve` would get.
    os.environ.update({k: v for k, v in env.items() if k.startswith("ACME_DELEGATE_")})
    from app.cli.common import configure_logging
    from app.config import Settings
    from app.db.migrate import upgrade
    from app.main import create_app
    from app.server import settle_heap
    from bench._floor import floor_app

    settings = Settings()
    configure_logging(settings)
    await asyncio.to_thread(upgrade, settings.database_url)
    app = floor_app() if floor else create_app(settings, reconcile=False)
    driver = Driver(app)
    values = Values()
    async with app.router.lifespan_context(app):
        jobs = [(c, values()) for c in credentials[:clients]]
        primed = await asyncio.gather(*(driver.update(c, v) for c, v in jobs))
        if set(primed) != {200}:
            raise SystemExit(f"priming the values failed: statuses {Counter(primed)}")
        await drive(driver, jobs, warmup)
        settle_heap()
        profiler = cProfile.Profile() if profile else None
        if profiler is not None:
            profiler.enable()
        await _callgrind("on")
        statuses, wall, user, system, loop, children = await drive(
            driver, jobs, requests, standin)
        await _callgrind("off")
        if profiler is not None:
            profiler.disable()
    result = {"clients": clients, "requests": requests, "statuses": dict(statuses),
              "wall_us_per_request": round(wall / requests * 1e6, 1),
              "cpu_us_per_request": round((user + system + children) / requests * 1e6, 1),
              "children_us_per_request": round(children / requests * 1e6, 1),
              "user_us_per_request": round(user / requests * 1e6, 1),
              "system_us_per_request": round(system / requests * 1e6, 1),
              "loop_thread_us_per_request": round(loop / requests * 1e6, 1)}
    if profiler is not None:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(profile)
        if profile_file is not None:  # whole, for pstats or snakeviz: callers and all
            profiler.dump_stats(profile_file)
        result["profile"] = text.getvalue()
    return result


def run(*, database: str, clients: int, requests: int, warmup: int, dns_wait: bool,
        profile: int, floor: bool = False, profile_file: Path | None = None
        ) -> dict[str, Any]:
    require_database(database)
    work = workdir_for(NAME)
    url = fresh_database(database, workdir=work, name="acme_delegate_inprocess")
    try:
        credentials = list(seed_accounts(url, clients, zones=[ZONE],
                                         keep=range(clients)).values())
        with StandinProcess(zones=[ZONE], per_minute=1_000_000, per_hour=10_000_000
                            ) as standin:
            env = service_env(url, standin, updates_per_minute=UNTHROTTLED,
                              **({} if dns_wait else {"wait_for_dns": "0"}))
            # The service's log lines go to a file, as a deployed service's go to its
            # collector: written, but not onto this terminal.
            log_file = work / "service.log"
            with log_file.open("w") as sink:
                stderr = os.dup(2)
                os.dup2(sink.fileno(), 2)
                try:
                    return asyncio.run(measure(env, credentials, clients=clients,
                                               requests=requests, warmup=warmup,
                                               profile=profile, floor=floor,
                                               profile_file=profile_file,
                                               standin=standin.pid))
                finally:
                    os.dup2(stderr, 2)
                    os.close(stderr)
                    logging.shutdown()
    finally:
        drop_database(database, workdir=work, name="acme_delegate_inprocess")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=400)
    parser.add_argument("--dns-wait", action="store_true",
                        help="each 200 waits for the stand-in's DNS to serve the value")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="cProfile the measured requests; print the top N by own time")
    parser.add_argument("--profile-file", type=Path, metavar="PATH",
                        help="with --profile: also write the whole profile there "
                             "(python -m pstats PATH)")
    parser.add_argument("--floor", action="store_true",
                        help="drive the floor (bench._floor: a bare FastAPI route parsing "
                             "the same body) instead of the service, for comparison")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1:
        parser.error("--clients and --requests must be at least 1")
    if args.profile_file is not None and not args.profile:
        parser.error("--profile-file needs --profile N")
    result = run(database=args.database, clients=args.clients, requests=args.requests,
                 warmup=args.warmup, dns_wait=args.dns_wait, profile=args.profile,
                 floor=args.floor, profile_file=args.profile_file)
    what = "the floor" if args.floor else args.database
    say(f"{what}, {args.clients} clients, {args.requests} repeats: "
        f"{result['cpu_us_per_request']} µs CPU ({result['user_us_per_request']} user, "
        f"{result['system_us_per_request']} kernel, "
        f"{result['children_us_per_request']} its child processes; "
        f"{result['loop_thread_us_per_request']} on the event loop's thread) and "
        f"{result['wall_us_per_request']} µs "
        f"wall a request; statuses {result['statuses']}")
    if "profile" in result:
        print(result["profile"])
    return 0 if set(result["statuses"]) == {200} else 1


if __name__ == "__main__":
    raise SystemExit(main())
