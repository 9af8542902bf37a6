"""Which nameservers serve which TXT values at a name: the one propagation checker.

Used by the ``/update`` and ``/present`` wait (200 once DigitalOcean's nameservers serve
the value), the certbot hook and ``accounts check``. It asks the nameservers directly
(recursion off, no resolver cache in between), with dnspython over asyncio.

The API, in the order one meets it::

    checker = PropagationChecker(parse_nameservers("ns1.example:53,ns2.example:53"))
    await checker.probe("example.org")            # reachability, once (start-up)
    answers = await checker.answers(name)         # what each nameserver serves, now
    served = await checker.serving(name, values)  # {nameserver: True/False/None}
    result = await checker.wait(name, values, timeout=20)  # WaitResult
    checker.confirmed  # ConfirmedValues: what /update need not wait for again
    await checker.close()

Reachability: a nameserver that does not answer (timeout, network error, a host name
that does not resolve) ``DOWN_AFTER`` times in a row, or once in ``probe``, is *down*:
waits stop counting on it, so a cluster without DNS egress does not make every request
wait for nothing. Down nameservers are asked again at most every ``REPROBE_SECONDS``, in
the background. A nameserver that answers, whatever its answer (NXDOMAIN, REFUSED), is
reachable.

Waits share one poller: each name is asked once per round whatever the number of
waiters for it, rounds for a name back off from ``interval`` to ``max_interval``, and at
most ``max_queries`` queries are in flight at once. A new waiter's name is asked at
once, so a value that is already served costs one round trip, no sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from app.logs import event

log = logging.getLogger("acme_delegate.propagation")

DEFAULT_TIMEOUT = 2.0  # seconds for one query
DOWN_AFTER = 2  # unanswered queries in a row that make a nameserver down
REPROBE_SECONDS = 60.0
MAX_QUERIES = 64
MAX_WAITERS = 1000
MAX_CONFIRMED = 10_000  # names whose confirmed values are remembered (about 1 MB)


class Nameserver(NamedTuple):
    """A nameserver to ask: host name or address, and port."""

    host: str
    port: int = 53

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


DIGITALOCEAN_NAMESERVERS = (Nameserver("ns1.digitalocean.com"),
                            Nameserver("ns2.digitalocean.com"),
                            Nameserver("ns3.digitalocean.com"))


def parse_nameserver(text: str) -> Nameserver:
    """``HOST:PORT``, ``HOST`` (port 53) or ``[v6]:PORT``; ValueError otherwise."""
    text = text.strip()
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"not a nameserver address: {text!r} (HOST:PORT)")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, "53"
    if (not host or any(c in host for c in "[]/@ \t") or not (port.isascii() and port.isdigit())
            or not 0 < int(port) < 65536):
        raise ValueError(f"not a nameserver address: {text!r} (HOST:PORT)")
    return Nameserver(host, int(port))


def parse_nameservers(text: str) -> list[Nameserver]:
    """A comma- or space-separated list of ``parse_nameserver`` addresses."""
    return [parse_nameserver(part) for part in text.replace(",", " ").split()]


@dataclass(frozen=True)
class Answer:
    """What one nameserver said about one name."""

    nameserver: Nameserver
    values: frozenset[str] = frozenset()  # the TXT strings it serves there
    rcode: str | None = None  # NOERROR, NXDOMAIN, REFUSED...; None when it did not answer
    error: str | None = None  # why it did not answer: timeout, unresolvable, an OS error

    @property
    def answered(self) -> bool:
        return self.error is None

    def serves(self, values: Iterable[str]) -> bool:
        """True when it answered and serves every one of ``values``."""
        return self.answered and self.values.issuperset(values)


class WaitOutcome(enum.StrEnum):
    SEEN = "seen"  # every reachable nameserver serves the values
    TIMEOUT = "timeout"  # the bound passed first
    UNCHECKED = "unchecked"  # no nameserver is reachable: nothing to wait for
    BUSY = "busy"  # too many waits at once: this one was not started
    KNOWN = "known"  # confirmed before (ConfirmedValues): not asked again


@dataclass(frozen=True)
class WaitResult:
    outcome: WaitOutcome
    seconds: float
    # Nameservers not seen serving the values: the late ones after a TIMEOUT; after
    # SEEN, those that went down meanwhile.
    pending: tuple[Nameserver, ...] = ()
    # SEEN by every configured nameserver, none down: what ``ConfirmedValues`` may keep.
    everywhere: bool = False


class ConfirmedValues:
    """The values every nameserver was seen serving at a name, since this process last
    changed that name: a repeat of one needs no wait. A record that every nameserver
    served stays served until it changes, and this service is its only writer, so each
    of its writes to a name forgets the name (``forget``).

    A wait that was running when the name changed may have seen the value before the
    change reached the nameservers: ``confirm`` takes the ``ticket`` drawn before the
    wait and refuses it if the name changed since. Both maps are bounded; when the
    record of a name's last change is dropped for room, every wait begun before that
    change is refused (``_floor``), which is only ever too careful."""

    def __init__(self, size: int = MAX_CONFIRMED) -> None:
        self._size = size
        self._values: dict[str, set[str]] = {}  # least recently used first
        self._changed: dict[str, int] = {}  # name -> its last change's tick, oldest first
        self._tick = 0
        self._floor = 0

    @staticmethod
    def _key(name: str) -> str:
        return name.rstrip(".").lower()

    def known(self, name: str, value: str) -> bool:
        key = self._key(name)
        values = self._values.get(key)
        if values is None or value not in values:
            return False
        self._values[key] = self._values.pop(key)  # used: newest again
        return True

    def ticket(self) -> int:
        """To pass to ``confirm`` once the wait that starts now is over."""
        return self._tick

    def confirm(self, name: str, value: str, ticket: int) -> bool:
        """Remember ``value`` as served at ``name``, unless the name changed since
        ``ticket`` was drawn; says whether it did."""
        key = self._key(name)
        if self._changed.get(key, self._floor) > ticket:
            return False
        values = self._values.pop(key, set())
        values.add(value)
        self._values[key] = values
        if len(self._values) > self._size:
            del self._values[next(iter(self._values))]
        return True

    def forget(self, name: str) -> None:
        """``name`` changes (or just changed): none of its values is confirmed any more."""
        key = self._key(name)
        self._tick += 1
        self._values.pop(key, None)
        self._changed.pop(key, None)
        self._changed[key] = self._tick
        if len(self._changed) > self._size:
            oldest = next(iter(self._changed))
            self._floor = self._changed.pop(oldest)


# (query, address, port, timeout) -> response; injectable, like httpx's transport.
Query = Callable[[dns.message.Message, str, int, float], Awaitable[dns.message.Message]]


async def udp_then_tcp(query: dns.message.Message, address: str, port: int,
                       timeout: float) -> dns.message.Message:
    """dnspython's UDP query, retried over TCP when the answer is truncated."""
    response, _ = await dns.asyncquery.udp_with_fallback(query, address, port=port,
                                                         timeout=timeout)
    return response


