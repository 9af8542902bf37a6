"""Every error the service raises on purpose, in one hierarchy.

Layers raise these; each edge translates them once: the HTTP layer (``app.api.errors``)
turns a ``DomainError`` into ``{"error": code}`` with its status (the only place that
knows statuses), the CLI (``app.cli.common``) turns a ``DomainError`` or an
``OperatorError`` into a message and exit status 1. Nothing here knows about HTTP, SQL
or DigitalOcean; ``str(exc)`` never holds a secret.

    AcmeDelegateError
    ├── DomainError               an answer to a client; ``code`` goes out as {"error": code}
    │   ├── Forbidden             forbidden: authentication or authorization failed (one
    │   │                         answer for every reason: a wrong key, another name, ...)
    │   ├── InvalidInput          bad_request: the request is malformed
    │   │   ├── MalformedJson     malformed_json_payload: the body is not one JSON object
    │   │   ├── BadTxt            bad_txt: not an ACME challenge value
    │   │   ├── InvalidAllowfrom  invalid_allowfrom_cidr: an allowfrom entry is no network
    │   │   └── InvalidDomain     invalid_domain: not a domain this service can bind
    │   ├── ZoneNotFound          zone_not_found: the name lies in no zone we may write
    │   ├── NameInUse             name_in_use: another active account is bound to the name
    │   ├── AccountNotFound       account_not_found (also: revoked, for rotate)
    │   ├── RegistrationClosed    registration_closed: /register refuses this caller
    │   ├── TooManyRequests       too_many_requests: an abuse limit; ``retry_after`` says
    │   │                         when to come back
    │   ├── NotConfigured         not_configured: a feature needs a setting that is absent
    │   │   └── AdminApiDisabled  admin_api_disabled: no admin token is configured
    │   └── ProviderUnavailable   dns_provider_unavailable: the DNS provider failed and
    │                             nothing was left half-done; ``retry_after`` is a hint
    ├── ProviderError             a DNS provider call failed (``app.core.ports.DnsProvider``);
    │   │                         never shown to a client: the core settles it and raises
    │   │                         ProviderUnavailable. ``ambiguous``: the change may have
    │   │                         happened anyway, so look before assuming either outcome
    │   ├── ProviderFailed        5xx, timeouts, connection failures, malformed answers, a
    │   │                         rate limit too long to wait out
    │   ├── ProviderRejected      a 4xx: the request itself was refused, nothing changed
    │   │   └── ProviderAuthError 401/403: the token is wrong, expired or lacks a scope
    │   ├── RecordMissing         the record id is not there (deleted behind our back)
    │   ├── NotPermitted          the token may not do this (e.g. no ``domain:update``)
    │   └── BudgetExhausted       no request slot within the allowed wait; nothing was sent
    └── OperatorError             for the person running the service: the message says
        │                         what to change
        ├── StartupError          the configuration cannot work (token refused, delegation
        │                         domain in no zone, ...)
        ├── DatabaseUrlError      DATABASE_URL is no database URL we support (a ValueError)
        ├── DatabaseBusy          another process serves this SQLite database
        ├── SourceError           an acme-dns database to import cannot be read
        └── HookError             the certbot hook cannot do its work (credentials file,
                                  server answer)

Errors that come from libraries (a database out of reach, a full connection pool, a
request FastAPI could not parse) are not wrapped: ``app.api.errors`` answers them too.
"""

from __future__ import annotations


class AcmeDelegateError(Exception):
    """Base of every error the service raises on purpose."""


# Answers to a client


class DomainError(AcmeDelegateError):
    """Base of the answers: ``code`` is the public error code, ``str(exc)`` a safe detail."""

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


class AdminApiDisabled(NotConfigured):
    code = "admin_api_disabled"


class ProviderUnavailable(DomainError):
    """The DNS provider could not complete the change; ``retry_after`` is a hint in seconds."""

    code = "dns_provider_unavailable"

    def __init__(self, detail: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


# The DNS provider


class ProviderError(AcmeDelegateError):
    """A DNS provider call failed.

    ``ambiguous`` is True when the change may have happened anyway (the request was sent
    and the answer lost, or a 5xx came back), so the caller must look before it assumes
    either outcome. ``status`` and ``error_id`` are the provider's answer, when it gave
    one (``error_id`` a short identifier, never a body)."""

    def __init__(
        self,
        message: str,
        *,
        ambiguous: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
        error_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous
        self.retry_after = retry_after
        self.status = status
        self.error_id = error_id


class ProviderFailed(ProviderError):
    """5xx, timeouts, connection failures, malformed answers, or a rate limit too long to
    wait out."""


class ProviderRejected(ProviderError):
    """A 4xx answer: the request itself was refused, nothing changed."""


class ProviderAuthError(ProviderRejected):
    """401/403: the token is wrong, expired or lacks a scope."""


class RecordMissing(ProviderError):
    """The record id is not there (deleted behind the service's back)."""


class NotPermitted(ProviderError):
    """The token may not do this (a missing scope, e.g. ``domain:update``)."""


class BudgetExhausted(ProviderError):
    """No request slot within the allowed wait (``app.pacing.budget``); nothing was sent."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("DigitalOcean request budget exhausted for now",
                         retry_after=max(1.0, retry_after))


# For the operator


class OperatorError(AcmeDelegateError):
    """Addressed to the person running the service; the message says what to change."""


class StartupError(OperatorError):
    """The configuration cannot work; the message says what to change."""


class DatabaseUrlError(OperatorError, ValueError):
    """DATABASE_URL is not a database URL this service supports."""


class DatabaseBusy(OperatorError):
    """Another process serves this SQLite database."""


class SourceError(OperatorError):
    """The acme-dns database cannot be read; the message says why."""


class HookError(OperatorError):
    """What went wrong, said so that the person running certbot can fix it."""
