"""Child processes of tests and benchmarks: ``acme-delegate serve`` (or a program served
the same way), its CLI, and any other command (Pebble, the ACME clients), each stopped
when its caller is done with it, and read while it runs (memory, CPU).

Only the standard library at import time: ``python3 -m tests.support.acme`` runs
outside the project's virtual environment.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import shlex
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

from tests.support.env import ROOT
from tests.support.ports import free_port

# --------------------------------------------------------------------------------------
# Reading a running process
# --------------------------------------------------------------------------------------


def proc_status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), 0 when gone."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when gone)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    return 0.0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its living descendants."""
    found, i = [pid], 0
    while i < len(found):
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{found[i]}/task").iterdir():
                found.extend(int(c) for c in (task / "children").read_text().split())
        i += 1
    return found


class Reporter(Protocol):
    """What ``wait_idle`` tells while it waits (bench's ``Progress``)."""

    def update(self, done: int | None = None, note: str = "", *, force: bool = False
               ) -> None: ...


# --------------------------------------------------------------------------------------
# acme-delegate serve
# --------------------------------------------------------------------------------------


class Serve:
    """``python -m app serve`` on a free (or the given) loopback port, healthy when the
    constructor returns; stopped (SIGTERM, SIGKILL after ``grace``) by ``stop`` or on
    leaving ``with``. ``program`` serves another module the same way (``serve --host H
    --port P`` appended), e.g. a benchmark's floor."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *args: str,
                 port: int | None = None, ready_timeout: float = 120.0, scheme: str = "http",
                 verify: ssl.SSLContext | bool = True,
                 program: Sequence[str] = ("-m", "app"), grace: float = 40.0) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.url = f"{scheme}://{self.host}:{self.port}"
        self.log_path = log_path
        self.grace = grace
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, *program, "serve", "--host", self.host,
                 "--port", str(self.port), *args],
                cwd=ROOT, env=dict(env), stdout=log, stderr=subprocess.STDOUT, text=True,
            )
        try:
            self._wait_healthy(ready_timeout, verify)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float, verify: ssl.SSLContext | bool) -> None:
        import httpx  # not at module level: see the module's docstring

        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, verify=verify) as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"serve exited with {self.process.returncode}:\n"
                                       f"{self.log()}")
                try:
                    if http.get(self.url + "/health", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not become healthy:\n{self.log()}")
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def rss_kb(self) -> int:
        return proc_status_kb(self.pid, "VmRSS")

    def hwm_kb(self) -> int:
        """Peak RSS so far."""
        return proc_status_kb(self.pid, "VmHWM")

    def cpu_seconds(self) -> float:
        """The server's CPU seconds so far, its child processes' included (the SQLite
        WAL's sync process, ``app.db.syncer``): what serving cost the machine."""
        return sum(proc_cpu_seconds(pid) for pid in process_tree(self.pid))

    def wait_idle(self, *, below: float = 0.05, window: float = 1.0, timeout: float = 900.0,
                  progress: Reporter | None = None) -> float:
        """Block until the process uses less than ``below`` of a core over ``window``
        seconds (e.g. the start-up reconcile pass is over); returns the seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            before = self.cpu_seconds()
            time.sleep(window)
            if (self.cpu_seconds() - before) / window < below:
                return time.monotonic() - started
            if progress is not None:
                progress.update(note="waiting for the start-up reconcile pass")
        raise TimeoutError(f"serve still busy after {timeout:.0f}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(self.grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------
# The CLI
# --------------------------------------------------------------------------------------


class CliRun(subprocess.CompletedProcess[str]):
    """A finished ``python -m app`` run, with its wall time and its peak RSS (sampled)."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str, *,
                 seconds: float, peak_rss_kb: int, timed_out: bool) -> None:
        super().__init__(list(args), returncode, stdout, stderr)
        self.seconds = seconds
        self.peak_rss_kb = peak_rss_kb
        self.timed_out = timed_out


def run_cli(*args: str, env: Mapping[str, str], timeout: float = 60.0,
            sample_every: float = 0.05) -> CliRun:
    """``python -m app ARGS``, killed after ``timeout`` seconds (``timed_out`` then)."""
    argv = [sys.executable, "-m", "app", *args]
    started = time.monotonic()
    process = subprocess.Popen(
        argv, cwd=ROOT, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    peak, timed_out = 0, False
    deadline = started + timeout
    with process:
        while True:
            peak = max(peak, proc_status_kb(process.pid, "VmHWM"))
            try:
                stdout, stderr = process.communicate(timeout=sample_every)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    timed_out = True
                    process.kill()
                    stdout, stderr = process.communicate()
                    break
    return CliRun(argv, process.returncode, stdout, stderr, seconds=time.monotonic() - started,
                  peak_rss_kb=peak, timed_out=timed_out)


# --------------------------------------------------------------------------------------
# Any other command, in a process group of its own
# --------------------------------------------------------------------------------------

_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def start_group(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path,
                stdin: int = subprocess.DEVNULL, stdout: int | IO[bytes] = subprocess.PIPE,
                stderr: int | IO[bytes] = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """``argv`` in a new session (its children with it), killed at exit if still alive."""
    proc = subprocess.Popen(
        list(argv), env=dict(env), cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr,
        start_new_session=True)
    _LIVE[proc.pid] = proc
    return proc


def kill_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group of ``proc``, then SIGKILL after ``grace``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)
    _LIVE.pop(proc.pid, None)


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE.values()):
        kill_group(proc, grace=2.0)


@dataclasses.dataclass(frozen=True)
class ToolResult:
    """What one run of a :class:`ToolCommand` produced."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        """A multi-line summary fit for an assertion message."""
        tail = "\n".join(self.output.strip().splitlines()[-40:])
        return (
            f"$ {shlex.join(self.argv)}\nrc={self.returncode} timed_out={self.timed_out} "
            f"seconds={self.seconds:.1f}\n{tail}"
        )


@dataclasses.dataclass
class ToolCommand:
    """A ready-to-run command: argv, environment, directory, time limit, and the files the
    run is expected to write (``outputs``: ``certificate``, ``fullchain``, ``result`` ...
    depending on who built it)."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    timeout: float
    outputs: dict[str, Path] = dataclasses.field(default_factory=dict)
    stdin: bytes | None = None

    def run(self, timeout: float | None = None) -> ToolResult:
        """Run in its own process group; on timeout the whole group is killed."""
        limit = self.timeout if timeout is None else timeout
        start = time.monotonic()
        proc = start_group(self.argv, env=self.env, cwd=self.cwd,
                           stdin=subprocess.PIPE if self.stdin is not None else
                           subprocess.DEVNULL)
        timed_out = False
        try:
            out, err = proc.communicate(self.stdin, timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_group(proc, grace=3.0)
            out, err = proc.communicate()
        finally:
            _LIVE.pop(proc.pid, None)
        return ToolResult(
            argv=tuple(self.argv),
            returncode=proc.returncode,
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            seconds=time.monotonic() - start,
            timed_out=timed_out,
        )
