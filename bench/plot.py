"""PNG plots of the benchmark results (optional: needs matplotlib).

    python -m bench.plot [RESULTS_DIR]     # redraw every PNG from bench/results/*.json

The benchmarks call :func:`render` after writing their JSON. Without matplotlib they say
so and go on; the JSON and the printed tables do not need it. Any Python with matplotlib
can draw the PNGs later (the JSON is all it reads), e.g. Debian's
``apt-get install python3-matplotlib`` then ``python3 -m bench.plot``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

INSTALL = ("pip install matplotlib (the `bench` optional extra), or any Python with "
           "matplotlib: python3 -m bench.plot")


class PlottingUnavailable(RuntimeError):
    pass


def _pyplot() -> Any:
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise PlottingUnavailable(f"plot skipped: matplotlib is not installed ({INSTALL})"
                                  ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]

    return plt


def _caption(result: dict[str, Any]) -> str:
    m = result.get("machine", {})
    return f"{m.get('nproc', '?')} cores, {m.get('cpu_model', '?')}, commit {m.get('commit', '?')}"


def _finite(values: list[Any]) -> list[float]:
    return [float(v) if v is not None and not (isinstance(v, float) and math.isnan(v))
            else math.nan for v in values]


def plot_overhead(result: dict[str, Any], plt: Any, path: Path) -> None:
    fig, (ax_lat, ax_rps) = plt.subplots(1, 2, figsize=(12, 4.8))
    for config in result["configs"]:
        label = f"{config['database']}, DO {config['do_latency_ms']:g} ms"
        levels = config["repeat"]
        x = [lv["concurrency"] for lv in levels]
        line = ax_lat.plot(x, _finite([lv["p50_ms"] for lv in levels]), marker="o",
                           label=f"{label} p50")[0]
        ax_lat.plot(x, _finite([lv["p99_ms"] for lv in levels]), marker="x", linestyle="--",
                    color=line.get_color(), label=f"{label} p99")
        ax_rps.plot(x, _finite([lv["throughput_rps"] for lv in levels]), marker="o",
                    color=line.get_color(), label=label)
    for ax in (ax_lat, ax_rps):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.grid(True, alpha=0.3)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("/update latency, ms (log)")
    ax_lat.set_title("Repeat path: latency")
    ax_rps.set_ylabel("requests/s")
    ax_rps.set_title("Repeat path: throughput")
    ax_lat.legend(fontsize=7)
    ax_rps.legend(fontsize=7)
    fig.suptitle("acme-delegate /update overhead (no DigitalOcean call)\n" + _caption(result),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_burst(result: dict[str, Any], plt: Any, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4.8))
    times = sorted(result["live_at_s"])
    ax.step(times, range(1, len(times) + 1), where="post", label="values live (client saw 200)")
    ideal = result["theory"]
    budget, window, n = ideal["budget_per_minute"], ideal["window_s"], result["credentials"]
    xs, ys, t, left = [0.0], [0], 0.0, n
    while left > 0:
        step = min(budget, left)
        xs += [t, t]
        ys += [ys[-1], ys[-1] + step]
        left -= step
        if left:
            t += window
    ax.plot(xs, ys, linestyle="--", label=f"ideal: {budget} per {window:g} s window")
    calls = sorted(result.get("do_call_times_s", []))
    if calls:
        ax.step(calls, range(1, len(calls) + 1), where="post", alpha=0.6,
                label="DigitalOcean calls (stand-in log)")
    ax.set_xlabel("seconds since the burst")
    ax.set_ylabel("count")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(f"Burst: {n:,} credentials at once, budget {budget}/min, "
                 f"429s: {result['do_429']}\n" + _caption(result), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_certs(result: dict[str, Any], plt: Any, path: Path) -> None:
    rows = [r for r in result["clients"] if r.get("runs")]
    fig, (ax_calls, ax_time) = plt.subplots(1, 2, figsize=(12, 4.8))
    labels = [r["label"] for r in rows]
    colors = ["tab:blue" if r["via"] == "acme-delegate" else "tab:orange" for r in rows]
    ax_calls.barh(labels, _finite([r["do_calls_per_cert"] for r in rows]), color=colors)
    ax_calls.set_xlabel("DigitalOcean calls per certificate (steady state)")
    ax_time.barh(labels, _finite([r["wall_s_median"] for r in rows]), color=colors)
    ax_time.set_xlabel("wall time per certificate, s (median)")
    for ax in (ax_calls, ax_time):
        ax.invert_yaxis()
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle("Per certificate (apex + wildcard): blue through acme-delegate, orange "
                 "direct token\n" + _caption(result), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_scale(result: dict[str, Any], plt: Any, path: Path) -> None:
    fig, (ax_lat, ax_mem, ax_rec) = plt.subplots(1, 3, figsize=(13, 4.5))
    runs = result["runs"]
    labels = [f"{r['database']}\n{r['credentials']:,}" for r in runs]
    ax_lat.bar(labels, _finite([r["repeat_c1"]["p50_ms"] for r in runs]), label="p50")
    ax_lat.bar(labels, _finite([r["repeat_c1"]["p99_ms"] - r["repeat_c1"]["p50_ms"]
                                for r in runs]),
               bottom=_finite([r["repeat_c1"]["p50_ms"] for r in runs]), alpha=0.4,
               label="to p99")
    ax_lat.set_ylabel("/update latency, ms (1 client, repeat path)")
    ax_lat.legend()
    ax_mem.bar(labels, _finite([r["serve_rss_kb_after"] / 1024 for r in runs]))
    ax_mem.set_ylabel("serve RSS, MiB")
    ax_rec.bar(labels, _finite([r["reconcile"]["seconds"] for r in runs]))
    ax_rec.set_ylabel("acme-delegate reconcile, s")
    for ax in (ax_lat, ax_mem, ax_rec):
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Scale: credentials in the database\n" + _caption(result), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


PLOTS: dict[str, Callable[[dict[str, Any], Any, Path], None]] = {
    "overhead": plot_overhead,
    "burst": plot_burst,
    "certs": plot_certs,
    "scale": plot_scale,
}


def render(name: str, result: dict[str, Any], results_dir: Path) -> Path | None:
    """Draw ``<results_dir>/<name>.png``; None for a benchmark without a plot."""
    draw = PLOTS.get(name)
    if draw is None:
        return None
    plt = _pyplot()
    path = results_dir / f"{name}.png"
    try:
        draw(result, plt, path)
    finally:
        plt.close("all")
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else Path(__file__).resolve().parent / "results"
    try:
        _pyplot()
    except PlottingUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2
    for path in sorted(directory.glob("*.json")):
        name = path.stem
        if name in PLOTS:
            out = render(name, json.loads(path.read_text()), directory)
            print(f"{path.name} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
