"""Domain errors.

Every error the core raises is a ``DomainError`` with a stable ``code``: the
string that goes out as ``{"error": code}``. The HTTP layer maps codes to
statuses in one place (``app.api.errors``); nothing here knows about HTTP.

    DomainError
    ├── Forbidden               authentication or authorization failed (one answer for all)
    ├── InvalidInput
    │   ├── MalformedJson
    │   ├── BadTxt
    │   ├── InvalidAllowfrom
    │   └── InvalidDomain
    ├── ZoneNotFound            the name lies in no zone this service may write
    ├── NameInUse               another active account is bound to that name
    ├── AccountNotFound
    ├── RegistrationClosed
    ├── TooManyRequests         an abuse limit; ``retry_after`` says when to come back
    ├── NotConfigured           a feature needs a setting that is absent
    └── ProviderUnavailable     DigitalOcean failed; nothing was left half-done
"""

from __future__ import annotations


class DomainError(Exception):
    """Base class: ``code`` is the public error code, ``str(exc)`` a safe detail."""

    code = "error"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.code)
        self.detail = detail or self.code


class Forbidden(DomainError):
    code = "forbidden"


class InvalidInput(DomainError):
    code = "bad_request"


class MalformedJson(InvalidInput):
    code = "malformed_json_payload"


class BadTxt(InvalidInput):
    code = "bad_txt"


class InvalidAllowfrom(InvalidInput):
    code = "invalid_allowfrom_cidr"


class InvalidDomain(InvalidInput):
    code = "invalid_domain"


class ZoneNotFound(DomainError):
    code = "zone_not_found"


class NameInUse(DomainError):
    code = "name_in_use"


class AccountNotFound(DomainError):
    code = "account_not_found"


class RegistrationClosed(DomainError):
    code = "registration_closed"


class TooManyRequests(DomainError):
    code = "too_many_requests"

    def __init__(self, detail: str | None = None, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class NotConfigured(DomainError):
    code = "not_configured"


class ProviderUnavailable(DomainError):
    """DigitalOcean could not complete the change; ``retry_after`` is a hint in seconds."""

    code = "dns_provider_unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
