"""Which DigitalOcean zone holds a name: longest label-boundary suffix match."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from app.core.names import is_within, longest_zone
from app.core.ports import DnsProvider
from app.errors import ProviderError, ProviderUnavailable, ZoneNotFound


class ZoneResolver:
    """Caches the account's zone list; ``allowed`` (ZONES) narrows what may be written."""

    def __init__(
        self,
        provider: DnsProvider,
        *,
        allowed: Sequence[str] = (),
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        self._allowed = tuple(allowed)
        self._ttl = ttl
        self._clock = clock
        self._zones: list[str] | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def zones(self) -> list[str]:
        async with self._lock:
            if self._zones is None or self._clock() - self._fetched_at > self._ttl:
                try:
                    zones = await self._provider.list_zones()
                except ProviderError as exc:
                    raise ProviderUnavailable(
                        f"could not list DigitalOcean zones: {exc}", retry_after=exc.retry_after
                    ) from exc
                self._zones = sorted({zone.lower().rstrip(".") for zone in zones})
                self._fetched_at = self._clock()
            return self._zones

    def permits(self, name: str) -> bool:
        return not self._allowed or any(is_within(name, entry) for entry in self._allowed)

    async def zone_for(self, name: str) -> str:
        """The zone for ``name``, or ZoneNotFound with a message a person can act on."""
        if not self.permits(name):
            raise ZoneNotFound(f"{name} is outside the zones this service may write (ZONES)")
        zone = longest_zone(name, await self.zones())
        if zone is None:
            raise ZoneNotFound(f"no zone of the DigitalOcean account contains {name}")
        return zone
