"""DigitalOcean calls and wall time per certificate: through acme-delegate, against the
same ACME clients' own DigitalOcean integrations holding the token directly.

    .venv/bin/python -m bench.certs [--reps 4] [--latencies 0] [--clients lego,pylego,certbot]

Everything runs on loopback: Pebble (the ACME server) validates DNS-01 against the
stand-in's DNS server; acme-delegate and the direct-token peers both write to the
stand-in's API, whose request log is the count. Each certificate is for ``D`` and
``*.D`` (two values at one name), a fresh client state per run. Three pairs, each the
same client and version on both sides, so the difference is the path to DigitalOcean:

| client | through acme-delegate | direct token, pointed at the stand-in |
|---|---|---|
| lego 4.9.1 (Debian) | ``--dns httpreq`` | ``--dns digitalocean``, ``DO_API_URL`` |
| lego 4.34 (pylego) | ``acme-dns`` | ``digitalocean``, ``DO_API_URL`` |
| certbot 2.1 (Debian) | ``--manual`` + ``acme-delegate hook`` | ``dns-digitalocean`` 2.0, |
|  |  | ``DIGITALOCEAN_END_POINT`` |

Each pair runs alternately (which side goes first swaps every repetition). A peer whose
DigitalOcean base URL cannot be pointed at the stand-in is never run (checked first).

Counted per run: DigitalOcean API requests the stand-in answered during the run, by
method. The first run is a first issuance (the name holds nothing); the later ones are
renewals of a name that still holds its records (acme-delegate overwrites them in place:
one call per value). Removals acme-delegate defers (a cleaned-up or expired value is
retired; housekeeping deletes it from spare budget) are not part of any client's run:
after the last run one reconcile pass does that housekeeping, and its requests are
reported apart ("deferred"), per name where they touch one (deletions) and in total
(listings included). The service's one-off calls (zone list at start-up, the start-up
reconcile pass) are reported apart as setup.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    ADMIN_TOKEN,
    IN_CI,
    BenchSkip,
    Progress,
    machine,
    plot_result,
    say,
    service_env,
    summarize_calls,
    table,
    workdir_for,
    write_result,
)
from tests.support.acme import (
    certbot_manual_command,
    find_certbot,
    find_lego,
    find_pylego_python,
    lego_httpreq_command,
    pylego_acmedns_command,
    pylego_command,
    read_pylego_outcome,
)
from tests.support.databases import fresh_database
from tests.support.pebble import find_pebble, run_pebble
from tests.support.processes import Serve
from tests.support.standin import StandinProcess
from tests.support.tls import find_openssl, verify_issued_certificate
from tests.support.tools import ToolMissing

NAME = "certs"
ZONE = "example.com"
TIME_TARGET = 1.10  # acme-delegate's wall time at most 10 % over the direct-token peer's
PAIRS = ("lego", "pylego", "certbot")


@dataclass
class Client:
    key: str  # e.g. "lego/acme-delegate"
    label: str
    pair: str
    via: str  # "acme-delegate" or "direct"
    domain: str
    build: Callable[[Path], Any]  # workdir -> ToolCommand
    succeeded: Callable[[Any, Any], str | None]  # (command, result) -> error or None
    runs: list[dict[str, Any]] = field(default_factory=list)
    deferred: int = 0  # deletions at its name done by housekeeping after the runs


# --------------------------------------------------------------------------------------
# Checking that a peer can be pointed at the stand-in (and only then running it)
# --------------------------------------------------------------------------------------


def lego_takes_api_url(lego: str) -> str | None:
    """None if this lego's digitalocean provider reads DO_API_URL, else why not."""
    out = subprocess.run(  # noqa: S603 - a located tool, fixed arguments
        [lego, "dnshelp", "-c", "digitalocean"], capture_output=True, text=True, timeout=30,
        check=False)
    if "DO_API_URL" not in out.stdout:
        return f"{lego} has no DO_API_URL for its digitalocean provider: it would call " \
               "api.digitalocean.com, so it is not run"
    return None