@dataclass(eq=False)
class _Waiter:
    values: frozenset[str]
    pending: set[Nameserver]
    done: asyncio.Future[None]
    seen: set[Nameserver] = field(default_factory=set)


@dataclass(eq=False)
class _Watch:
    """The waiters for one name and when the name is next asked."""

    waiters: list[_Waiter] = field(default_factory=list)
    due: float = 0.0
    rounds: int = 0
    asking: bool = False


class PropagationChecker:
    """Asks a fixed set of nameservers about TXT values; see the module's docstring."""

    def __init__(
        self,
        nameservers: Sequence[Nameserver],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        interval: float = 0.25,
        max_interval: float = 2.0,
        max_queries: int = MAX_QUERIES,
        max_waiters: int = MAX_WAITERS,
        query: Query = udp_then_tcp,
        on_reachability: Callable[[Nameserver, bool], None] | None = None,
    ) -> None:
        if not nameservers:
            raise ValueError("at least one nameserver is needed")
        self.nameservers = tuple(dict.fromkeys(nameservers))
        self.timeout = timeout
        self.interval = interval
        self.max_interval = max_interval
        self.max_waiters = max_waiters
        self._query = query
        self._on_reachability = on_reachability
        self._failures = dict.fromkeys(self.nameservers, 0)
        self._addresses: dict[Nameserver, str] = {}
        self._limit: asyncio.Semaphore | None = None
        self._max_queries = max_queries
        self._watches: dict[str, _Watch] = {}
        self._waiting = 0
        self._wake: asyncio.Event | None = None
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_probe = -REPROBE_SECONDS
        self.confirmed = ConfirmedValues()

    # --- reachability ----------------------------------------------------------------

    def is_up(self, nameserver: Nameserver) -> bool:
        return self._failures[nameserver] < DOWN_AFTER

    def reachable(self) -> tuple[Nameserver, ...]:
        """The nameservers believed reachable now."""
        return tuple(ns for ns in self.nameservers if self.is_up(ns))

    def unreachable(self) -> tuple[Nameserver, ...]:
        return tuple(ns for ns in self.nameservers if not self.is_up(ns))

    async def probe(self, zone: str = ".") -> list[Answer]:
        """Ask every nameserver for ``zone``'s SOA now; one unanswered query is enough to
        count a nameserver as down, one answer (whatever its rcode) as up."""
        self._last_probe = time.monotonic()
        answers = await asyncio.gather(*(self._ask(ns, zone, dns.rdatatype.SOA, decisive=True)
                                         for ns in self.nameservers))
        return list(answers)

    def _note(self, answer: Answer, *, decisive: bool = False) -> None:
        ns = answer.nameserver
        was_up = self.is_up(ns)
        if answer.answered:
            self._failures[ns] = 0
        else:
            self._failures[ns] = DOWN_AFTER if decisive else self._failures[ns] + 1
            self._addresses.pop(ns, None)  # resolve its name again next time
        if self.is_up(ns) != was_up and not decisive:  # a probe's caller says it itself
            if was_up:
                event(log, "dns.nameserver_down", logging.WARNING, nameserver=str(ns),
                      error=answer.error)
            else:
                event(log, "dns.nameserver_up", nameserver=str(ns))
        if self._on_reachability is not None:
            self._on_reachability(ns, self.is_up(ns))

    def _reprobe_if_due(self) -> None:
        if not self.unreachable() or time.monotonic() - self._last_probe < REPROBE_SECONDS:
            return
        self._last_probe = time.monotonic()

        async def reprobe() -> None:
            await asyncio.gather(*(self._ask(ns, ".", dns.rdatatype.SOA)
                                   for ns in self.unreachable()))

        self._spawn(reprobe())

    # --- asking ----------------------------------------------------------------------

    async def answers(self, name: str) -> list[Answer]:
        """Ask every nameserver, down ones included, which TXT values it serves at
        ``name``, now."""
        return list(await asyncio.gather(*(self._ask(ns, name) for ns in self.nameservers)))

    async def serving(self, name: str, values: Collection[str]
                      ) -> dict[Nameserver, bool | None]:
        """For each nameserver: True if it serves all ``values`` at ``name``, False if it
        answers without them, None if it did not answer."""
        return {a.nameserver: (a.serves(values) if a.answered else None)
                for a in await self.answers(name)}

    async def _address(self, ns: Nameserver) -> str:
        known = self._addresses.get(ns)
        if known is not None:
            return known
        infos = await asyncio.get_running_loop().getaddrinfo(
            ns.host, ns.port, type=socket.SOCK_DGRAM)
        # IPv4 first: it is what works in most clusters.
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        address = str(infos[0][4][0])
        self._addresses[ns] = address
        return address

    async def _ask(self, ns: Nameserver, name: str,
                   rdtype: dns.rdatatype.RdataType = dns.rdatatype.TXT, *,
                   decisive: bool = False) -> Answer:
        if self._limit is None:
            self._limit = asyncio.Semaphore(self._max_queries)
        async with self._limit:
            answer = await self._exchange(ns, name, rdtype)
        self._note(answer, decisive=decisive)
        return answer

    async def _exchange(self, ns: Nameserver, name: str,
                        rdtype: dns.rdatatype.RdataType) -> Answer:
        try:
            async with asyncio.timeout(self.timeout):
                address = await self._address(ns)
        except (OSError, TimeoutError, UnicodeError):
            return Answer(ns, error="unresolvable")
        query = dns.message.make_query(name, rdtype)
        query.flags &= ~dns.flags.RD  # ask the nameserver itself, not a resolver
        try:
            response = await self._query(query, address, ns.port, self.timeout)
        except dns.exception.Timeout:
            return Answer(ns, error="timeout")
        except (dns.exception.DNSException, OSError) as exc:
            return Answer(ns, error=type(exc).__name__)
        found = frozenset(
            b"".join(rdata.strings).decode("utf-8", "replace")
            for rrset in response.answer if rrset.rdtype == dns.rdatatype.TXT
            for rdata in rrset
        )
        return Answer(ns, found, dns.rcode.to_text(response.rcode()))

    # --- waiting ---------------------------------------------------------------------

    async def wait(self, name: str, values: Iterable[str], *, timeout: float) -> WaitResult:
        """Return once every reachable nameserver serves all ``values`` at ``name``
        (SEEN), or when ``timeout`` seconds have passed (TIMEOUT). Holds nothing but a
        future while it waits."""
        started = time.monotonic()
        self._reprobe_if_due()
        servers = self.reachable()
        if not servers:
            return WaitResult(WaitOutcome.UNCHECKED, 0.0)
        if self._waiting >= self.max_waiters:
            return WaitResult(WaitOutcome.BUSY, 0.0, servers)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(frozenset(values), set(servers), loop.create_future())
        key = name.rstrip(".").lower()
        watch = self._watches.setdefault(key, _Watch())
        watch.waiters.append(waiter)
        watch.due = started  # a new waiter's name is asked at once
        self._waiting += 1
        self._start_poller()
        try:
            await asyncio.wait([waiter.done], timeout=timeout)
        finally:
            self._waiting -= 1
            watch.waiters.remove(waiter)
            if not watch.waiters and self._watches.get(key) is watch:
                del self._watches[key]
        seconds = time.monotonic() - started
        pending = tuple(ns for ns in servers if ns not in waiter.seen)
        if not waiter.done.done():
            waiter.done.cancel()
            return WaitResult(WaitOutcome.TIMEOUT, seconds, pending)
        outcome = WaitOutcome.SEEN if waiter.seen else WaitOutcome.UNCHECKED
        return WaitResult(outcome, seconds, pending,
                          everywhere=waiter.seen.issuperset(self.nameservers))

    def _start_poller(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="propagation-poller")

    async def _poll(self) -> None:
        """Ask each due name (one task per name, so a slow name delays no other), then
        sleep until the next one is due or a new waiter arrives."""
        assert self._wake is not None
        while self._watches:
            self._wake.clear()
            now = time.monotonic()
            for key, watch in list(self._watches.items()):
                if not watch.asking and watch.due <= now:
                    watch.asking = True
                    self._spawn(self._round(key, watch))
            due = [w.due for w in self._watches.values() if not w.asking]
            sleep = max(min(due) - time.monotonic(), 0.0) if due else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), sleep)

    async def _round(self, key: str, watch: _Watch) -> None:
        """One round for one name: ask the nameservers some waiter still waits for."""
        try:
            wanted = {ns for w in watch.waiters for ns in w.pending if self.is_up(ns)}
            answers = await asyncio.gather(*(self._ask(ns, key) for ns in wanted))
            for waiter in watch.waiters:
                for answer in answers:
                    if answer.serves(waiter.values):
                        waiter.pending.discard(answer.nameserver)
                        waiter.seen.add(answer.nameserver)
                if not any(self.is_up(ns) for ns in waiter.pending) and not waiter.done.done():
                    waiter.done.set_result(None)
            watch.rounds += 1
            watch.due = time.monotonic() + min(
                self.interval * 2 ** (watch.rounds - 1), self.max_interval)
        finally:
            watch.asking = False
            if self._wake is not None:
                self._wake.set()

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop polling; waits still running end as TIMEOUT at their own deadline."""
        tasks = [t for t in (self._poller, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._poller = None


async def discover_nameservers(name: str) -> list[Nameserver]:
    """The addresses of the nameservers of the zone that holds ``name``, found through
    the system's resolver (the certbot hook's default)."""
    resolver = dns.asyncresolver.Resolver()
    zone = await dns.asyncresolver.zone_for_name(name, resolver=resolver)
    servers: list[Nameserver] = []
    for ns in await resolver.resolve(zone, "NS"):
        for rdtype in ("A", "AAAA"):
            try:
                answer = await resolver.resolve(ns.target, rdtype)
            except dns.resolver.NoAnswer:
                continue
            servers.extend(Nameserver(rdata.address) for rdata in answer)
    return servers
