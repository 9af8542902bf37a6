"""In-memory state shared by the stand-in's HTTP API and DNS server."""

from __future__ import annotations

import dataclasses
import math
import random
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

FIRST_RECORD_ID = 28448429
DEFAULT_ZONE_TTL = 1800
DEFAULT_RECORD_TTL = 1800
SOA_NEGATIVE_TTL = 1800
DEFAULT_NAMESERVERS = ("ns1.digitalocean.com", "ns2.digitalocean.com", "ns3.digitalocean.com")
MINUTE = 60.0
# Enough for any test; bounds memory when the demo runs for days.
MAX_LOG_ENTRIES = 100_000
HOUR = 3600.0


class Clock(Protocol):
    """Time source; tests inject a fake one to move rate-limit windows."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        return time.monotonic()

    def time(self) -> float:
        """Wall-clock Unix time."""
        return time.time()


@dataclass(frozen=True, slots=True)
class Zone:
    """A domain (DigitalOcean calls zones "domains")."""

    name: str
    ttl: int = DEFAULT_ZONE_TTL
    serial: int = 0


@dataclass(frozen=True, slots=True)
class Record:
    """One DigitalOcean domain record; `name` is relative to its zone, `@` for the apex."""

    id: int
    zone: str
    type: str
    name: str
    data: str
    ttl: int = DEFAULT_RECORD_TTL
    priority: int | None = None
    port: int | None = None
    weight: int | None = None
    flags: int | None = None
    tag: str | None = None

    @property
    def fqdn(self) -> str:
        """Fully qualified name without trailing dot, as the API's `name` filter wants it."""
        return self.zone if self.name == "@" else f"{self.name}.{self.zone}"

    def to_api(self) -> dict[str, Any]:
        """The JSON object DigitalOcean returns for this record."""
        return {
            "id": self.id,
            "type": self.type,
            "name": self.name,
            "data": self.data,
            "priority": self.priority,
            "port": self.port,
            "ttl": self.ttl,
            "weight": self.weight,
            "flags": self.flags,
            "tag": self.tag,
        }


@dataclass(frozen=True, slots=True)
class RequestLogEntry:
    """One request the API answered (control endpoints are not logged)."""

    monotonic: float
    wall: float
    method: str
    path: str
    query: str
    status: int

    def to_json(self) -> dict[str, Any]:
        """JSON form for the control endpoint."""
        return dataclasses.asdict(self)


class Faults(BaseModel):
    """Fault injection settings; every field but `ghost_*` honours the `methods` filter.

    Deterministic counters (`*_next`) are decremented as they fire and are checked
    before the probabilities, which draw from a generator seeded with `seed`.
    """

    model_config = ConfigDict(extra="forbid")

    methods: list[str] | None = Field(default=None, description="None means every method")
    latency_ms: float = Field(default=0, ge=0)
    error_next: int = Field(default=0, ge=0)
    error_probability: float = Field(default=0, ge=0, le=1)
    error_status: int = Field(default=500, ge=500, le=599)
    ghost_next: int = Field(default=0, ge=0)
    ghost_probability: float = Field(default=0, ge=0, le=1)
    throttle_next: int = Field(default=0, ge=0)
    throttle_probability: float = Field(default=0, ge=0, le=1)
    throttle_retry_after: int = Field(default=1, ge=0)
    forbidden_methods: list[str] = Field(
        default_factory=list,
        description="methods answered 403 forbidden, as for a token without that scope "
                    "(PUT: no domain:update)")
    seed: int | None = None

    def applies_to(self, method: str) -> bool:
        """Whether the method filter lets faults hit this method."""
        return self.methods is None or method.upper() in {m.upper() for m in self.methods}