def pylego_takes_api_url(python: str) -> str | None:
    """None if pylego's embedded lego knows DO_API_URL (lego >= 4.x does)."""
    probe = ("import pathlib, pylego; "
             "d = (pathlib.Path(pylego.__file__).parent / 'lego.so').read_bytes(); "
             "print(b'DO_API_URL' in d and b'DO_AUTH_TOKEN' in d)")
    out = subprocess.run(  # noqa: S603 - a located tool, fixed arguments
        [python, "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    if out.stdout.strip() != "True":
        return "pylego's lego has no DO_API_URL: its digitalocean provider is not run"
    return None


def certbot_python(certbot: str) -> str:
    """The interpreter of a certbot script (its shebang)."""
    first = Path(certbot).read_text(errors="replace").splitlines()[0]
    return first[2:].strip().split()[0] if first.startswith("#!") else sys.executable


def certbot_digitalocean_problem(certbot: str, endpoint: str) -> str | None:
    """None if certbot has the dns-digitalocean plugin and python-digitalocean really
    uses DIGITALOCEAN_END_POINT (checked by building a Manager under that variable)."""
    python = certbot_python(certbot)
    probe = ("import certbot_dns_digitalocean, digitalocean; "
             "print(digitalocean.Manager(token='x').end_point)")
    env = {**os.environ, "DIGITALOCEAN_END_POINT": endpoint}
    out = subprocess.run(  # noqa: S603 - a located tool, fixed arguments
        [python, "-c", probe], capture_output=True, text=True, timeout=60, check=False,
        env=env)
    if out.returncode != 0:
        return ("certbot's dns-digitalocean plugin is missing: apt-get install "
                "python3-certbot-dns-digitalocean")
    if out.stdout.strip() != endpoint:
        return (f"python-digitalocean ignores DIGITALOCEAN_END_POINT (got "
                f"{out.stdout.strip()!r}): the certbot plugin would call "
                "api.digitalocean.com, so it is not run")
    return None


# --------------------------------------------------------------------------------------
# The clients
# --------------------------------------------------------------------------------------


def build_clients(pairs: Sequence[str], *, pebble: Any, standin: StandinProcess,
                  serve: Serve, accounts: dict[str, dict[str, Any]], work: Path,
                  skipped: dict[str, str]) -> list[Client]:
    dns = standin.dns_hostport
    root_pem = pebble.root_pem()
    clients: list[Client] = []

    def cert_ok(path_key: str) -> Callable[[Any, Any], str | None]:
        def check(cmd: Any, result: Any) -> str | None:
            if not result.ok:
                return str(result.describe())[-1500:]
            try:
                verify_issued_certificate(cmd.outputs[path_key], cmd.domains,
                                            root_pem=root_pem)
            except Exception as exc:
                return f"certificate check failed: {exc}"
            return None
        return check

    def pylego_ok(cmd: Any, result: Any) -> str | None:
        outcome = read_pylego_outcome(cmd)
        if not outcome.ok:
            return f"{outcome.code}: {outcome.detail[:500]}\n{result.describe()[-800:]}"
        try:
            verify_issued_certificate(outcome.certificate, cmd.domains, root_pem=root_pem)
        except Exception as exc:
            return f"certificate check failed: {exc}"
        return None

    def domains(domain: str) -> list[str]:
        return [domain, f"*.{domain}"]

    def with_domains(cmd: Any, names: list[str]) -> Any:
        cmd.domains = names
        return cmd

    if "lego" in pairs:
        try:
            lego = find_lego()
            problem = lego_takes_api_url(lego)
        except ToolMissing as exc:
            lego, problem = None, str(exc)
        if lego is None:
            skipped["lego"] = str(problem)
        else:
            lego_account = accounts["lego"]

            def lego_httpreq(workdir: Path, d: str = lego_account["domain"],
                             account: dict[str, Any] = lego_account) -> Any:
                return with_domains(lego_httpreq_command(
                    pebble, endpoint=serve.url, domains=domains(d), dns_resolver=dns,
                    workdir=workdir, username=account["username"],
                    password=account["password"], lego=lego), domains(d))

            clients.append(Client("lego/acme-delegate", "lego 4.9.1 httpreq -> acme-delegate",
                                  "lego", "acme-delegate", lego_account["domain"], lego_httpreq,
                                  cert_ok("certificate")))
            if problem is not None:
                skipped["lego/direct"] = problem
            else:
                def lego_do(workdir: Path, d: str = "lego-do.example.com") -> Any:
                    # The very same command as httpreq's, provider and its settings swapped.
                    cmd = lego_httpreq_command(pebble, endpoint=serve.url,
                                                 domains=domains(d), dns_resolver=dns,
                                                 workdir=workdir, lego=lego)
                    at = cmd.argv.index("--dns")
                    assert cmd.argv[at + 1] == "httpreq"
                    cmd.argv[at + 1] = "digitalocean"
                    for key in [k for k in cmd.env if k.startswith("HTTPREQ_")]:
                        value = cmd.env.pop(key)
                        if key in ("HTTPREQ_POLLING_INTERVAL", "HTTPREQ_PROPAGATION_TIMEOUT",
                                   "HTTPREQ_HTTP_TIMEOUT"):
                            cmd.env["DO_" + key.removeprefix("HTTPREQ_")] = value
                    cmd.env.update(DO_AUTH_TOKEN=standin.token, DO_API_URL=standin.api_url)
                    return with_domains(cmd, domains(d))

                clients.append(Client("lego/direct", "lego 4.9.1 digitalocean (direct token)",
                                      "lego", "direct", "lego-do.example.com", lego_do,
                                      cert_ok("certificate")))

    if "pylego" in pairs:
        try:
            python = find_pylego_python()
            problem = pylego_takes_api_url(python)
        except ToolMissing as exc:
            python, problem = None, str(exc)
        if python is None:
            skipped["pylego"] = str(problem)
        else:
            pylego_account = accounts["pylego"]
            storage = work / "lego-acme-dns.json"
            stored = {k: pylego_account[k] for k in ("fulldomain", "subdomain", "username",
                                                     "password")}
            storage.write_text(json.dumps({pylego_account["domain"]: {
                **stored, "server_url": serve.url}}))
            storage.chmod(0o600)

            def pylego_acmedns(workdir: Path, d: str = pylego_account["domain"]) -> Any:
                return with_domains(pylego_acmedns_command(
                    pebble, api_base=serve.url, storage_path=storage, domains=domains(d),
                    dns_resolver=dns, workdir=workdir, python=python,
                    require_recursive_value=True), domains(d))

            clients.append(Client("pylego/acme-delegate",
                                  "lego 4.34 (pylego) acme-dns -> acme-delegate", "pylego",
                                  "acme-delegate", pylego_account["domain"], pylego_acmedns,
                                  pylego_ok))
            if problem is not None:
                skipped["pylego/direct"] = problem
            else:
                def pylego_do(workdir: Path, d: str = "pylego-do.example.com") -> Any:
                    # lego's acme-dns provider polls every 2 s for up to 60 s: the same here.
                    env = {"DO_AUTH_TOKEN": standin.token, "DO_API_URL": standin.api_url,
                           "DO_POLLING_INTERVAL": "2", "DO_PROPAGATION_TIMEOUT": "60",
                           "DO_HTTP_TIMEOUT": "30"}
                    return with_domains(pylego_command(
                        pebble, plugin="digitalocean", plugin_env=env, domains=domains(d),
                        dns_resolver=dns, workdir=workdir, python=python,
                        require_recursive_value=True), domains(d))

                clients.append(Client("pylego/direct",
                                      "lego 4.34 (pylego) digitalocean (direct token)",
                                      "pylego", "direct", "pylego-do.example.com", pylego_do,
                                      pylego_ok))

    if "certbot" in pairs:
        try:
            certbot = find_certbot()
        except ToolMissing as exc:
            certbot = None
            skipped["certbot"] = str(exc)
        if certbot is not None:
            certbot_account = accounts["certbot"]
            credentials = work / "certbot-acme-delegate.json"
            credentials.write_text(json.dumps({certbot_account["domain"]: {
                k: v for k, v in certbot_account.items()
                if k in ("username", "password", "fulldomain", "subdomain", "allowfrom")}}))
            credentials.chmod(0o600)
            exe = Path(sys.executable).parent / "acme-delegate"
            common = ["--server", serve.url, "--credentials", str(credentials)]
            auth = shlex.join([str(exe), "hook", "certbot-auth", *common,
                               "--nameserver", dns, "--timeout", "30"])
            cleanup = shlex.join([str(exe), "hook", "certbot-cleanup", *common])

            def certbot_hooks(workdir: Path, d: str = certbot_account["domain"]) -> Any:
                return with_domains(certbot_manual_command(
                    pebble, domains=domains(d), workdir=workdir, auth_hook=auth,
                    cleanup_hook=cleanup, certbot=certbot), domains(d))

            clients.append(Client("certbot/acme-delegate",
                                  "certbot 2.1 --manual + acme-delegate hook", "certbot",
                                  "acme-delegate", certbot_account["domain"], certbot_hooks,
                                  cert_ok("fullchain")))
            endpoint = standin.api_url + "/v2/"
            problem = certbot_digitalocean_problem(certbot, endpoint)
            if problem is not None:
                skipped["certbot/direct"] = problem
            else:
                ini = work / "digitalocean.ini"
                ini.write_text(f"dns_digitalocean_token = {standin.token}\n")
                ini.chmod(0o600)

                def certbot_do(workdir: Path, d: str = "certbot-do.example.com") -> Any:
                    # The hooks' command with the authenticator swapped for the plugin.
                    cmd = certbot_manual_command(pebble, domains=domains(d),
                                                   workdir=workdir, auth_hook="true",
                                                   certbot=certbot)
                    at = cmd.argv.index("--manual")
                    cmd.argv[at:] = ["--authenticator", "dns-digitalocean",
                                     "--dns-digitalocean-credentials", str(ini),
                                     "--dns-digitalocean-propagation-seconds", "0"]
                    cmd.env["DIGITALOCEAN_END_POINT"] = endpoint
                    return with_domains(cmd, domains(d))

                clients.append(Client("certbot/direct",
                                      "certbot 2.1 dns-digitalocean (direct token)",
                                      "certbot", "direct", "certbot-do.example.com",
                                      certbot_do, cert_ok("fullchain")))
    return clients


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


def run_once(client: Client, standin: StandinProcess, work: Path, rep: int) -> dict[str, Any]:
    workdir = work / client.key.replace("/", "-") / f"run{rep}"
    cmd = client.build(workdir)
    since = time.monotonic()
    result = cmd.run()
    until = time.monotonic()
    (workdir / "client-output.log").write_text(result.describe() + "\n\n" + result.output)
    calls = standin.api_calls(since, until)
    error = client.succeeded(cmd, result)
    challenge = f"_acme-challenge.{client.domain}"
    left = [r for r in standin.records() if r["type"] == "TXT" and r["fqdn"] == challenge]
    return {
        "rep": rep,
        "ok": error is None,
        "error": error,
        "seconds": round(result.seconds, 2),
        "do_calls": summarize_calls(calls),
        "do_errors": sum(1 for c in calls if c["status"] >= 400),
        "txt_left_at_name": len(left),
    }


def housekeeping(env: dict[str, str], standin: StandinProcess, clients: Sequence[Client]
                 ) -> dict[str, int]:
    """The removals acme-delegate deferred, done by one reconcile pass after the service
    stopped (as its periodic pass would, from spare budget); each acme-delegate client
    gets the deletions at its name, the whole pass's calls are returned."""
    at_name = {f"_acme-challenge.{c.domain}": c for c in clients if c.via == "acme-delegate"}
    owner = {int(r["id"]): at_name[r["fqdn"]] for r in standin.records()
             if r["type"] == "TXT" and r["fqdn"] in at_name}
    since = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "app", "reconcile"], env=env, capture_output=True, text=True,
        timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"reconcile failed: {result.stderr[-2000:]}")
    calls = standin.api_calls(since, time.monotonic())
    for call in calls:
        parts = call["path"].strip("/").split("/")
        if call["method"] == "DELETE" and len(parts) == 5 and int(parts[4]) in owner:
            owner[int(parts[4])].deferred += 1
    return summarize_calls(calls)


