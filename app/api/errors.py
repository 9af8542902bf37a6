"""The one place that turns errors into HTTP answers: always ``{"error": code}``.

``app.errors`` documents what each error means; this module says only what status each
gets. Besides the ``DomainError`` tree (``STATUS``) it answers what libraries raise:

- a path or method FastAPI does not serve, a body too large: their status, with a code;
- a request FastAPI could not validate: 400 ``bad_request``;
- the database's connection pool full: 503 ``overloaded`` with Retry-After;
- the database out of reach: 503 ``database_unavailable`` with Retry-After;
- anything else: 500 ``internal_error``, its details in the log only.
"""

from __future__ import annotations

import logging
import math

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from app import errors
from app.db.engine import UNREACHABLE_ERRORS, unavailable
from app.logs import event

log = logging.getLogger("acme_delegate.api")

STATUS: dict[type[errors.DomainError], int] = {
    errors.Forbidden: 401,
    errors.InvalidInput: 400,
    errors.ZoneNotFound: 422,
    errors.NameInUse: 409,
    errors.AccountNotFound: 404,
    errors.RegistrationClosed: 403,
    errors.NotConfigured: 501,
    errors.AdminApiDisabled: 403,
    errors.ProviderUnavailable: 503,
    errors.TooManyRequests: 429,
}

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
               408: "request_timeout",
               413: "payload_too_large"}


def error_response(status: int, code: str, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    return JSONResponse({"error": code}, status_code=status, headers=headers)


def status_of(exc: errors.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.DomainError)
    headers = None
    if isinstance(exc, errors.ProviderUnavailable | errors.TooManyRequests):
        retry = exc.retry_after if exc.retry_after is not None else 10
        headers = {"Retry-After": str(max(1, math.ceil(retry)))}
    return error_response(status_of(exc), exc.code, headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(400, "bad_request")


async def _pool_exhausted(request: Request, exc: Exception) -> JSONResponse:
    event(log, "request.overloaded", logging.WARNING, path=request.url.path)
    return error_response(503, "overloaded", {"Retry-After": "1"})


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """The database out of reach (down, restarting, connection lost): 503 with
    Retry-After, which clients retry, never a 500; anything else is unexpected."""
    if not unavailable(exc):
        return await _unexpected(request, exc)
    event(log, "request.database_unavailable", logging.WARNING, path=request.url.path,
          error=type(exc).__name__)
    return error_response(503, "database_unavailable", {"Retry-After": "5"})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Never leak internal text: the details go to the log, the client gets a code.
    event(log, "request.failed", logging.ERROR, path=request.url.path, error=type(exc).__name__)
    log.debug("unexpected error", exc_info=exc)
    return error_response(500, "internal_error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.DomainError, _domain_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(sqlalchemy.exc.TimeoutError, _pool_exhausted)
    unreachable: tuple[type[Exception], ...] = (sqlalchemy.exc.DBAPIError,
                                                *UNREACHABLE_ERRORS)
    for kind in unreachable:
        app.add_exception_handler(kind, _database_error)
    app.add_exception_handler(Exception, _unexpected)
