"""The container image, without a Docker engine (there is none here): what the Dockerfile
says, what .dockerignore lets into the build context, and the image's install steps
(scripts/install-image) run for real on exactly the files the build would copy."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from tests.deploy.chart_tools import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            out.append([])
        if out:
            out[-1].append((keyword, args))
    return out


def base_image(stage: list[tuple[str, str]]) -> str:
    args = dict(instructions(DOCKERFILE.read_text()))["ARG"]
    name, _, default = args.partition("=")
    image = stage[0][1].split()[0]
    return image.replace("${" + name + "}", default)


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore ``patterns`` keep ``path`` (relative, /-separated) out of
    the build context: the last matching pattern wins; a match on a parent directory
    counts; ``!`` re-includes; ``**`` spans directories."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.strip("/")
        regex = ""
        i = 0
        while i < len(body):
            if body.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif body.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif body[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif body[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif body[i] == "[":
                end = body.index("]", i)
                regex, i = regex + body[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(body[i]), i + 1
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def builder_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of the builder stage's COPY instructions from the context."""
    copies = []
    for keyword, args in stages()[0]:
        if keyword == "COPY":
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            copies.append((words[:-1], words[-1]))
    return copies


def test_dockerfile() -> None:
    builder, runtime = stages()
    assert base_image(builder) == "python:3.11-slim"
    assert base_image(runtime) == "python:3.11-slim"
    assert builder[0][1].split()[-1] == "builder"

    run_builder = " ".join(args for keyword, args in builder if keyword == "RUN")
    assert "scripts/install-image /opt/acme-delegate" in run_builder

    final = dict(runtime)  # the last of each instruction
    assert final["USER"] == "10001:10001"
    assert final["WORKDIR"] == "/data"
    assert final["EXPOSE"] == "8080"
    assert json.loads(final["ENTRYPOINT"]) == ["acme-delegate"]
    assert json.loads(final["CMD"]) == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    assert "ACME_DELEGATE_DATABASE_URL=sqlite:////data/acme-delegate.sqlite3" in final["ENV"]
    assert "/opt/acme-delegate/bin" in final["ENV"]
    # The runtime stage copies the built environment and installs nothing to build with.
    copies = [args for keyword, args in runtime if keyword == "COPY"]
    assert copies == ["--from=builder /opt/acme-delegate /opt/acme-delegate"]
    run_runtime = " ".join(args for keyword, args in runtime if keyword == "RUN")
    assert "apt-get" not in run_runtime and "pip install" not in run_runtime
    assert "useradd --system --uid 10001" in run_runtime
    assert "chown 10001:10001 /data" in run_runtime


def test_dockerignore_keeps_out_environments_tests_and_caches() -> None:
    patterns = ignore_patterns()
    for path in (".venv/bin/python", "tests/conftest.py", "tests/deploy/test_image.py",
                 ".git/HEAD", ".pytest_cache/v/x", ".mypy_cache/3.11/x.json",
                 ".ruff_cache/x", ".hypothesis/examples/x", "app/__pycache__/cli.cpython-311.pyc",
                 "app/core/__pycache__/names.cpython-311.pyc", "var/acme-delegate.sqlite3",
                 "helm/acme-delegate/values.yaml", "dist/acme_delegate-0.1.0.whl",
                 "scripts/run", ".env"):
        assert dockerignore_excludes(path, patterns), path
    for sources, _ in builder_copies():
        for source in sources:
            assert not dockerignore_excludes(source, patterns), f"COPY {source} is ignored"
    assert not dockerignore_excludes("app/main.py", patterns)
    assert not dockerignore_excludes("migrations/versions/0001_initial_schema.py", patterns)


def build_context_copy(destination: Path) -> Path:
    """What the builder stage's WORKDIR holds after its COPY instructions: the files of
    this checkout that .dockerignore lets in, copied as the COPY lines say."""
    patterns = ignore_patterns()
    workdir = destination / "src"
    workdir.mkdir(parents=True)

    def ignore(directory: str, names: list[str]) -> list[str]:
        rel = Path(directory).relative_to(ROOT)
        return [n for n in names
                if dockerignore_excludes((rel / n).as_posix().removeprefix("./"), patterns)]

    for sources, target in builder_copies():
        for source in sources:
            src = ROOT / source
            dest = workdir / target
            if target.endswith("/"):
                dest = dest / Path(source).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dest, ignore=ignore)
            else:
                shutil.copy2(src, dest)
    return workdir


def test_install_image_in_a_fresh_environment(tmp_path: Path) -> None:
    """The Dockerfile's builder step, run as written (paths moved under tmp_path) on the
    files the image build would copy: scripts/install-image builds the wheel and installs
    it into a new virtual environment, pip is removed, and the console script runs
    (version, help, and the wheel's migrations against a new SQLite database)."""
    src = build_context_copy(tmp_path / "context")
    target = tmp_path / "opt" / "acme-delegate"
    [run] = [args for keyword, args in stages()[0] if keyword == "RUN"]
    assert "/opt/acme-delegate" in run and re.search(r"\s/src\b", run), run
    run = run.replace("/opt/acme-delegate", str(target))
    run = re.sub(r"(?<=\s)/src\b", str(src), run)
    run = run.replace("PYTHON=python3 ", f"PYTHON={shlex.quote(sys.executable)} ")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ACME_DELEGATE_", "VIRTUAL_ENV", "PYTHONPATH"))}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", run], cwd=src, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"{run}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    expected = version("acme-delegate")
    assert done.stdout.strip().endswith(f"version {expected}"), done.stdout
    assert not (target / "bin" / "pip").exists()

    work = tmp_path / "data"  # the image's WORKDIR
    work.mkdir()

    def cli(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
        run_env = dict(env)
        run_env.update({f"ACME_DELEGATE_{k.upper()}": v for k, v in settings.items()})
        return subprocess.run([str(target / "bin" / "acme-delegate"), *args], cwd=work,
                              env=run_env, capture_output=True, text=True, timeout=120,
                              check=False)

    shown = cli("--version")
    assert shown.returncode == 0 and shown.stdout.strip() == f"acme-delegate, version {expected}"
    helped = cli("--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("serve", "migrate", "accounts", "audit"):
        assert re.search(rf"^\s+{command}\s", helped.stdout, re.M), command
    database = work / "acme-delegate.sqlite3"
    migrated = cli("migrate", database_url=f"sqlite:///{database}")
    assert migrated.returncode == 0, migrated.stderr
    assert "database is up to date" in migrated.stdout
    assert database.stat().st_size > 0
    # The installed package, not this checkout, is what ran.
    where = subprocess.run(
        [str(target / "bin" / "python"), "-c", "import app; print(app.__file__)"],
        cwd=work, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert where.stdout.strip().startswith(str(target)), where.stdout
    # The operator console ships inside the package: the image serves it air-gapped.
    package = Path(where.stdout.strip()).parent
    for asset in ("console/index.html", "console/assets/app.js", "console/assets/console.css"):
        assert (package / asset).is_file(), asset
