"""Smoke runs of the benchmarks (bench/): each module with tiny parameters, so that they
cannot rot. Numbers here mean nothing; the shape of the results and their sanity do.

A missing peer tool (Pebble, certbot and its DigitalOcean plugin) or PostgreSQL skips
with what to install, and fails when CI=true.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.strict_ci import IN_CI
from tests.support.acme import find_certbot
from tests.support.pebble import find_pebble
from tests.support.tls import find_openssl
from tests.support.tools import ToolMissing


def skip_or_fail(message: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true, so a missing benchmark peer is a failure: {message}")
    pytest.skip(message)


def require_database(kind: str) -> None:
    from bench.common import BenchSkip
    from bench.common import require_database as check

    try:
        check(kind)
    except BenchSkip as exc:
        skip_or_fail(str(exc))


def written(tmp_path: Path, name: str) -> dict[str, Any]:
    path = tmp_path / "results" / f"{name}.json"
    assert path.exists(), f"{path} was not written"
    data: dict[str, Any] = json.loads(path.read_text())
    assert data["benchmark"] == name
    assert data["machine"]["nproc"] >= 1 and data["machine"]["cpu_model"]
    return data


def finite_positive(value: Any) -> bool:
    return isinstance(value, int | float) and not math.isnan(value) and value > 0


def test_auth(tmp_path: Path) -> None:
    from bench import auth

    result = auth.run(seconds=0.05, bcrypt_calls=2, results_dir=tmp_path / "results",
                      show_progress=False)
    assert written(tmp_path, "auth") == json.loads(json.dumps(result))
    for case in ("verify_key", "verify_key_unknown_user", "bcrypt_checkpw_cost10",
                 "verify_key_imported_bcrypt"):
        assert finite_positive(result["results"][case]["median_us"]), case
    # bcrypt at cost 10 takes tens of milliseconds, a SHA-256 check about a microsecond.
    assert result["ratio_bcrypt_over_verify_key"] > 100
    assert isinstance(result["target_met"], bool)
    assert "bcrypt-10 / verify_key" in auth.report(result)


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres",
                                                             marks=pytest.mark.postgres)])
def test_overhead(database: str, tmp_path: Path) -> None:
    from bench import overhead

    require_database(database)
    result = overhead.run(
        databases=[database], latencies_ms=[0], concurrency=[1, 2], requests=20, seconds=2,
        warmup=1, paced_updates=2, paced_interval=0.05, burst_updates=4,
        burst_concurrency=2, results_dir=tmp_path / "results", workdir=tmp_path / "work",
        postgres_database=f"acme_delegate_bench_smoke_{os.getpid()}", show_progress=False,
        plot=False)
    written(tmp_path, "overhead")
    (config,) = result["configs"]
    assert config["database"] == database and config["prime_errors"] == 0
    assert [level["concurrency"] for level in config["repeat"]] == [1, 2]
    for level, floor in zip(config["repeat"], config["floor"], strict=True):
        assert level["errors"] == 0, level["statuses"]
        assert level["n"] > 0 and finite_positive(level["p50_ms"])
        assert level["p50_ms"] <= level["p99_ms"]
        assert finite_positive(level["throughput_rps"])
        # The floor ran beside it, in as many rounds, and the ratio is theirs.
        assert floor["errors"] == 0 and floor["rounds"] == level["rounds"] == 4
        assert finite_positive(floor["throughput_rps"])
        assert level["floor_ratio"] == round(level["throughput_rps"]
                                             / floor["throughput_rps"], 3)
        assert finite_positive(level["server_cpu_ms_per_request"])
    # A repeated live value costs no DigitalOcean call; a new one on a full name overwrites
    # the oldest record in place: one call.
    assert config["repeat_do_calls"]["total"] == 0
    paced = config["new_value_paced"]
    assert paced["errors"] == 0 and paced["do_calls_per_update"] == 1
    assert finite_positive(paced["server_cpu_ms_per_update"])
    assert config["new_value_ceiling_per_minute"] == 240
    assert config["new_value_burst"]["errors"] == 0
    assert "Repeat path" in overhead.report(result)


def test_compare(tmp_path: Path) -> None:
    """A revision (a worktree of its own, gone afterwards) beside this working tree."""
    from bench import compare
    from bench.common import ROOT, write_result

    result = compare.compare(["HEAD", str(ROOT)], databases="sqlite", concurrency="2",
                             rounds=1, requests=20, seconds=1, workdir=tmp_path)
    write_result("compare", result, tmp_path / "results")
    written(tmp_path, "compare")
    assert [v["version"] for v in result["versions"]] == ["HEAD", str(ROOT)]
    assert all(v["commit"] for v in result["versions"])
    assert sorted(r["version"] for r in result["runs"]) == sorted(["HEAD", str(ROOT)])
    for run in result["runs"]:
        assert run["database"] == "sqlite" and run["concurrency"] == 2
        assert run["errors"] == 0 and finite_positive(run["floor_ratio"])
    assert "Per version" in compare.report(result)
    assert not any(tmp_path.glob("bench-compare-*")), "the worktree was left behind"
    assert str(tmp_path) not in compare.git("worktree", "list")


@pytest.mark.parametrize("what", ["sqlite", "--floor"])
def test_inprocess(what: str, tmp_path: Path) -> None:
    """Run as documented (a process of its own: it reads the service's settings from its
    environment and sends the service's log lines to a file)."""
    import subprocess
    import sys

    from tests.support.env import ROOT, clean_env

    args = ["--database", "sqlite"] if what == "sqlite" else ["--floor"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", *args, "--clients", "2", "--requests",
         "30", "--warmup", "2", "--profile", "5"], cwd=ROOT, capture_output=True, text=True,
        env={**clean_env(), "ACME_DELEGATE_BENCH_WORKDIR": str(tmp_path)}, timeout=120)
    assert done.returncode == 0, done.stderr
    said = done.stderr.strip().splitlines()[-1]
    assert said.startswith("the floor, 2 clients" if what == "--floor" else "sqlite, 2 clients")
    assert "30 repeats" in said and "statuses {200: 30}" in said
    assert "function calls" in done.stdout  # the profile
    assert (tmp_path / "inprocess" / "service.log").exists()


