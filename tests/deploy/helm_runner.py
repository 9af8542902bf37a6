"""Runs one helm-sdkpy action in a process of its own; the tests call it through helm.py.

Why a process: helm-sdkpy loads Helm (Go) into the interpreter, and the Go runtime reads
the environment once, when it loads: HELM_DRIVER=memory (keep releases in memory, not in
Secrets of the fake cluster) must be in the environment the process starts with. A
process of its own also keeps the Go runtime's threads and signal handlers out of pytest.

    python -m tests.deploy.helm_runner REQUEST.json RESULT.json

REQUEST: {"action": "lint", "chart": PATH}
      or {"action": "install", "workdir": DIR, "cases": [
             {"chart": PATH, "values": {...}, "release": NAME, "namespace": NS}, ...]}
RESULT:  lint: {"ok": true, "result": ...}
         install: {"ok": true, "cases": [{"ok": true, "result": RELEASE, "objects": [...]}
                                          or {"ok": false, "error": "..."}, ...]}
Each install case gets a fake cluster and a Helm configuration of its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import helm_sdkpy

from tests.deploy.fake_kube import fake_kube


def lint(request: dict[str, Any]) -> dict[str, Any]:
    config = helm_sdkpy.Configuration()
    result = asyncio.run(helm_sdkpy.Lint(config).run(request["chart"]))
    return {"ok": True, "result": result}


def install_one(case: dict[str, Any], workdir: Path) -> dict[str, Any]:
    namespace = case.get("namespace", "default")
    workdir.mkdir(parents=True, exist_ok=True)
    with fake_kube(workdir, namespace=namespace) as kube:
        config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=str(kube.kubeconfig))
        try:
            release = asyncio.run(helm_sdkpy.Install(config).run(
                case.get("release", "acme-delegate"), case["chart"],
                values=case.get("values"), wait=False, timeout=60,
            ))
        except helm_sdkpy.HelmError as exc:
            return {"ok": False, "error": str(exc), "objects": kube.cluster.created}
        return {"ok": True, "result": release, "objects": kube.cluster.created}


def install(request: dict[str, Any]) -> dict[str, Any]:
    workdir = Path(request["workdir"])
    return {"ok": True, "cases": [install_one(case, workdir / f"case-{n}")
                                  for n, case in enumerate(request["cases"])]}


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    action = {"lint": lint, "install": install}[request["action"]]
    Path(sys.argv[2]).write_text(json.dumps(action(request)))


if __name__ == "__main__":
    main()
