"""Dependencies that make route signatures read like prose."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.api.errors import ApiError
from app.api.request import basic_auth, bearer_token, client_address
from app.core.names import IPAddress
from app.wiring import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


@dataclass(frozen=True)
class Client:
    address: IPAddress | None

    @property
    def label(self) -> str | None:
        return str(self.address) if self.address else None


def get_client(request: Request, services: Annotated[Services, Depends(get_services)]) -> Client:
    return Client(client_address(request, services.settings.trusted_proxies))


def _same_secret(given: str, expected: str) -> bool:
    # Compare digests so that neither the content nor the length leaks through timing.
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def admin_token_given(request: Request, services: Services) -> bool:
    """True when the request carries the admin token, as Bearer or as a Basic password.

    Basic lets Go clients such as lego pass it in the URL (https://x:TOKEN@host).
    """
    expected = services.settings.admin_token
    if expected is None:
        return False
    basic = basic_auth(request)
    given = bearer_token(request) or (basic[1] if basic else None)
    return given is not None and _same_secret(given, expected.get_secret_value())


def require_admin(request: Request, services: Annotated[Services, Depends(get_services)]) -> None:
    if services.settings.admin_token is None:
        raise ApiError(403, "admin_api_disabled")
    if not admin_token_given(request, services):
        raise ApiError(401, "forbidden")


ServicesDep = Annotated[Services, Depends(get_services)]
ClientDep = Annotated[Client, Depends(get_client)]
AdminDep = Depends(require_admin)
