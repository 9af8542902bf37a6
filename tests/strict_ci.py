"""Under CI nothing skips: a pytest plugin (loaded by tests/conftest.py) that turns every
skip, of a test or of a whole module, into a failure when ``CI`` is set to any truthy
value (``true``, ``1``, ``yes``…: CI systems differ). A missing component is then
installed by ``.ci/run``, never silently left out."""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

_FALSY = ("", "0", "false", "no", "off")
IN_CI = os.environ.get("CI", "").strip().lower() not in _FALSY


def _reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _fail(report: pytest.TestReport | pytest.CollectReport) -> None:
    ci = os.environ.get("CI", "")
    report.outcome = "failed"
    report.longrepr = (f"skipped under CI={ci!r}, where nothing may skip "
                       f"(install what is missing in .ci/run): {_reason(report.longrepr)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        _fail(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if IN_CI and report.skipped:
        _fail(report)
