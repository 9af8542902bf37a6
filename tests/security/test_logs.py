"""Logs as an attack surface: forged lines in text logs, SQL parameters in errors."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from app import logs
from app.db.engine import create_engine
from tests.security.support import app_harness_factory
from tests.support.asgi import asgi_request

FORGED = ("2026-12-02 04:00:00,000 WARNING acme_delegate.accounts event=auth.refused "
          "account=00000000-0000-4000-8000-000000000000 reason=wrong_subdomain "
          "client=203.0.113.77")


@pytest.fixture
def configured(request: pytest.FixtureRequest) -> Iterator[None]:
    """Root logging as ``serve`` sets it up, put back afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


@pytest.fixture
def build(make_settings: Any, do_state: Any) -> Any:
    return app_harness_factory(make_settings, do_state)


@pytest.mark.parametrize("separator", ["%0A", "%0D", "%0D%0A", "%1B%5B2K%0D", "%C2%85",
                                       "%E2%80%A8"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_text_logs_cannot_be_forged_through_the_path(
        build: Any, configured: None, capsys: Any, separator: str) -> None:
    """A path with a line break (or ESC, NEL, U+2028) and a complete fake ``auth.refused``
    line after it: the text log shows one line, with the break escaped; no line starts
    with the forged text, which fail2ban-style tools would act on."""
    logs.configure("INFO", "text")
    async with build() as h:
        path = f"/x{separator}{FORGED.replace(' ', '%20')}".encode()
        await asgi_request(h.app, "GET", path)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert not any(line.startswith("2026-12-02 04:00:00,000") for line in lines), err
    assert not any("\x1b" in line or "\x85" in line or "\u2028" in line for line in lines)
    access = [line for line in lines if "event=http.request" in line and "203.0.113.77" in line]
    assert len(access) == 1, err
    assert "route=unmatched" in access[0] and "status=404" in access[0]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_json_logs_keep_what_was_sent(build: Any, configured: None, capsys: Any) -> None:
    """JSON lines stay JSON: the path field holds the decoded newline, escaped by JSON."""
    logs.configure("INFO", "json")
    async with build() as h:
        await asgi_request(h.app, "GET", b"/x%0Ay")
    access = [json.loads(line) for line in capsys.readouterr().err.splitlines()
              if '"http.request"' in line]
    assert [a["fields"]["path"] for a in access] == ["/x\ny"]


def test_every_text_field_escapes_control_characters(configured: None, capsys: Any) -> None:
    logs.configure("INFO", "text")
    log = logging.getLogger("acme_delegate.test")
    logs.event(log, "probe", value="a\nb\rc\x1bd\x00e\x7ff\u2028g\\h\"i")
    log.warning("plain message with\na break")
    try:
        raise ValueError("boom\n" + FORGED)
    except ValueError:
        log.exception("failed")
    lines = capsys.readouterr().err.splitlines()
    assert r'value="a\nb\rc\x1bd\x00e\x7ff\u2028g\\h\"i"' in lines[0], lines[0]
    assert lines[1].endswith(r"plain message with\na break")
    assert not any(line.startswith(FORGED[:23]) for line in lines), lines
    assert all(line.startswith(("  | ", "20")) for line in lines), lines


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_database_errors_never_carry_their_parameters(database_url: str) -> None:
    """``hide_parameters``: the text of a failed statement (which a traceback at DEBUG
    logs) names no parameter, such as a key hash being compared."""
    secret = "sha256$" + "5ecret" * 10
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(sqlalchemy.exc.DBAPIError) as raised:
                await conn.execute(text("SELECT no_such_column FROM accounts WHERE key_hash = :h"),
                                   {"h": secret})
    finally:
        await engine.dispose()
    assert secret not in str(raised.value)
    assert "hidden" in str(raised.value)