def summarize_client(client: Client) -> dict[str, Any]:
    runs = client.runs
    ok_runs = [r for r in runs if r["ok"]]
    steady = ok_runs[1:] if len(ok_runs) > 1 else ok_runs

    def mean(values: list[float]) -> float:
        return round(statistics.fmean(values), 2) if values else float("nan")

    by_method: dict[str, float] = {}
    for key in sorted({k for r in steady for k in r["do_calls"] if k not in ("total", "429")}):
        by_method[key] = mean([r["do_calls"].get(key, 0) for r in steady])
    seconds = [r["seconds"] for r in ok_runs]
    first = ok_runs[0]["do_calls"]["total"] if ok_runs else None
    return {
        "key": client.key,
        "label": client.label,
        "pair": client.pair,
        "via": client.via,
        "runs_ok": len(ok_runs),
        "runs": runs,
        "do_calls_per_cert": mean([r["do_calls"]["total"] for r in steady]),
        "do_calls_by_kind": by_method,
        "do_calls_first_run": first,
        "do_calls_first_issuance": first,
        "do_calls_renewal": (mean([r["do_calls"]["total"] for r in ok_runs[1:]])
                             if len(ok_runs) > 1 else None),
        "deferred_calls": client.deferred,
        "do_errors": sum(r["do_errors"] for r in runs),
        "wall_s_median": round(statistics.median(seconds), 2) if seconds else float("nan"),
        "wall_s_min": min(seconds) if seconds else float("nan"),
        "wall_s_max": max(seconds) if seconds else float("nan"),
        "txt_left_after_last_run": runs[-1]["txt_left_at_name"] if runs else None,
    }


