"""Versions of the service side by side: ``bench.overhead``'s repeat path run from each in
turn, so that the machine's drift falls on all of them alike.

    .venv/bin/python -m bench.compare 074f740 HEAD [.] [--databases sqlite]
                                      [--concurrency 8] [--rounds 3]

A version is a git revision (checked out into a temporary worktree, removed at the end)
or a directory holding a checkout (``.``: this working tree, uncommitted changes and
all). Each round runs every version once, in an order that rotates from round to round:
``python -m bench.overhead --latencies 0 --no-dns-off`` from the version's directory,
with this interpreter (so the same installed packages) and a scratch directory of its
own. Each of those runs measures its floor in rounds alternating with the service, so
the figure that compares across versions is the ratio to the floor, not a time: on a
shared VM the speed of the machine moves from one minute to the next (bench/README.md,
"The machine"). The same code run against itself differs by a few hundredths: a
difference smaller than that is not one.

Printed: every run (ratio to the floor, server CPU per repeat, p50, p99) and, per version,
the range of its ratios; ``--results-dir`` also writes them as ``compare.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT, machine, say, table, write_result

NAME = "compare"


@dataclass(frozen=True)
class Version:
    label: str  # as given
    directory: Path
    commit: str  # what it holds ("+ changes" when the tree differs from its commit)


def git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(  # noqa: S603 - git, on this repository
        [shutil.which("git") or "git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def describe(directory: Path) -> str:
    commit = git("rev-parse", "--short", "HEAD", cwd=directory)
    changed = git("status", "--porcelain", "--untracked-files=no", cwd=directory)
    return f"{commit} + changes" if changed else commit


@contextlib.contextmanager
def versions(given: Sequence[str], scratch: Path) -> Iterator[list[Version]]:
    """Each given version as a directory: a directory as is, a revision as a worktree of
    its own (removed on the way out)."""
    made: list[Path] = []
    found: list[Version] = []
    try:
        for index, name in enumerate(given):
            directory = Path(name)
            if not directory.is_dir():
                commit = git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
                directory = scratch / f"v{index}-{commit[:12]}"
                git("worktree", "add", "--detach", "--quiet", str(directory), commit)
                made.append(directory)
            found.append(Version(name, directory.resolve(), describe(directory)))
        yield found
    finally:
        for directory in made:
            git("worktree", "remove", "--force", str(directory))


def run_once(version: Version, *, databases: str, concurrency: str, requests: int,
             seconds: float, work: Path, log: Path) -> list[dict[str, Any]]:
    """One ``bench.overhead`` run of ``version``: its repeat levels, each with the database."""
    results = work / "results"
    shutil.rmtree(results, ignore_errors=True)
    env = {**os.environ, "ACME_DELEGATE_BENCH_WORKDIR": str(work / "scratch")}
    with log.open("w") as sink:
        done = subprocess.run(  # noqa: S603 - our own interpreter, our own benchmark
            [sys.executable, "-m", "bench.overhead", "--databases", databases,
             "--latencies", "0", "--concurrency", concurrency, "--requests", str(requests),
             "--seconds", str(seconds), "--no-dns-off", "--paced-updates", "1",
             "--burst-updates", "0", "--results-dir", str(results)],
            cwd=version.directory, env=env, stdout=sink, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"bench.overhead failed for {version.label} (exit "
                         f"{done.returncode}): see {log}")
    output = json.loads((results / "overhead.json").read_text())
    return [{"database": config["database"], **level}
            for config in output["configs"] for level in config["repeat"]]


def compare(given: Sequence[str], *, databases: str = "sqlite", concurrency: str = "8",
            rounds: int = 3, requests: int = 2000, seconds: float = 5.0,
            workdir: Path | None = None) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="bench-compare-", dir=workdir))
    runs: list[dict[str, Any]] = []
    try:
        with versions(given, scratch) as found:
            for round_ in range(1, rounds + 1):
                turn = round_ % len(found)
                for index, version in [*enumerate(found)][turn:] + [*enumerate(found)][:turn]:
                    levels = run_once(version, databases=databases, concurrency=concurrency,
                                      requests=requests, seconds=seconds,
                                      work=scratch / f"run-{index}",
                                      log=scratch / f"round{round_}-v{index}.log")
                    for level in levels:
                        runs.append({"version": version.label, "round": round_, **level})
                        say(f"round {round_}/{rounds}  {version.label}  "
                            f"{level['database']}, {level['concurrency']} clients: "
                            f"{level['floor_ratio']:.3f} of the floor")
            described = [{"version": v.label, "commit": v.commit} for v in found]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"benchmark": NAME, "machine": machine(), "versions": described, "databases": databases,
            "concurrency": concurrency, "rounds": rounds, "runs": runs}


def report(result: dict[str, Any]) -> str:
    commits = {v["version"]: v["commit"] for v in result["versions"]}
    each = table(
        "Each run (bench.overhead's repeat path, DNS wait on)",
        ["version", "commit", "round", "database", "clients", "/ floor",
         "server CPU ms/req", "p50 ms", "p99 ms"],
        [[r["version"], commits[r["version"]], r["round"], r["database"], r["concurrency"],
          f"{r['floor_ratio']:.3f}", r["server_cpu_ms_per_request"], r["p50_ms"],
          r["p99_ms"]] for r in result["runs"]])
    groups: dict[tuple[str, str, int], list[float]] = {}
    for r in result["runs"]:
        groups.setdefault((r["version"], r["database"], r["concurrency"]),
                          []).append(r["floor_ratio"])
    summary = table(
        "Per version: ratio to the floor over the rounds",
        ["version", "commit", "database", "clients", "lowest", "median", "highest"],
        [[v, commits[v], db, c, f"{min(x):.3f}", f"{statistics.median(x):.3f}",
          f"{max(x):.3f}"] for (v, db, c), x in groups.items()])
    return each + "\n" + summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("versions", nargs="+", metavar="VERSION",
                        help="a git revision, or a directory holding a checkout ('.')")
    parser.add_argument("--databases", default="sqlite", help="sqlite, postgres or both")
    parser.add_argument("--concurrency", default="8")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000,
                        help="per level and side, as bench.overhead's")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="cap per level and side, as bench.overhead's")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="also write compare.json there")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    result = compare(args.versions, databases=args.databases, concurrency=args.concurrency,
                     rounds=args.rounds, requests=args.requests, seconds=args.seconds)
    print(report(result))
    if args.results_dir is not None:
        write_result(NAME, result, args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
