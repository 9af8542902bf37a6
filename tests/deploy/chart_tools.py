"""Helm, through PyPI's helm-sdkpy, for the chart tests: lint, and render by installing
into a fake cluster on loopback (helm-sdkpy has no `helm template` or dry run).

helm-sdkpy declares Python >= 3.12; its Lint and Install work on 3.11 installed with
``pip install --ignore-requires-python helm-sdkpy cffi`` (scripts/bootstrap does that).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "acme-delegate"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
INSTALL_HINT = (
    ".venv/bin/python -m pip install --ignore-requires-python helm-sdkpy==0.1.32 cffi==2.1.1"
)
from tests.strict_ci import IN_CI  # noqa: E402  (any truthy CI)

# Lint message severities (helm.sh/helm/v4/pkg/chart/v2/lint/support).
INFO, WARNING, ERROR = 1, 2, 3


@functools.cache
def _library_problem() -> str | None:
    """None when helm-sdkpy's native library loads (in a process of its own), else why."""
    probe = subprocess.run(
        [sys.executable, "-c", "import helm_sdkpy; print(helm_sdkpy.get_version())"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if probe.returncode != 0:
        return f"helm-sdkpy does not load: {probe.stderr.strip()[-500:]}"
    return None


def require_helm() -> None:
    """Skip (fail in CI) when helm-sdkpy or its native library cannot be loaded."""
    if importlib.util.find_spec("helm_sdkpy") is None:
        problem: str | None = "helm-sdkpy is not installed"
    else:
        problem = _library_problem()
    if problem is None:
        return
    message = (f"{problem}. The chart tests need Helm's library from PyPI's helm-sdkpy: "
               f"pip install --ignore-requires-python helm-sdkpy cffi ({INSTALL_HINT})")
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _run(request: dict[str, Any], workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    request_path, result_path = workdir / "request.json", workdir / "result.json"
    request_path.write_text(json.dumps(request))
    env = dict(os.environ)
    env.update(
        HELM_DRIVER="memory",
        HELM_CACHE_HOME=str(workdir / "helm-cache"),
        HELM_CONFIG_HOME=str(workdir / "helm-config"),
        HELM_DATA_HOME=str(workdir / "helm-data"),
        KUBECONFIG=str(workdir / "no-kubeconfig"),
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.deploy.helm_runner", str(request_path), str(result_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    if done.returncode != 0 or not result_path.exists():
        raise AssertionError(
            f"helm runner exited {done.returncode}\nstdout: {done.stdout[-3000:]}\n"
            f"stderr: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    result["log"] = done.stderr
    return result


@dataclass
class LintReport:
    messages: list[dict[str, Any]]

    def problems(self) -> list[str]:
        """Warnings and errors: where, since helm-sdkpy's JSON drops the error texts."""
        return [f"severity {m['Severity']} at {m['Path']}: {json.dumps(m.get('Err'))}"
                for m in self.messages if m["Severity"] >= WARNING]


def lint(chart: Path, workdir: Path) -> LintReport:
    outcome = _run({"action": "lint", "chart": str(chart)}, workdir)
    assert outcome["ok"], outcome
    result = outcome["result"]
    assert result["TotalChartsLinted"] >= 1, result
    return LintReport(messages=result["Messages"] or [])


def with_values_file(values_file: Path, workdir: Path) -> Path:
    """A chart that is ours with ``values_file`` applied, as ``helm -f FILE`` would.

    helm-sdkpy's Lint takes no values and the tests have no YAML parser, so Helm applies
    the file itself: the returned chart is a parent whose only dependency is a copy of
    ours, and whose values.yaml is the file nested under our chart's name. Helm merges a
    parent's values into a dependency's the way it merges -f values, and validates the
    result against our values.schema.json.
    """
    parent = workdir / "with-values"
    if parent.exists():
        shutil.rmtree(parent)
    (parent / "charts").mkdir(parents=True)
    (parent / "templates").mkdir()  # lint warns of a chart without one
    shutil.copytree(CHART, parent / "charts" / CHART.name)
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: values-harness\nversion: 0.0.0\n"
        "description: Applies a values file to acme-delegate for the tests.\n"
        f"dependencies:\n  - name: {CHART.name}\n    version: '*'\n")
    nested = "".join(f"  {line}" if line.strip() else line
                      for line in values_file.read_text().splitlines(keepends=True))
    (parent / "values.yaml").write_text(f"{CHART.name}:\n{nested}")
    return parent


@dataclass
class Rendered:
    """What Helm sent the (fake) cluster, as JSON objects, and the release it reported."""

    objects: list[dict[str, Any]]
    release: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if component is None or
                 o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component]
        assert len(found) == 1, f"{len(found)} {kind} objects: {[o['metadata'] for o in found]}"
        return found[0]

    @property
    def notes(self) -> str:
        return str(self.release.get("info", {}).get("notes", ""))

    def hooks(self) -> list[dict[str, Any]]:
        return [o for o in self.objects
                if "helm.sh/hook" in (o["metadata"].get("annotations") or {})]


class RenderError(Exception):
    pass


def render_many(cases: list[dict[str, Any] | None], *, chart: Path = CHART,
                release: str = "acme-delegate", namespace: str = "acme"
                ) -> list[Rendered | RenderError]:
    """Install the chart once per values dict (one process for all), each into a fake
    cluster of its own: what Helm sent, or RenderError with Helm's message."""
    with tempfile.TemporaryDirectory(prefix="helm-render-") as tmp:
        outcome = _run({"action": "install", "workdir": tmp, "cases": [
            {"chart": str(chart), "values": values, "release": release,
             "namespace": namespace} for values in cases]}, Path(tmp) / "run")
    results: list[Rendered | RenderError] = []
    for case in outcome["cases"]:
        if case["ok"]:
            results.append(Rendered(objects=case["objects"], release=case["result"]))
        else:
            results.append(RenderError(case["error"]))
    return results


def render(values: dict[str, Any] | None = None, **kwargs: Any) -> Rendered:
    """Install the chart into a fake cluster; raise RenderError with Helm's message."""
    [result] = render_many([values], **kwargs)
    if isinstance(result, RenderError):
        raise result
    return result