def run_config(latency: float, *, pairs: Sequence[str], reps: int, work: Path,
               progress: Progress, skipped: dict[str, str]) -> dict[str, Any]:
    try:
        find_pebble()
        find_openssl()
    except ToolMissing as exc:
        raise BenchSkip(str(exc)) from exc
    work.mkdir(parents=True, exist_ok=True)
    with StandinProcess(zones=[ZONE]) as standin:
        standin.set_faults(latency_ms=latency)
        url = fresh_database("sqlite", workdir=work, name=f"certs-{latency:g}")
        env = service_env(url, standin)
        started = time.monotonic()
        served_env = env
        with Serve(env, work / f"serve-{latency:g}.log") as served, \
                run_pebble(standin.dns_hostport, workdir=work / f"pebble-{latency:g}") as pb:
            accounts: dict[str, dict[str, Any]] = {}
            with httpx.Client(base_url=served.url, trust_env=False, timeout=60) as http:
                for pair in pairs:
                    domain = f"{pair}-ad.example.com"
                    response = http.post("/admin/accounts", json={"domain": domain},
                                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                    response.raise_for_status()
                    accounts[pair] = {**response.json(), "domain": domain}
            setup_calls = summarize_calls(standin.api_calls(started, time.monotonic()))
            clients = build_clients(pairs, pebble=pb, standin=standin, serve=served,
                                    accounts=accounts, work=work, skipped=skipped)
            by_pair: dict[str, list[Client]] = {}
            for client in clients:
                by_pair.setdefault(client.pair, []).append(client)
            progress.total = sum(len(c) for c in by_pair.values()) * reps
            done = 0
            for rep in range(reps):
                for pair_clients in by_pair.values():
                    order = pair_clients if rep % 2 == 0 else pair_clients[::-1]
                    for client in order:
                        progress.update(done, f"{client.label} (run {rep + 1}/{reps})",
                                        force=True)
                        client.runs.append(run_once(client, standin, work, rep))
                        done += 1
            progress.update(done, "", force=True)
        deferred = housekeeping(served_env, standin, clients)
    summaries = [summarize_client(c) for c in clients]
    pair_rows = []
    for pair, pair_clients in by_pair.items():
        sides = {c.via: summarize_client(c) for c in pair_clients}
        if "acme-delegate" in sides and "direct" in sides:
            ours, theirs = sides["acme-delegate"], sides["direct"]
            ratio = ours["wall_s_median"] / theirs["wall_s_median"]
            pair_rows.append({
                "pair": pair,
                "wall_ratio": round(ratio, 3),
                # Best case of each side: filters the ACME-polling race (see README).
                "wall_ratio_min": round(ours["wall_s_min"] / theirs["wall_s_min"], 3),
                "wall_target_met": ratio <= TIME_TARGET,
                "calls_acme_delegate": ours["do_calls_per_cert"],
                "calls_direct": theirs["do_calls_per_cert"],
                "first_acme_delegate": ours["do_calls_first_issuance"],
                "first_direct": theirs["do_calls_first_issuance"],
                "renewal_acme_delegate": ours["do_calls_renewal"],
                "renewal_direct": theirs["do_calls_renewal"],
                "deferred_acme_delegate": ours["deferred_calls"],
            })
    best_peer = min((s["do_calls_per_cert"] for s in summaries if s["via"] == "direct"
                     and s["runs_ok"]), default=float("nan"))
    ours_calls = [s["do_calls_per_cert"] for s in summaries if s["via"] == "acme-delegate"
                  and s["runs_ok"]]
    return {
        "do_latency_ms": latency,
        "setup_do_calls": setup_calls,
        "deferred_do_calls": deferred,
        "clients": summaries,
        "pairs": pair_rows,
        "best_direct_calls_per_cert": best_peer,
        "calls_target_met": bool(ours_calls) and max(ours_calls) <= best_peer,
        "wall_target_met": bool(pair_rows) and all(p["wall_target_met"] for p in pair_rows),
    }


def run(*, pairs: Sequence[str] = PAIRS, reps: int = 4, latencies_ms: Sequence[float] = (0,),
        results_dir: Path | None = None, workdir: Path | None = None,
        show_progress: bool = True, plot: bool = True) -> dict[str, Any]:
    work = workdir or workdir_for(NAME)
    skipped: dict[str, str] = {}
    configs = []
    for latency in latencies_ms:
        progress = Progress(f"certs [DigitalOcean latency {latency:g} ms]",
                            enabled=show_progress)
        # A directory per configuration: certbot would find the previous one's lineage
        # (from another Pebble) and, not due for renewal, issue nothing.
        configs.append(run_config(latency, pairs=pairs, reps=reps,
                                  work=work / f"latency-{latency:g}ms", progress=progress,
                                  skipped=skipped))
        progress.done("done")
    for what, why in skipped.items():
        say(f"not run: {what}: {why}", enabled=show_progress)
    if skipped and IN_CI:
        raise BenchSkip("CI=true and peers are missing: " + "; ".join(
            f"{k}: {v}" for k, v in skipped.items()))
    output = {
        "benchmark": NAME,
        "machine": machine(),
        "params": {"pairs": list(pairs), "reps": reps, "latencies_ms": list(latencies_ms),
                   "names_per_certificate": 2},
        "skipped": skipped,
        "configs": configs,
        # The first configuration, flattened for the plot and quick reading.
        "clients": configs[0]["clients"] if configs else [],
    }
    write_result(NAME, output, results_dir)
    if plot:
        plot_result(NAME, output, results_dir, verbose=show_progress)
    return output


def _kinds(calls: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in calls.items() if k not in ("total", "429"))


def report(result: dict[str, Any]) -> str:
    text = ""
    for config in result["configs"]:
        rows = [[c["label"], f"{c['runs_ok']}/{len(c['runs'])}", c["do_calls_first_issuance"],
                 c["do_calls_renewal"], c["deferred_calls"] if c["via"] == "acme-delegate"
                 else "-",
                 ", ".join(f"{k} {v:g}" for k, v in c["do_calls_by_kind"].items()),
                 c["wall_s_median"], f"{c['wall_s_min']:.1f}-{c['wall_s_max']:.1f}",
                 c["txt_left_after_last_run"]]
                for c in config["clients"]]
        text += table(
            f"Per certificate (apex + wildcard), DigitalOcean latency "
            f"{config['do_latency_ms']:g} ms",
            ["client", "ok", "DO calls, first issuance", "DO calls/renewal",
             "deferred (all runs)", "by kind (renewals)", "wall s (median)", "range",
             "TXT left"], rows)
        pair_rows = [[p["pair"], p["calls_acme_delegate"], p["calls_direct"], p["wall_ratio"],
                      p["wall_ratio_min"], "met" if p["wall_target_met"] else "MISSED"]
                     for p in config["pairs"]]
        text += "\n" + table("acme-delegate / direct token, same client",
                             ["client", "DO calls (acme-delegate)", "DO calls (direct)",
                              "wall ratio (medians)", "wall ratio (minima)",
                              "median <= 1.10"], pair_rows)
        text += (f"\nFewest DigitalOcean calls of a direct peer: "
                 f"{config['best_direct_calls_per_cert']}; acme-delegate's at most that: "
                 f"{'met' if config['calls_target_met'] else 'MISSED'}. Deferred "
                 f"housekeeping after the last run (one reconcile pass): "
                 f"{config['deferred_do_calls']['total']} calls "
                 f"({_kinds(config['deferred_do_calls'])}). "
                 f"One-off setup calls "
                 f"of the service (start-up zone list, start-up reconcile, account "
                 f"creation): {config['setup_do_calls']['total']}.\n\n")
    for what, why in result["skipped"].items():
        text += f"Not run: {what}: {why}\n"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.certs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=4, help="certificates per client")
    parser.add_argument("--latencies", default="0", help="stand-in latency, ms (list)")
    parser.add_argument("--clients", default=",".join(PAIRS))
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(pairs=[p for p in args.clients.split(",") if p], reps=args.reps,
                 latencies_ms=[float(x) for x in args.latencies.split(",") if x],
                 results_dir=args.results_dir)
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
