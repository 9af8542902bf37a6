"""Prometheus metrics and the per-request envelope: request id, timing, access log.

One ``Metrics`` per app (its own registry), so several apps in one process, as in
tests, never share counters.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import __version__
from app.core.models import AuditEvent
from app.core.names import IPNetwork
from app.core.reconcile import ReconcileReport
from app.logs import event, request_id

log = logging.getLogger("acme_delegate.http")

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_GOOD_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
# Methods are client-chosen: anything else is "other", so labels cannot grow without end.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_CLOSED = 499  # nginx's "client closed request"
REPAIR_KINDS = ("expired", "revoked", "retried", "retired", "trimmed", "forgotten", "adopted",
                "recreated", "ghosts")


@dataclass(frozen=True)
class LastCall:
    """The latest DigitalOcean call this process made: what the console's health shows."""

    at: datetime
    operation: str
    status: str  # an HTTP status, an exception name, or "budget_exhausted"

    @property
    def reached(self) -> bool:
        """DigitalOcean answered, and not with a server error."""
        return self.status.isdigit() and int(self.status) < 500


@dataclass(frozen=True)
class LastPass:
    """The latest reconcile pass of this process (None report: the pass failed)."""

    at: datetime
    seconds: float
    report: ReconcileReport | None


class Metrics:
    def __init__(self) -> None:
        self.last_call: LastCall | None = None
        self.last_pass: LastPass | None = None
        self.ratelimit_remaining: int | None = None
        r = self.registry = CollectorRegistry()
        self.requests = Counter("acme_delegate_http_requests", "HTTP requests",
                                ["route", "method", "status"], registry=r)
        self.connections_refused = Counter(
            "acme_delegate_connections_refused",
            "Connections refused because their address held MAX_CONNECTIONS_PER_ADDRESS",
            registry=r)
        self._request_children: dict[tuple[str, str, int],
                                      tuple[Counter, Histogram]] = {}
        self.request_seconds = Histogram("acme_delegate_http_request_duration_seconds",
                                         "HTTP request latency", ["route"], buckets=_LATENCY,
                                         registry=r)
        self.outcomes = Counter("acme_delegate_operations", "Audited operations by outcome",
                                ["operation", "outcome"], registry=r)
        self.auth_failures = Counter("acme_delegate_auth_failures",
                                     "Refused authentications by reason", ["reason"],
                                     registry=r)
        self.do_requests = Counter("acme_delegate_digitalocean_requests",
                                   "DigitalOcean API calls by operation and status",
                                   ["operation", "status"], registry=r)
        self.do_seconds = Histogram("acme_delegate_digitalocean_request_duration_seconds",
                                    "DigitalOcean API call latency", ["operation"],
                                    buckets=_LATENCY, registry=r)
        self.do_remaining = Gauge("acme_delegate_digitalocean_ratelimit_remaining",
                                  "DigitalOcean's ratelimit-remaining, as last answered",
                                  registry=r)
        self.budget_free = Gauge("acme_delegate_digitalocean_budget_free",
                                 "Request slots free in the current minute (this process's view)",
                                 registry=r)
        self.budget_queue = Gauge(
            "acme_delegate_digitalocean_queue_depth",
            "Requests waiting for a DigitalOcean slot or holding a reservation, by lane "
            "(revocation, client, housekeeping); every replica's on PostgreSQL",
            ["lane"], registry=r)
        self.rotation_in_place = Gauge(
            "acme_delegate_digitalocean_rotation_in_place",
            "1 while new values overwrite records in place; 0 once DigitalOcean refused an "
            "update (403: the token lacks domain:update) and new values cost a create and a "
            "delete", registry=r)
        self.rotation_in_place.set(1)
        self.live_values = Gauge("acme_delegate_txt_values", "TXT values by state",
                                 ["state"], registry=r)
        self.reconcile_runs = Counter("acme_delegate_reconcile_runs", "Reconcile passes",
                                      ["outcome"], registry=r)
        self.reconcile_repairs = Counter("acme_delegate_reconcile_repairs",
                                         "What reconcile passes repaired", ["kind"], registry=r)
        self.reconcile_seconds = Histogram("acme_delegate_reconcile_duration_seconds",
                                           "Reconcile pass duration", registry=r,
                                           buckets=(0.1, 0.5, 1, 5, 15, 60, 300))

        self.dns_waits = Counter("acme_delegate_dns_waits",
                                 "Waits for the nameservers after an update, by outcome: "
                                 "seen, timeout (answered 200 not yet seen), unchecked (no "
                                 "nameserver reachable), busy (too many waiting), known "
                                 "(seen served before: not asked again)",
                                 ["outcome"], registry=r)
        self.dns_wait_seconds = Histogram("acme_delegate_dns_wait_duration_seconds",
                                          "Time from the write to the nameservers serving "
                                          "the value", buckets=_LATENCY, registry=r)
        self.dns_waiting = Gauge("acme_delegate_dns_waiting",
                                 "Requests waiting for the nameservers now", registry=r)
        self.nameserver_up = Gauge("acme_delegate_nameserver_up",
                                   "1 while the nameserver answers queries, 0 while not",
                                   ["nameserver"], registry=r)
        self.build_info = Info("acme_delegate_build", "The running version", registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request. The labelled children are looked up once per (route,
        method, status): ``labels()`` takes a lock and checks its arguments every call.
        The keys are bounded: routes are the app's, methods a fixed set (else "other"),
        statuses what the app answers."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(route, method, str(status)),
                self.request_seconds.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # hooks the other modules call

    def digitalocean_call(self, operation: str, status: str, seconds: float,
                          remaining: str | None) -> None:
        self.do_requests.labels(operation, status).inc()
        if status != "budget_exhausted":  # nothing was sent: says nothing of reachability
            self.last_call = LastCall(datetime.now(UTC), operation, status)
        if seconds:
            self.do_seconds.labels(operation).observe(seconds)
        if remaining is not None and remaining.isdigit():
            self.ratelimit_remaining = int(remaining)
            self.do_remaining.set(self.ratelimit_remaining)

    def update_forbidden(self) -> None:
        self.rotation_in_place.set(0)

    def nameserver_reachable(self, nameserver: object, up: bool) -> None:
        # Labels are the configured nameservers only: a bounded set.
        self.nameserver_up.labels(str(nameserver)).set(1 if up else 0)

    def dns_waited(self, outcome: str, seconds: float) -> None:
        self.dns_waits.labels(outcome).inc()
        if outcome in ("seen", "timeout"):
            self.dns_wait_seconds.observe(seconds)

    def audited(self, item: AuditEvent) -> None:
        self.outcomes.labels(item.event, item.outcome).inc()
        if item.event == "auth.failed":
            self.auth_failures.labels(item.outcome).inc()

    def reconciled(self, report: ReconcileReport | None, seconds: float) -> None:
        self.last_pass = LastPass(datetime.now(UTC), seconds, report)
        if report is None:
            self.reconcile_runs.labels("failed").inc()
            return
        outcome = "skipped" if report.skipped else ("partial" if report.failures else "ok")
        self.reconcile_runs.labels(outcome).inc()
        if not report.skipped:
            self.reconcile_seconds.observe(seconds)
            for kind in REPAIR_KINDS:
                if getattr(report, kind):
                    self.reconcile_repairs.labels(kind).inc(getattr(report, kind))


def new_request_id() -> str:
    """A random UUID4 as 32 hex digits, as ``uuid.uuid4().hex`` spells it, without
    building a ``UUID`` (a third of the cost)."""
    return "%032x" % (int.from_bytes(os.urandom(16)) & _UUID4_KEEP | _UUID4_SET)


# UUID4: version 4 in the top nibble of the 7th byte, variant 10 in the 9th byte's top bits.
_UUID4_KEEP = ((1 << 128) - 1) ^ (0xF000 << 64) ^ (0xC000 << 48)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


class Observe:
    """Request id (a sane incoming X-Request-ID, else a new one), metrics, access log.

    Works on the ASGI scope alone (no ``Request``), and finds the client address once
    per request (``app.api.request.scope_client``, shared with the routes)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics,
                 trusted_proxies: Sequence[IPNetwork]) -> None:
        self.app = app
        self.metrics = metrics
        self.trusted = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from app.api.request import scope_client_label

        sent_path = scope["path"]  # as the client sent it; routing may normalise it
        # The first X-Request-ID, as Starlette's Headers.get would find it.
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        if _GOOD_REQUEST_ID.fullmatch(given):
            raw_id = given
            rid = given.decode("ascii")
        else:
            rid = new_request_id()
            raw_id = rid.encode("ascii")
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500
        answered = False
        gone = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                answered = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", raw_id)]
            await send(message)

        async def receive_watching() -> Message:
            nonlocal gone
            message = await receive()
            if message["type"] == "http.disconnect":
                gone = True
            return message

        try:
            await self.app(scope, receive_watching, send_with_id)
        finally:
            if not answered and gone:
                # The client went away before any answer (nginx's 499): not a server
                # error, so it never feeds a 5xx alert.
                status = CLIENT_CLOSED
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.request_done(route, method if method in _METHODS else "other",
                                      status, seconds)
            event(log, "http.request", method=method, path=sent_path[:200],
                  route=route, status=status, ms=round(seconds * 1000, 1),
                  client=scope_client_label(scope, self.trusted))
            request_id.reset(token)
