"""`python -m app.standin`: run the DigitalOcean stand-in until interrupted."""

from __future__ import annotations

import argparse
import threading

from app.standin.server import DEFAULT_TOKEN, Standin, StandinError
from app.standin.state import RateLimits


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start both servers, block until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m app.standin",
        description="Local DigitalOcean Domains API stand-in with an authoritative DNS server.",
    )
    parser.add_argument("--zone", action="append", default=[], help="zone to create (repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--http-port", type=int, default=8053)
    parser.add_argument("--dns-port", type=int, default=5353)
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="bearer token the API accepts")
    parser.add_argument("--rate-per-minute", type=int, default=250)
    parser.add_argument("--rate-per-hour", type=int, default=5000)
    parser.add_argument("--propagation-delay", type=float, default=0.0, metavar="SECONDS",
                        help="serve created, changed and deleted records in DNS only this "
                             "long after the change, as DigitalOcean's nameservers lag")
    args = parser.parse_args(argv)
    limits = RateLimits(per_minute=args.rate_per_minute, per_hour=args.rate_per_hour)
    try:
        standin = Standin(
            host=args.host,
            http_port=args.http_port,
            dns_port=args.dns_port,
            token=args.token,
            zones=args.zone,
            rate_limits=limits,
            propagation_delay=args.propagation_delay,
        ).start()
    except (StandinError, ValueError) as exc:
        parser.exit(1, f"error: {exc}\n")
    with standin:
        print(f"DigitalOcean API stand-in: {standin.api_url}/v2  (token {args.token})", flush=True)
        print(f"DNS server: {standin.dns_hostport} (UDP and TCP), changes served after "
              f"{args.propagation_delay:g} s", flush=True)
        print(f"Control: {standin.api_url}/_standin/  zones: {', '.join(args.zone) or 'none'}")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
