"""Any truthy CI value turns every skip into a failure; off CI a skip stays a skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SKIPPING = '''
import pytest

def test_skips():
    pytest.skip("PostgreSQL is not reachable")

def test_passes():
    pass
'''
SKIPPING_MODULE = '''
import pytest
pytest.importorskip("no_such_module_anywhere")

def test_never_collected():
    pass
'''


def run(tmp_path: Path, ci: str | None, name: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    (tmp_path / "test_skipping_module.py").write_text(SKIPPING_MODULE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(ROOT)
    # Only the hook under test: the installed plugins (schemathesis, hypothesis, xdist...)
    # cost about 3 s of CPU per run to import and play no part here.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "tests.strict_ci", "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path),
         str(tmp_path / name)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120, check=False)


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_any_truthy_ci_turns_skips_into_failures(tmp_path: Path, ci: str) -> None:
    result = run(tmp_path, ci, "test_skipping.py")
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode != 0, result.stdout
    assert "1 failed" in summary and "1 passed" in summary and "skipped" not in summary, \
        result.stdout
    assert "where nothing may skip" in result.stdout
    assert "PostgreSQL is not reachable" in result.stdout
    module = run(tmp_path, ci, "test_skipping_module.py")
    assert module.returncode != 0 and "1 error" in module.stdout, module.stdout
    assert "skipped" not in module.stdout.strip().splitlines()[-1], module.stdout


@pytest.mark.parametrize("ci", [None, "false", "0"])
def test_off_ci_a_skip_is_a_skip(tmp_path: Path, ci: str | None) -> None:
    result = run(tmp_path, ci, "test_skipping.py")
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout
    assert "1 passed" in summary and "1 skipped" in summary, result.stdout
    module = run(tmp_path, ci, "test_skipping_module.py")
    assert module.returncode == 5 and "1 skipped" in module.stdout, module.stdout