class RateLimits(BaseModel):
    """Per-token limits, both sliding windows like DigitalOcean's."""

    model_config = ConfigDict(extra="forbid")

    per_minute: int = Field(default=250, ge=1)
    per_hour: int = Field(default=5000, ge=1)


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Outcome of one rate-limit check, with the values for the response headers."""

    allowed: bool
    limit: int
    remaining: int
    reset: int
    retry_after: int | None = None


FaultKind = Literal["error", "ghost", "throttle"]


class StandinState:
    """Thread-safe store of zones, records, request log, rate windows and faults."""

    def __init__(
        self,
        *,
        rate_limits: RateLimits | None = None,
        nameservers: Iterable[str] = DEFAULT_NAMESERVERS,
        clock: Clock | None = None,
        propagation_delay: float = 0.0,
    ) -> None:
        self._lock = threading.RLock()
        self._clock: Clock = clock or SystemClock()
        self.nameservers: tuple[str, ...] = tuple(n.rstrip(".").lower() for n in nameservers)
        self._next_id = FIRST_RECORD_ID
        self._zones: dict[str, Zone] = {}
        self._records: dict[str, dict[int, Record]] = {}
        self._log: deque[RequestLogEntry] = deque(maxlen=MAX_LOG_ENTRIES)
        self._windows: dict[str, deque[float]] = {}
        self._rate_limits = rate_limits or RateLimits()
        self._faults = Faults()
        self._stalled = 0  # requests that have entered a latency stall, ever
        # Propagation: per zone, the versions its DNS will serve, oldest first, each
        # (visible from, serial, records). Empty while the delay is 0.
        self._propagation_delay = 0.0
        self._versions: dict[str, deque[tuple[float, int, tuple[Record, ...]]]] = {}
        self._rng = random.Random()  # noqa: S311 - fault dice, not secrets
        self.set_propagation_delay(propagation_delay)

    @property
    def clock(self) -> Clock:
        """The time source used for logs and rate windows."""
        return self._clock

    # Zones and records

    def add_zone(
        self, name: str, *, ttl: int = DEFAULT_ZONE_TTL, default_records: bool = True
    ) -> Zone:
        """Create a zone; like DigitalOcean, it starts with an SOA and three NS records."""
        name = _zone_name(name)
        with self._lock:
            if name in self._zones:
                raise ValueError(f"zone {name} already exists")
            zone = Zone(name=name, ttl=ttl, serial=int(self._clock.time()))
            self._zones[name] = zone
            self._records[name] = {}
            if default_records:
                # DigitalOcean lists these in every new zone; clients that "delete all
                # records" must cope with them, so the stand-in shows them too.
                self._insert(Record(0, name, "SOA", "@", str(SOA_NEGATIVE_TTL), ttl=1800))
                for ns in self.nameservers:
                    self._insert(Record(0, name, "NS", "@", f"{ns}.", ttl=1800))
            return self._zones[name]

    def remove_zone(self, name: str) -> bool:
        """Delete a zone and its records; False if it did not exist."""
        with self._lock:
            self._records.pop(_zone_name(name), None)
            self._versions.pop(_zone_name(name), None)
            return self._zones.pop(_zone_name(name), None) is not None

    def zones(self) -> list[Zone]:
        """All zones, sorted by name."""
        with self._lock:
            return sorted(self._zones.values(), key=lambda z: z.name)

    def get_zone(self, name: str) -> Zone | None:
        """The zone called `name`, if any."""
        with self._lock:
            return self._zones.get(_zone_name(name))

    def find_zone(self, fqdn: str) -> Zone | None:
        """Longest zone that contains `fqdn` on a label boundary."""
        labels = _zone_name(fqdn).split(".")
        with self._lock:
            for i in range(len(labels)):
                zone = self._zones.get(".".join(labels[i:]))
                if zone is not None:
                    return zone
        return None

    def add_record(
        self,
        zone: str,
        type: str,
        name: str,
        data: str,
        *,
        ttl: int = DEFAULT_RECORD_TTL,
        priority: int | None = None,
        port: int | None = None,
        weight: int | None = None,
        flags: int | None = None,
        tag: str | None = None,
    ) -> Record:
        """Store a record as given (no API validation); `name` is relative, `@` for the apex."""
        zone = _zone_name(zone)
        record = Record(
            0, zone, type.upper(), name.lower(), data, ttl, priority, port, weight, flags, tag
        )
        with self._lock:
            if zone not in self._zones:
                raise KeyError(zone)
            return self._insert(record)

    def add_records(
        self, zone: str, records: Iterable[tuple[str, str, str]], *, ttl: int = 1800
    ) -> list[Record]:
        """Bulk-seed (type, relative name, data) triples, e.g. 250 unrelated records."""
        return [self.add_record(zone, t, n, d, ttl=ttl) for t, n, d in records]

    def _insert(self, record: Record) -> Record:
        with self._lock:
            record = dataclasses.replace(record, id=self._next_id)
            self._next_id += 1
            self._records[record.zone][record.id] = record
            self._bump_serial(record.zone)
            return record

    def _bump_serial(self, zone: str) -> None:
        # Every change of a zone's records ends here: the place to publish a version.
        old = self._zones[zone]
        serial = max(old.serial + 1, int(self._clock.time()))
        self._zones[zone] = dataclasses.replace(old, serial=serial)
        if self._propagation_delay > 0:
            now = self._clock.monotonic()
            # A zone made since the delay was set was served empty before this change.
            versions = self._versions.setdefault(zone, deque([(now, old.serial, ())]))
            versions.append((now + self._propagation_delay, serial,
                             tuple(self._records[zone].values())))
            _drop_superseded(versions, now)

    # Propagation delay

    @property
    def propagation_delay(self) -> float:
        """Seconds before the DNS server serves a change of the records."""
        with self._lock:
            return self._propagation_delay

    def set_propagation_delay(self, seconds: float) -> None:
        """From now on, created, changed and deleted records reach the DNS server
        ``seconds`` after the change (as DigitalOcean's nameservers lag its API); until
        then it serves the zone as it was. 0 serves every change at once, and setting
        the delay publishes whatever was still waiting."""
        if not (seconds >= 0 and math.isfinite(seconds)):
            raise ValueError("the propagation delay is a finite number of seconds >= 0")
        with self._lock:
            self._propagation_delay = float(seconds)
            now = self._clock.monotonic()
            self._versions = {
                name: deque([(now, zone.serial, tuple(self._records[name].values()))])
                for name, zone in self._zones.items()
            } if seconds > 0 else {}

    def served(self, zone: str) -> tuple[int, list[Record]]:
        """The serial and records of a zone as its DNS server serves them now: the
        newest version that has propagated; KeyError if the zone is unknown."""
        zone = _zone_name(zone)
        with self._lock:
            versions = self._versions.get(zone)
            if not versions:
                return self._zones[zone].serial, list(self._records[zone].values())
            _drop_superseded(versions, self._clock.monotonic())
            _, serial, records = versions[0]
            return serial, list(records)

    def records(self, zone: str) -> list[Record]:
        """Records of one zone in creation order; KeyError if the zone is unknown."""
        with self._lock:
            return list(self._records[_zone_name(zone)].values())

    def all_records(self) -> list[Record]:
        """Every record of every zone."""
        with self._lock:
            return [r for zone in sorted(self._records) for r in self._records[zone].values()]

    def get_record(self, zone: str, record_id: int) -> Record | None:
        """One record by id within a zone."""
        with self._lock:
            return self._records.get(_zone_name(zone), {}).get(record_id)

    def find_records(self, fqdn: str, type: str | None = None) -> list[Record]:
        """Records whose fully qualified name is `fqdn` (any zone), optionally of one type."""
        fqdn = _zone_name(fqdn)
        with self._lock:
            return [
                r
                for zone in self._records.values()
                for r in zone.values()
                if r.fqdn == fqdn and (type is None or r.type == type.upper())
            ]

    def update_record(self, zone: str, record_id: int, **changes: Any) -> Record | None:
        """Change some fields of a record in place, keeping its id; None if it is not there."""
        zone = _zone_name(zone)
        with self._lock:
            old = self._records.get(zone, {}).get(record_id)
            if old is None:
                return None
            new = dataclasses.replace(old, **changes)
            self._records[zone][record_id] = new
            self._bump_serial(zone)
            return new

    def delete_record(self, zone: str, record_id: int) -> bool:
        """Remove a record; False if it was not there."""
        zone = _zone_name(zone)
        with self._lock:
            removed = self._records.get(zone, {}).pop(record_id, None)
            if removed is not None:
                self._bump_serial(zone)
            return removed is not None

    # Request log

    def log_request(self, method: str, path: str, query: str, status: int) -> None:
        """Append one answered API request to the log."""
        entry = RequestLogEntry(
            self._clock.monotonic(), self._clock.time(), method, path, query, status
        )
        with self._lock:
            self._log.append(entry)

    def requests(self) -> list[RequestLogEntry]:
        """Everything logged so far, oldest first."""
        with self._lock:
            return list(self._log)

    def requests_in_last(self, seconds: float = MINUTE) -> int:
        """How many requests were answered in the last `seconds`."""
        cutoff = self._clock.monotonic() - seconds
        with self._lock:
            return sum(1 for e in self._log if e.monotonic > cutoff)

    def max_requests_per_window(self, seconds: float = MINUTE) -> int:
        """The most requests seen in any sliding window of `seconds` (pacing tests)."""
        stamps = [e.monotonic for e in self.requests()]
        best, start = 0, 0
        for end, stamp in enumerate(stamps):
            while stamp - stamps[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    def clear_requests(self) -> None:
        """Forget the request log."""
        with self._lock:
            self._log.clear()

    # Rate limits

    @property
    def rate_limits(self) -> RateLimits:
        """Current per-token limits."""
        with self._lock:
            return self._rate_limits

    def set_rate_limits(self, limits: RateLimits) -> None:
        """Change the per-token limits; counted requests stay counted."""
        with self._lock:
            self._rate_limits = limits

    def check_rate(
        self, token: str, *, force_throttle: bool = False, retry_after: int = 1
    ) -> RateDecision:
        """Count one request for `token` unless a limit refuses it.

        Refused requests are not counted: DigitalOcean describes both windows as
        counting requests, and a client obeying retry-after must get back in once
        its oldest accepted request ages out, however often it was refused meanwhile.
        """
        now = self._clock.monotonic()
        wall = self._clock.time()
        with self._lock:
            limits = self._rate_limits
            window = self._windows.setdefault(token, deque())
            while window and window[0] <= now - HOUR:
                window.popleft()
            in_minute = [s for s in window if s > now - MINUTE]
            over_minute = len(in_minute) >= limits.per_minute
            over_hour = len(window) >= limits.per_hour
            allowed = not (force_throttle or over_minute or over_hour)
            if allowed:
                window.append(now)
            remaining = max(limits.per_hour - len(window), 0)
            oldest = window[0] if window else now
            reset = math.ceil(wall + (oldest + HOUR - now))
            retry: int | None = None
            if over_minute:
                retry = max(math.ceil(in_minute[0] + MINUTE - now), 1)
            elif force_throttle:
                retry = retry_after
            return RateDecision(allowed, limits.per_hour, remaining, reset, retry)

    # Faults

    @property
    def faults(self) -> Faults:
        """Current fault settings (a copy)."""
        with self._lock:
            return self._faults.model_copy()

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault settings and reseed the dice."""
        with self._lock:
            self._faults = faults.model_copy()
            self._rng = random.Random(faults.seed)  # noqa: S311 - fault dice, not secrets

    def update_faults(self, **changes: Any) -> Faults:
        """Change some fault settings, keeping the others."""
        with self._lock:
            merged = Faults.model_validate({**self._faults.model_dump(), **changes})
            self.set_faults(merged)
            return merged

    def latency(self, method: str) -> float:
        """Seconds to stall before answering a request with this method."""
        with self._lock:
            f = self._faults
            return f.latency_ms / 1000 if f.applies_to(method) else 0.0

    def stall_entered(self) -> None:
        """A request has arrived whole and now sleeps its latency (``stalled``)."""
        with self._lock:
            self._stalled += 1

    def stalled(self) -> int:
        """How many requests have arrived whole (head and body) and entered a latency
        stall: a test can tell that a request is at the stand-in, not yet answered, and
        that the client dying now no longer stops it."""
        with self._lock:
            return self._stalled

    def draw_fault(self, kind: FaultKind, method: str) -> bool:
        """Whether fault `kind` fires for this request; consumes a `*_next` count if so."""
        with self._lock:
            f = self._faults
            if kind != "ghost" and not f.applies_to(method):
                return False
            counter = f"{kind}_next"
            remaining: int = getattr(f, counter)
            if remaining > 0:
                setattr(f, counter, remaining - 1)
                return True
            probability: float = getattr(f, f"{kind}_probability")
            return probability > 0 and self._rng.random() < probability

    # Whole-state

    def reset(self, zones: Iterable[str] = ()) -> None:
        """Drop zones, records, log, rate windows and faults; then add `zones` afresh.

        Record ids keep counting up, as DigitalOcean never reuses them.
        """
        with self._lock:
            self._zones.clear()
            self._records.clear()
            self._log.clear()
            self._windows.clear()
            self._versions.clear()
            self.set_faults(Faults())
            for zone in zones:
                self.add_zone(zone)


def _drop_superseded(versions: deque[tuple[float, int, tuple[Record, ...]]],
                     now: float) -> None:
    """Keep the newest version already visible and those still to come."""
    while len(versions) > 1 and versions[1][0] <= now:
        versions.popleft()


def _zone_name(name: str) -> str:
    return name.strip().rstrip(".").lower()