def test_burst(tmp_path: Path) -> None:
    from bench import burst

    result = burst.run(credentials=10, latency_ms=0, deadline_s=60,
                       results_dir=tmp_path / "results", workdir=tmp_path / "work",
                       show_progress=False, plot=False)
    written(tmp_path, "burst")
    assert result["all_live"] and result["values_live"] == 10
    assert result["txt_records_at_standin"] == 10
    assert result["do_429"] == 0 and result["client_errors"] == 0 and result["gave_up"] == 0
    assert result["do_calls"]["POST records"] == 10
    assert result["theory"]["sliding_window_lower_bound_s"] == 0
    assert len(result["live_at_s"]) == 10 and result["time_to_all_live_s"] >= 0
    assert "Burst of 10" in burst.report(result)


def test_burst_busy_loops_spin_while_the_run_lasts() -> None:
    """``--load N``: N processes spinning for the whole run, and none left after it."""
    from bench.burst import busy_loops

    with busy_loops(2) as spinning:
        time.sleep(0.2)
        assert len(spinning) == 2 and all(p.poll() is None for p in spinning)
    assert all(p.returncode is not None for p in spinning)


def test_scale(tmp_path: Path) -> None:
    from bench import scale

    result = scale.run(databases=["sqlite"], credentials=300, baseline=30, live_fraction=0.05, rounds=2,
                       requests=20, seconds=1, paced_updates=2,
                       results_dir=tmp_path / "results", workdir=tmp_path / "work",
                       show_progress=False, plot=False)
    written(tmp_path, "scale")
    assert [r["credentials"] for r in result["runs"]] == [30, 300]
    for run in result["runs"]:
        assert run["prime_errors"] == 0 and run["prefill_errors"] == 0
        assert run["repeat_c1"]["errors"] == 0 and run["repeat_c16"]["errors"] == 0
        assert finite_positive(run["repeat_c1"]["p50_ms"])
        assert run["serve_rss_kb_idle"] > 10_000 and run["serve_rss_kb_peak"] > 10_000
        assert run["reconcile"]["returncode"] == 0, run["reconcile"]
        # The reconciler looks only at names holding a value or a record, never at all
        # of them: at least the live ones, at most every credential's.
        assert run["live_values"] <= run["reconcile"]["report"]["names"] <= run["credentials"]
        # 5 % hold a live value, but not the measured ones (all 30 of the small size).
        assert run["live_values"] == (15 if run["credentials"] == 300 else 0)
    (comparison,) = result["comparisons"]
    assert finite_positive(comparison["repeat_c1_p50_ms_ratio"])
    assert isinstance(comparison["target_met"], bool)
    assert "Latency ratio" in scale.report(result)


@pytest.mark.e2e
def test_certs(tmp_path: Path) -> None:
    """The certbot pair only (the quickest): one certificate each way."""
    from bench import certs

    try:
        find_pebble()
        find_openssl()
        certbot = find_certbot()
    except ToolMissing as exc:
        skip_or_fail(str(exc))
    problem = certs.certbot_digitalocean_problem(certbot, "http://127.0.0.1:9/v2/")
    if problem is not None:
        skip_or_fail(problem)
    result = certs.run(pairs=["certbot"], reps=1, results_dir=tmp_path / "results",
                       workdir=tmp_path / "work", show_progress=False, plot=False)
    written(tmp_path, "certs")
    assert result["skipped"] == {}
    (config,) = result["configs"]
    clients = {c["key"]: c for c in config["clients"]}
    assert set(clients) == {"certbot/acme-delegate", "certbot/direct"}
    for client in clients.values():
        assert client["runs_ok"] == 1, client["runs"]
        assert client["do_errors"] == 0
        assert finite_positive(client["wall_s_median"])
    assert clients["certbot/direct"]["txt_left_after_last_run"] == 0
    # Through acme-delegate: two creates, nothing listed; the cleanup hook retires the two
    # values (their records stay until housekeeping), and the one reconcile pass after
    # the run deletes them: deferred, counted apart.
    ours = clients["certbot/acme-delegate"]
    assert ours["do_calls_per_cert"] == ours["do_calls_first_issuance"] == 2
    assert ours["txt_left_after_last_run"] == 2 and ours["deferred_calls"] == 2
    assert clients["certbot/direct"]["do_calls_per_cert"] >= 4
    (pair,) = config["pairs"]
    assert finite_positive(pair["wall_ratio"])
    assert "acme-delegate / direct token" in certs.report(result)
