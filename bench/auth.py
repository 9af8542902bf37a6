"""Authentication cost per request: ``app.core.keys.verify_key`` against bcrypt at cost 10.

    .venv/bin/python -m bench.auth [--seconds 2] [--bcrypt-rounds 20]

acme-dns stores keys with bcrypt at cost 10 (Go's ``bcrypt.DefaultCost``) and checks one
on every ``/update``. acme-delegate's keys are 240 random bits stored as SHA-256 and
compared in constant time (``verify_key``). Both are timed here, in one process, one
after the other, on the same 40-character keys:

* ``verify_key`` with the right key (a known user),
* ``verify_key`` with no stored hash (an unknown user: it checks a dummy hash, so a miss
  costs what a hit costs),
* ``bcrypt.checkpw`` against a cost-10 hash (what acme-dns pays), and ``verify_key`` on an
  imported acme-dns hash (the same bcrypt, until the first successful use rehashes it).

The ratio is bcrypt's median time over verify_key's. Time is per call, single-threaded.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import bcrypt

from app.core.keys import bcrypt_hash, hash_key, new_key, verify_key
from bench.common import machine, table, write_result

NAME = "auth"
BCRYPT_COST = 10
TARGET_RATIO = 1000


def time_calls(call: Callable[[], object], *, seconds: float, max_calls: int,
               batch: int) -> dict[str, Any]:
    """Calls in batches until ``seconds`` or ``max_calls``; per-call µs from each batch."""
    per_call: list[float] = []
    calls = 0
    deadline = time.perf_counter() + seconds
    while calls < max_calls and (time.perf_counter() < deadline or not per_call):
        n = min(batch, max_calls - calls)
        started = time.perf_counter()
        for _ in range(n):
            call()
        per_call.append((time.perf_counter() - started) / n * 1e6)
        calls += n
    return {
        "calls": calls,
        "median_us": round(statistics.median(per_call), 3),
        "min_us": round(min(per_call), 3),
        "max_us": round(max(per_call), 3),
        "per_second_one_core": round(1e6 / statistics.median(per_call)),
    }


def run(*, seconds: float = 2.0, bcrypt_calls: int = 20, results_dir: Path | None = None,
        show_progress: bool = True) -> dict[str, Any]:
    key = new_key()
    ours = hash_key(key)
    theirs = bcrypt.hashpw(key.encode(), bcrypt.gensalt(rounds=BCRYPT_COST))
    imported = bcrypt_hash(theirs.decode())
    assert verify_key(key, ours) and not verify_key(key, None)
    assert bcrypt.checkpw(key.encode(), theirs) and verify_key(key, imported)

    results = {
        "verify_key": time_calls(lambda: verify_key(key, ours), seconds=seconds,
                                 max_calls=10_000_000, batch=10_000),
        "verify_key_unknown_user": time_calls(lambda: verify_key(key, None), seconds=seconds,
                                              max_calls=10_000_000, batch=10_000),
        "bcrypt_checkpw_cost10": time_calls(lambda: bcrypt.checkpw(key.encode(), theirs),
                                            seconds=seconds, max_calls=bcrypt_calls, batch=1),
        "verify_key_imported_bcrypt": time_calls(lambda: verify_key(key, imported),
                                                 seconds=seconds, max_calls=max(3, bcrypt_calls
                                                                                // 4), batch=1),
    }
    ratio = results["bcrypt_checkpw_cost10"]["median_us"] / results["verify_key"]["median_us"]
    output = {
        "benchmark": NAME,
        "machine": machine(),
        "params": {"seconds_per_case": seconds, "bcrypt_calls": bcrypt_calls,
                   "bcrypt_cost": BCRYPT_COST, "bcrypt_version": version("bcrypt"),
                   "key_length": len(key)},
        "results": results,
        "ratio_bcrypt_over_verify_key": round(ratio, 1),
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
    }
    write_result(NAME, output, results_dir)
    return output


def report(result: dict[str, Any]) -> str:
    labels = {
        "verify_key": "verify_key (SHA-256, known user)",
        "verify_key_unknown_user": "verify_key (unknown user, dummy hash)",
        "bcrypt_checkpw_cost10": "bcrypt.checkpw, cost 10 (acme-dns)",
        "verify_key_imported_bcrypt": "verify_key on an imported acme-dns hash",
    }
    rows = [[labels[k], v["calls"], v["median_us"], v["per_second_one_core"]]
            for k, v in result["results"].items()]
    text = table("Authentication cost per request",
                 ["check", "calls", "median µs/call", "checks/s on one core"], rows)
    met = "met" if result["target_met"] else "MISSED"
    text += (f"\nbcrypt-10 / verify_key = {result['ratio_bcrypt_over_verify_key']:,.0f}x "
             f"(target >= {result['target_ratio']:,}x: {met})\n")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.auth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time cap per case")
    parser.add_argument("--bcrypt-rounds", type=int, default=20, dest="bcrypt_calls",
                        help="bcrypt checks to time (each ~50-100 ms)")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(seconds=args.seconds, bcrypt_calls=args.bcrypt_calls,
                 results_dir=args.results_dir)
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
