"""DigitalOcean Domains API v2 client: the only code that talks to DigitalOcean.

Knows the API's traps (see docs): record names come back relative; we send
them relative too, so the dotless-FQDN trap (``a.example.com`` becoming
``a.example.com.example.com``) cannot happen; the list filter ``name`` takes
the fully qualified name without a dot; lists are paginated at 200 and
followed by page number, never by a URL the server hands us (the token must
not leave for another host).

Errors: every failure is an ``app.errors.ProviderError`` (``ProviderFailed``,
``ProviderRejected``, ...), with a message that never contains the token.
Retries are bounded: 429 honours ``retry-after`` / ``ratelimit-reset`` up to
``max_wait``; 5xx and transport errors are retried for reads and deletes, but a
create that may have reached DigitalOcean is not repeated blindly: it fails as
*ambiguous* and the caller looks before it decides.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from app.core.names import is_within, relative_name
from app.errors import (
    BudgetExhausted,
    NotPermitted,
    ProviderAuthError,
    ProviderFailed,
    ProviderRejected,
    RecordMissing,
)
from app.logs import event
from app.pacing.budget import RateBudget

log = logging.getLogger("acme_delegate.digitalocean")

PAGE_SIZE = 200  # the API's maximum; the default of 20 makes five times the calls


@dataclass(frozen=True, slots=True)
class Record:
    id: int
    type: str
    name: str  # relative to the zone, "@" for the apex
    data: str
    ttl: int


def _record(raw: Any) -> Record:
    try:
        return Record(
            id=int(raw["id"]),
            type=str(raw["type"]),
            name=str(raw["name"]),
            data=str(raw["data"]),
            ttl=int(raw.get("ttl") or 0),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProviderFailed("DigitalOcean answered a malformed record") from exc


def _retry_after(response: httpx.Response, now: float) -> float | None:
    """Seconds to wait from ``retry-after``, else ``ratelimit-reset`` (httpx headers are
    case-insensitive)."""
    for header, absolute in (("retry-after", False), ("ratelimit-reset", True)):
        raw = response.headers.get(header)
        if raw is None:
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        wait = value - now if absolute else value
        return max(0.0, wait)
    return None


class DigitalOceanClient:
    """A small typed client over an injected ``httpx.AsyncClient``."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        token: str,
        base_url: str = "https://api.digitalocean.com",
        max_attempts: int = 4,
        max_wait: float = 20.0,
        budget: RateBudget | None = None,
        observe: Callable[[str, str, float, str | None], None] | None = None,
        may_write: Callable[[str], bool] = lambda name: True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._may_write = may_write
        self._http = http
        self._token = token
        self._base = base_url.rstrip("/")
        self._max_attempts = max_attempts
        self._max_wait = max_wait
        self._budget = budget
        self._observe = observe or (lambda operation, status, seconds, remaining: None)
        self._sleep = sleep
        self.calls = 0  # requests sent, for metrics and tests

    # public operations

    async def list_zones(self) -> list[str]:
        return [str(d["name"]) for d in await self._paginate("/v2/domains", {}, "domains",
                                                              "list_zones")]

    async def find_txt(self, zone: str, name: str) -> list[Record]:
        """TXT records at one fully qualified name (a failure-path and repair tool)."""
        self._check_name(zone, name)
        raw = await self._paginate(
            f"/v2/domains/{zone}/records", {"type": "TXT", "name": name}, "domain_records",
            "find_records",
        )
        return [_record(r) for r in raw]

    async def list_txt(self, zone: str) -> list[Record]:
        """Every TXT record of a zone, 200 a page (the reconciler's one read per zone)."""
        raw = await self._paginate(f"/v2/domains/{zone}/records", {"type": "TXT"},
                                   "domain_records", "list_records")
        return [_record(r) for r in raw]

    async def create_txt(self, zone: str, name: str, value: str, ttl: int) -> Record:
        self._check_name(zone, name)
        if not self._may_write(name):
            raise ProviderRejected("refusing to write at a name no account can be bound to")
        body = {"type": "TXT", "name": relative_name(name, zone), "data": value, "ttl": ttl}
        response = await self._request("POST", f"/v2/domains/{zone}/records", json=body,
                                       idempotent=False, operation="create_record")
        if response.status_code != 201:
            raise ProviderFailed(
                f"create answered {response.status_code}, expected 201",
                status=response.status_code, ambiguous=True,
            )
        record = _record(self._json(response).get("domain_record"))
        if record.data != value or record.type != "TXT":
            raise ProviderFailed("create answered a different record", ambiguous=True)
        return record

    async def update_txt(self, zone: str, name: str, record_id: int, value: str) -> Record:
        """Overwrite a TXT record's data in place (scope ``domain:update``): one call instead
        of a create and a delete. Not repeated when the answer is lost: the caller reads the
        record by id to learn what happened. ``RecordMissing`` on 404, ``NotPermitted``
        on 403."""
        self._check_name(zone, name)
        if not self._may_write(name):
            raise ProviderRejected("refusing to write at a name no account can be bound to")
        try:
            response = await self._request(
                "PUT", f"/v2/domains/{zone}/records/{int(record_id)}", json={"data": value},
                idempotent=False, operation="update_record")
        except ProviderRejected as exc:
            if exc.status == 404:
                raise RecordMissing("the record is gone") from exc
            if exc.status == 403:
                raise NotPermitted("the token may not update records (domain:update)") from exc
            raise
        if response.status_code != 200:
            raise ProviderFailed(
                f"update answered {response.status_code}, expected 200",
                status=response.status_code, ambiguous=True,
            )
        record = _record(self._json(response).get("domain_record"))
        if record.data != value or record.type != "TXT" or record.id != record_id:
            raise ProviderFailed("update answered a different record", ambiguous=True)
        return record

    async def get_record(self, zone: str, record_id: int) -> Record | None:
        """One record by id; None if it is not there."""
        try:
            response = await self._request(
                "GET", f"/v2/domains/{zone}/records/{int(record_id)}", idempotent=True,
                operation="get_record")
        except ProviderRejected as exc:
            if exc.status == 404:
                return None
            raise
        return _record(self._json(response).get("domain_record"))

    async def delete_record(self, zone: str, record_id: int) -> None:
        """Delete by id; a record already gone counts as deleted."""
        try:
            await self._request("DELETE", f"/v2/domains/{zone}/records/{int(record_id)}",
                                idempotent=True, operation="delete_record")
        except ProviderRejected as exc:
            if exc.status != 404:
                raise

    # plumbing

    @staticmethod
    def _check_name(zone: str, name: str) -> None:
        # Last line of defence: never write outside the zone we were told.
        if not is_within(name, zone):
            raise ProviderRejected("refusing a name outside its zone")

    async def _paginate(self, path: str, params: dict[str, str], key: str, operation: str
                        ) -> list[Any]:
        items: list[Any] = []
        page = 1
        while True:
            response = await self._request(
                "GET", path, params={**params, "per_page": str(PAGE_SIZE), "page": str(page)},
                idempotent=True, operation=operation,
            )
            body = self._json(response)
            chunk = body.get(key)
            if not isinstance(chunk, list):
                raise ProviderFailed(f"DigitalOcean answered without {key!r}")
            items.extend(chunk)
            links = body.get("links") or {}
            pages = links.get("pages") if isinstance(links, dict) else None
            if not chunk or not isinstance(pages, dict) or not pages.get("next"):
                return items
            page += 1
            if page > 10_000:
                raise ProviderFailed("DigitalOcean pagination does not end")

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError as exc:
            raise ProviderFailed("DigitalOcean answered non-JSON",
                                          status=response.status_code) from exc
        if not isinstance(body, dict):
            raise ProviderFailed("DigitalOcean answered unexpected JSON")
        return body

    async def _request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        operation: str,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        url = self._base + path
        for attempt in range(1, self._max_attempts + 1):
            last = attempt == self._max_attempts
            slot = None
            if self._budget is not None:
                # Raises BudgetExhausted (nothing sent, not ambiguous) past the bounded wait.
                try:
                    slot = await self._budget.acquire(self._max_wait)
                except BudgetExhausted:
                    self._observe(operation, "budget_exhausted", 0.0, None)
                    raise
            started = time.monotonic()
            self.calls += 1
            try:
                try:
                    response = await self._http.request(method, url, params=params, json=json,
                                                        headers=headers)
                finally:
                    if self._budget is not None:
                        # DigitalOcean counted it by now: its slot counts from here.
                        self._budget.answered(slot)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                self._observe(operation, type(exc).__name__, time.monotonic() - started, None)
                # Never reached DigitalOcean: safe to retry whatever the method.
                error = ProviderFailed(f"cannot reach DigitalOcean: {type(exc).__name__}")
                if last:
                    raise error from exc
                await self._backoff(attempt)
                continue
            except httpx.HTTPError as exc:
                self._observe(operation, type(exc).__name__, time.monotonic() - started, None)
                # Sent, answer lost: a create may have happened.
                error = ProviderFailed(
                    f"DigitalOcean request failed: {type(exc).__name__}", ambiguous=not idempotent
                )
                if last or not idempotent:
                    raise error from exc
                await self._backoff(attempt)
                continue
            status = response.status_code
            self._observe(operation, str(status), time.monotonic() - started,
                          response.headers.get("ratelimit-remaining"))
            if self._budget is not None:
                self._budget.observe(response.headers.get("ratelimit-remaining"),
                                     response.headers.get("ratelimit-reset"))
            event(log, "do.request", logging.DEBUG, method=method, path=path, status=status,
                  ms=round((time.monotonic() - started) * 1000, 1),
                  remaining=response.headers.get("ratelimit-remaining"))
            if status < 400:
                return response
            error_id = self._error_id(response)
            if status == 429:
                wait = _retry_after(response, time.time())
                if last or wait is None or wait > self._max_wait:
                    raise ProviderFailed(
                        "DigitalOcean rate limit reached", status=429, error_id=error_id,
                        retry_after=wait,
                    )
                event(log, "do.rate_limited", logging.WARNING, wait=round(wait, 1))
                await self._sleep(wait)
                continue
            if status >= 500:
                error = ProviderFailed(
                    f"DigitalOcean answered {status}", status=status, error_id=error_id,
                    ambiguous=not idempotent,
                )
                if last or not idempotent:
                    raise error
                await self._backoff(attempt)
                continue
            cls = ProviderAuthError if status in (401, 403) else ProviderRejected
            raise cls(f"DigitalOcean refused the request: {status} {error_id or ''}".strip(),
                      status=status, error_id=error_id)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _error_id(response: httpx.Response) -> str | None:
        try:
            body = response.json()
        except ValueError:
            return None
        value = body.get("id") if isinstance(body, dict) else None
        # Only a short identifier goes into messages: never echo a whole body.
        return value[:40] if isinstance(value, str) and value.isidentifier() else None

    async def _backoff(self, attempt: int) -> None:
        await self._sleep(min(self._max_wait, 0.25 * 2 ** (attempt - 1)) * random.uniform(0.5, 1))  # noqa: S311 (jitter)
