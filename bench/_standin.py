"""The DigitalOcean stand-in in a process of its own, for the benchmarks.

A separate process keeps the stand-in's work off the load generator's interpreter (one
GIL, two cores). Started by ``bench.common.StandinProcess``: argv[1] is a JSON object
(token, zones, per_minute, per_hour); the child prints one JSON line with its addresses
and runs until its stdin closes, so it never outlives the benchmark that started it.
"""

from __future__ import annotations

import json
import sys

from app.standin import RateLimits, Standin


def main() -> int:
    options = json.loads(sys.argv[1])
    limits = RateLimits(per_minute=options["per_minute"], per_hour=options["per_hour"])
    with Standin(token=options["token"], zones=options["zones"], rate_limits=limits) as standin:
        host, port = standin.dns_address
        print(json.dumps({"api_url": standin.api_url, "dns_host": host, "dns_port": port}),
              flush=True)
        # Blocks until the parent closes our stdin (or dies).
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
