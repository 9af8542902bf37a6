"""The chart tests' own plumbing: without helm-sdkpy they skip with the install command,
except in CI, where they fail."""

from __future__ import annotations

import importlib.util

import pytest

from tests.deploy import chart_tools


@pytest.mark.parametrize("in_ci", [False, True])
def test_missing_helm_sdkpy_skips_or_fails_in_ci(monkeypatch: pytest.MonkeyPatch,
                                                   in_ci: bool) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "helm_sdkpy" else real_find_spec(name, *a))
    monkeypatch.setattr(chart_tools, "IN_CI", in_ci)
    expected = pytest.fail.Exception if in_ci else pytest.skip.Exception
    with pytest.raises(expected) as raised:
        chart_tools.require_helm()
    assert "pip install --ignore-requires-python helm-sdkpy cffi" in str(raised.value)


def test_dockerignore_matcher() -> None:
    from tests.deploy.test_image import dockerignore_excludes

    patterns = ["**", "!app/", "**/__pycache__", "!keep/**/x.txt"]
    assert dockerignore_excludes("README.md", patterns)
    assert not dockerignore_excludes("app/main.py", patterns)
    assert dockerignore_excludes("app/__pycache__/main.pyc", patterns)
    assert not dockerignore_excludes("keep/a/b/x.txt", patterns)
    assert dockerignore_excludes("keep/a/b/y.txt", patterns)
    assert not dockerignore_excludes("a.txt", ["*.md"])
    assert dockerignore_excludes("docs/a.md", ["docs"])
