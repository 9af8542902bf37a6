"""Settings from the environment (prefix ``ACME_DELEGATE_``), checked at start-up."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.accounts import Registration
from app.core.names import IPNetwork, normalize_domain
from app.db.engine import async_url
from app.errors import DatabaseUrlError, InvalidDomain
from app.propagation import DIGITALOCEAN_NAMESERVERS, Nameserver, parse_nameserver

DEFAULT_DATABASE_URL = "sqlite:///var/acme-delegate.sqlite3"
DIGITALOCEAN_API_URL = "https://api.digitalocean.com"


def _split(value: object) -> object:
    """Comma- or space-separated lists, as people write them in an environment variable."""
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return value


def _read_secret_file(path: Path, setting: str) -> SecretStr:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror}") from exc
    if not text:
        raise ValueError(f"{setting}: {path} is empty")
    return SecretStr(text)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ACME_DELEGATE_", extra="ignore",
                                      hide_input_in_errors=True)

    database_url: str = DEFAULT_DATABASE_URL
    do_token: SecretStr | None = None
    do_token_file: Path | None = None
    do_api_url: str = DIGITALOCEAN_API_URL
    do_timeout: float = Field(default=10.0, gt=0, le=120)
    # DigitalOcean allows 250 a minute and 5,000 an hour per account: keep a margin for
    # whatever else uses the token.
    do_rate_per_minute: int = Field(default=240, ge=1, le=250)
    do_rate_per_hour: int = Field(default=4800, ge=1, le=5000)
    do_max_wait: float = Field(default=10.0, ge=0, le=120)
    delegation_domain: str | None = None
    zones: Annotated[list[str], NoDecode] = []
    registration: Registration = Registration.CLOSED
    admin_token: SecretStr | None = None
    admin_token_file: Path | None = None
    # The one secret REGISTRATION=token accepts. Clients keep it in a URL in their account
    # files (lego, acme.sh), so it opens /register and nothing else.
    registration_token: SecretStr | None = None
    registration_token_file: Path | None = None
    console: bool = True  # the operator console at /console/, served only with ADMIN_TOKEN
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = []
    public_url: str | None = None
    txt_ttl: int = Field(default=30, ge=30, le=86400)
    record_lifetime: int = Field(default=3600, ge=60)
    reconcile_interval: int = Field(default=300, ge=10)
    max_values_per_name: int = Field(default=2, ge=1, le=20)
    # Abuse limits; counters in memory per process unless LIMITS_STORAGE names Redis.
    auth_failures_per_minute: int = Field(default=20, ge=1)
    updates_per_minute: int = Field(default=60, ge=1)
    # Values that cost a DigitalOcean write, per credential an hour: a renewal needs one or
    # two (apex + wildcard), a few certificates on one name with retries stay far below;
    # a loop does not.
    new_values_per_hour: int = Field(default=30, ge=1)
    registrations_per_hour: int = Field(default=20, ge=1)
    registration_max_accounts: int = Field(default=10_000, ge=1)
    limits_storage: str = "memory://"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    max_in_flight: int = Field(default=500, ge=1)
    # Slow senders: seconds for a whole request head, and for a whole body; connections
    # one client address may hold (IPv6: one /64; TRUSTED_PROXIES exempt).
    head_timeout: float = Field(default=10.0, gt=0, le=300)
    body_timeout: float = Field(default=10.0, gt=0, le=300)
    max_connections_per_address: int = Field(default=32, ge=1)
    # /update and /present answer 200 once every nameserver serves the new value, waiting
    # at most this long (0: no waiting). Covers DigitalOcean's usual lag (certbot's plugin
    # waits 10 s) and stays under the 30 s HTTP timeouts of Go clients.
    wait_for_dns: float = Field(default=20.0, ge=0, le=300)
    nameservers: Annotated[list[Nameserver], NoDecode] = list(DIGITALOCEAN_NAMESERVERS)
    dns_timeout: float = Field(default=2.0, gt=0, le=30)  # one query to one nameserver
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # Swagger UI (/docs) and ReDoc (/redoc), served from the package (no CDN); off hides
    # them (the schema stays at /openapi.json).
    api_docs: bool = True

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            async_url(value)
        except DatabaseUrlError as exc:
            raise ValueError(str(exc)) from exc
        return value

    @field_validator("do_api_url", "public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("delegation_domain")
    @classmethod
    def _delegation_domain(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            return normalize_domain(value)
        except InvalidDomain as exc:
            raise ValueError(f"not a domain name: {exc.detail}") from exc

    @field_validator("zones", mode="before")
    @classmethod
    def _zones(cls, value: object) -> object:
        value = _split(value)
        if isinstance(value, list):
            try:
                return [normalize_domain(str(zone)) for zone in value]
            except InvalidDomain as exc:
                raise ValueError(f"not a domain name: {exc.detail}") from exc
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _trusted_proxies(cls, value: object) -> object:
        value = _split(value)
        if isinstance(value, list):
            try:
                return [ipaddress.ip_network(str(v), strict=False) for v in value]
            except ValueError as exc:
                raise ValueError(f"not an address or CIDR: {exc}") from exc
        return value

    @field_validator("nameservers", mode="before")
    @classmethod
    def _nameservers(cls, value: object) -> object:
        value = _split(value)
        if isinstance(value, list):
            try:
                value = [v if isinstance(v, tuple) else parse_nameserver(str(v)) for v in value]
            except ValueError as exc:
                raise ValueError(str(exc)) from exc
            if not value:
                raise ValueError("name at least one nameserver (HOST:PORT), or set "
                                 "ACME_DELEGATE_WAIT_FOR_DNS=0")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("one of DEBUG, INFO, WARNING, ERROR")
        return level

    @model_validator(mode="after")
    def _secret_files(self) -> Settings:
        for name in ("do_token", "admin_token", "registration_token"):
            file: Path | None = getattr(self, f"{name}_file")
            if file is None:
                continue
            setting = f"ACME_DELEGATE_{name.upper()}"
            if getattr(self, name) is not None:
                raise ValueError(f"set {setting} or {setting}_FILE, not both")
            setattr(self, name, _read_secret_file(file, f"{setting}_FILE"))
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both ACME_DELEGATE_TLS_CERT_FILE and ACME_DELEGATE_TLS_KEY_FILE")
        for tls_file in (self.tls_cert_file, self.tls_key_file):
            if tls_file is not None and not tls_file.is_file():
                raise ValueError(f"TLS file {tls_file} does not exist")
        if self.registration is Registration.TOKEN and self.registration_token is None:
            raise ValueError(
                "ACME_DELEGATE_REGISTRATION=token needs ACME_DELEGATE_REGISTRATION_TOKEN (or "
                "_FILE): the secret clients show to /register (never the admin token)")
        if (self.registration_token is not None and self.admin_token is not None
                and self.registration_token.get_secret_value()
                == self.admin_token.get_secret_value()):
            raise ValueError(
                "ACME_DELEGATE_REGISTRATION_TOKEN must differ from ACME_DELEGATE_ADMIN_TOKEN: "
                "clients store it in their account files")
        if self.registration is not Registration.CLOSED and not self.delegation_domain:
            raise ValueError(
                "registration hands out delegated names: set ACME_DELEGATE_DELEGATION_DOMAIN"
            )
        return self

    def token(self) -> str | None:
        return self.do_token.get_secret_value() if self.do_token else None
