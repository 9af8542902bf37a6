"""200 means live, as with acme-dns: the answer goes out once the nameservers serve it.

A route returns a ``LiveAnswer``; the wait happens when it is sent, after the route's
unit of work has committed. So it holds no database transaction, no name lock and
(``leave_in_flight``) no in-flight slot: only a future in the shared propagation poller.
The ``Acme-Delegate-DNS`` header says what the 200 means:

- ``live``: every reachable nameserver serves the value. A value this process already
  saw every nameserver serve, at a name it has not changed since, is not asked about
  again (``ConfirmedValues``): the repeats of a live value answer at once;
- ``pending``: ACME_DELEGATE_WAIT_FOR_DNS passed first (or too many requests were
  waiting). The record exists at DigitalOcean and will be served: still 200, because a
  retry could do nothing more, and clients that check DNS themselves (lego, cert-manager)
  carry on as they would have;
- ``unchecked``: no nameserver answers from here (DNS egress blocked): no wait;
- ``off``: ACME_DELEGATE_WAIT_FOR_DNS=0.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from app.api.guards import leave_in_flight
from app.core.keys import fingerprint
from app.logs import event
from app.observability import Metrics
from app.propagation import WaitOutcome
from app.wiring import Services

DNS_HEADER = "Acme-Delegate-DNS"
DNS_HEADER_DOC = {DNS_HEADER: {
    "description": "live: the nameservers serve the value; pending: WAIT_FOR_DNS passed "
                   "first (the record exists and will be served); unchecked: no nameserver "
                   "reachable from the service; off: WAIT_FOR_DNS=0",
    "schema": {"type": "string", "enum": ["live", "pending", "unchecked", "off"]}}}
log = logging.getLogger("acme_delegate.api")

_HEADER_VALUE = {
    WaitOutcome.SEEN: "live",
    WaitOutcome.KNOWN: "live",
    WaitOutcome.TIMEOUT: "pending",
    WaitOutcome.BUSY: "pending",
    WaitOutcome.UNCHECKED: "unchecked",
}


# JSONResponse's own rendering, with one encoder: ``json.dumps`` with these options
# builds a new encoder every call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, indent=None,
                           separators=(",", ":")).encode
_DNS_HEADER_RAW = DNS_HEADER.lower().encode("latin-1")


class LiveAnswer(JSONResponse):
    """``content`` with 200, sent once ``value`` is served at ``name`` or at the bound."""

    def __init__(self, content: Any, *, services: Services, name: str, value: str) -> None:
        super().__init__(content)
        self._services = services
        self._name = name
        self._value = value

    def render(self, content: Any) -> bytes:
        return _ENCODE(content).encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Not set through ``self.headers``: a MutableHeaders built to add one header.
        self.raw_headers.append((_DNS_HEADER_RAW, (await self._wait(scope)).encode("latin-1")))
        await super().__call__(scope, receive, send)

    async def _wait(self, scope: Scope) -> str:
        bound = self._services.settings.wait_for_dns
        if bound <= 0:
            return "off"
        metrics: Metrics = scope["app"].state.metrics
        propagation = self._services.propagation
        if propagation.confirmed.known(self._name, self._value):
            metrics.dns_waited(WaitOutcome.KNOWN, 0.0)
            if log.isEnabledFor(logging.DEBUG):  # the fingerprint is a hash: not for nothing
                event(log, "dns.wait", logging.DEBUG, name=self._name,
                      value=fingerprint(self._value), outcome=WaitOutcome.KNOWN)
            return _HEADER_VALUE[WaitOutcome.KNOWN]
        ticket = propagation.confirmed.ticket()
        leave_in_flight(scope)
        metrics.dns_waiting.inc()
        try:
            result = await propagation.wait(self._name, {self._value}, timeout=bound)
        finally:
            metrics.dns_waiting.dec()
        if result.everywhere:
            # Only a value every nameserver served: a pending one is asked about again.
            propagation.confirmed.confirm(self._name, self._value, ticket)
        metrics.dns_waited(result.outcome, result.seconds)
        late = result.outcome in (WaitOutcome.TIMEOUT, WaitOutcome.BUSY)
        event(log, "dns.wait", logging.WARNING if late else logging.INFO, name=self._name,
              value=fingerprint(self._value), outcome=result.outcome,
              seconds=round(result.seconds, 3),
              pending=",".join(map(str, result.pending)) or None)
        return _HEADER_VALUE[result.outcome]
