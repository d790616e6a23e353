"""The HTML report: plots (matplotlib, Agg, PNG embedded as base64) and tables for one or more runs.

Plots: throughput vs concurrency / request rate, latency percentiles vs throughput, and the server-side
breakdown of each load level's mean latency (queue, compute input/infer/output, and what is left: client
and network). Several runs (``tritongen perf --compare a.json b.json``) share each plot. The file is
self-contained: no script, no network.

Every plot's size is bounded whatever the runs hold (many runs compared, a crafted results.json): the bar charts
draw at most :data:`MAX_BAR_ROWS` load levels and :data:`MAX_POINT_VERSIONS` versions (their titles say what was
left out; the tables list every level), the throughput plot labels at most :data:`MAX_TICKS` levels, and a
figure that still comes out over :data:`MAX_PLOT_PIXELS` on a side is written at a lower resolution (down to
:data:`MIN_PLOT_DPI`; a larger one is refused).
"""

from __future__ import annotations

import base64
import html
import io
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import TritongenError
from ..files import replace_file
from .results import (
    MAX_LEVELS,
    MAX_POINT_VERSIONS,
    SERVER_PARTS,
    PerfPoint,
    PerfRun,
    client_bound_note,
    comparison_lines,
    version_count_text,
)

MAX_BAR_ROWS = MAX_LEVELS  # load levels a bar chart draws (all runs together): one run's at most, ~4,200 px tall
MAX_TICKS = 16  # measured levels named on the throughput plot's x axis; more: matplotlib's own (whole) ticks
MAX_PLOT_PIXELS = 8192  # a side of a PNG, whatever the legends hold (hundreds of runs compared): lower dpi beyond
PLOT_DPI = 100
MIN_PLOT_DPI = 20  # below this a figure is refused: 8-point text would be 2 pixels high
PLOT_PAD_INCHES = 0.1  # matplotlib's default margin around a tight figure

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
PART_COLORS = {
    "queue_us": "#9ecae1",
    "compute_input_us": "#fdae6b",
    "compute_infer_us": "#e6550d",
    "compute_output_us": "#fdd0a2",
    "other_us": "#d9d9d9",
}
PART_LABELS = {
    "queue_us": "queue",
    "compute_input_us": "compute input",
    "compute_infer_us": "compute infer",
    "compute_output_us": "compute output",
    "other_us": "client + network",
}


def time_parts_us(p: PerfPoint) -> dict[str, float]:
    """A request's mean time by part: the server's queue and compute (an ensemble's own statistics leave out its
    steps' queues and batchers, so its steps' figures, summed: they run one after the other), and the rest of the
    client's mean latency as client + network."""
    sources = list(p.steps.values()) or [p.server]
    parts = {k: sum(getattr(s, k) for s in sources) for k in SERVER_PARTS}
    parts["other_us"] = max(0.0, p.latency.mean_ms * 1000 - sum(parts.values()))
    return parts


def _figure_png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches: what bbox_inches="tight" writes, less its pad
        side = max(box.width, box.height) + 2 * PLOT_PAD_INCHES
        dpi = min(float(PLOT_DPI), MAX_PLOT_PIXELS / side)
        if dpi < MIN_PLOT_DPI:  # its text would be a pixel high (FreeType refuses smaller)
            raise ValueError(f"a figure {side:.0f} inches long, over {MAX_PLOT_PIXELS} pixels at {MIN_PLOT_DPI} dpi")
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", pad_inches=PLOT_PAD_INCHES)
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def plots_from_runs(runs: Sequence[PerfRun]) -> list[tuple[str, str]]:
    """``(title, base64 PNG)`` for each plot; a run whose texts matplotlib cannot draw is a
    :class:`TritongenError`."""
    import matplotlib

    matplotlib.use("Agg")
    # Every text on a figure (a run's label, its model, a version's name) comes from a results.json: drawn as
    # given, never parsed as mathtext ("$\foo$" fails, "$" "{" * 1500 ... "$" exhausts the parser's recursion)
    # nor typeset with LaTeX, whatever the user's matplotlibrc says.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        try:
            return _plots(runs)
        except (ValueError, RecursionError, OverflowError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise TritongenError(
                f"the report's plots cannot be drawn ({reason})",
                "shorten the runs' labels (--label) and names, or compare fewer runs, then write the report again",
            ) from None


def _legend_beside(ax: Any, *handles_and_names: Any) -> None:
    """The legend to the right of the axes, where it covers no point (the figure grows to hold it)."""
    ax.legend(*handles_and_names, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def _plots(runs: Sequence[PerfRun]) -> list[tuple[str, str]]:
    import matplotlib.pyplot as plt

    plots = []
    for mode, xlabel in (
        ("concurrency", "concurrency (requests in flight)"),
        ("request_rate", "offered request rate (req/s)"),
    ):
        if not any(p.mode == mode for r in runs for p in r.points):
            continue
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for i, run in enumerate(runs):
            pts = sorted((p for p in run.points if p.mode == mode), key=lambda p: p.load)
            if pts:
                ax.plot(
                    [p.load for p in pts],
                    [p.throughput_rps for p in pts],
                    "o-",
                    color=COLORS[i % len(COLORS)],
                    label=run.name,
                )
        if mode == "request_rate":
            top = max(p.load for r in runs for p in r.points if p.mode == mode)
            ax.plot([0, top], [0, top], ":", color="grey", label="offered = served")
        if mode == "concurrency":
            levels = sorted({p.load for r in runs for p in r.points if p.mode == mode})
            if levels[-1] >= 8 * levels[0]:
                ax.set_xscale("log", base=2)  # 1, 2, 4, ... 64 evenly spaced
                ax.minorticks_off()
            if len(levels) <= MAX_TICKS:
                ax.set_xticks(levels)  # the measured levels, never fractional concurrencies
                ax.set_xticklabels([f"{v:g}" for v in levels])
            else:  # too many to name each: whole numbers (powers of 2 on the log scale)
                from matplotlib.ticker import MaxNLocator

                if ax.get_xscale() == "linear":
                    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("throughput (req/s)")
        ax.grid(alpha=0.3)
        _legend_beside(ax)  # beside the axes: inside, it covered points
        plots.append((f"Throughput vs {'concurrency' if mode == 'concurrency' else 'request rate'}", _figure_png(fig)))

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    styles = (("p50_ms", "-", "p50"), ("p90_ms", "--", "p90"), ("p99_ms", ":", "p99"))
    for i, run in enumerate(runs):
        for mode, marker, suffix in (("concurrency", "o", ""), ("request_rate", "s", " (open loop)")):
            pts = sorted((p for p in run.points if p.mode == mode), key=lambda p: p.throughput_rps)
            if not pts:
                continue
            for key, style, name in styles:
                ax.plot(
                    [p.throughput_rps for p in pts],
                    [getattr(p.latency, key) for p in pts],
                    style,
                    marker=marker,
                    markersize=3,
                    color=COLORS[i % len(COLORS)],
                    label=f"{run.name} {name}{suffix}",
                )
    ax.set_xlabel("throughput (req/s)")
    ax.set_ylabel("latency (ms)")
    ax.grid(alpha=0.3)
    # one entry per run (its colour) and one per percentile (its line), beside the axes: an entry per run and
    # percentile inside them (15 for 5 runs) covered most of the plot
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=COLORS[i % len(COLORS)], marker="o", markersize=3) for i in range(len(runs))]
    handles += [Line2D([], [], color="grey", linestyle=style) for _, style, _ in styles]  # type: ignore[arg-type]
    names = [run.name for run in runs] + [name for _, _, name in styles]
    if any(p.mode == "request_rate" for r in runs for p in r.points):
        handles.append(Line2D([], [], color="grey", marker="s", markersize=3, linestyle=""))
        names.append("open loop")
    _legend_beside(ax, handles, names)
    plots.append(("Latency percentiles vs throughput", _figure_png(fig)))

    every = [(run, p) for run in runs for p in run.points]
    rows = every[:MAX_BAR_ROWS]  # the chart's height grows with its rows: bounded
    if rows:
        fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.32 * len(rows)))
        labels = []
        for y, (run, p) in enumerate(rows):
            left = 0.0
            parts = time_parts_us(p)
            for key, value in parts.items():
                ax.barh(y, value / 1000, left=left, color=PART_COLORS[key], label=PART_LABELS[key] if y == 0 else None)
                left += value / 1000
            labels.append(f"{run.name if len(runs) > 1 else ''} {load_label(p.mode, p.load)}".strip())
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("mean latency per request (ms)")
        # Above the axes, so it never covers the end of a bar.
        ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=len(PART_LABELS), frameon=False)
        ax.grid(axis="x", alpha=0.3)
        title = "Where the time goes (server statistics API" + (
            "; an ensemble's bar sums its steps)" if any(p.steps for _, p in rows) else ")"
        )
        title += left_out_text(len(rows), len(every))
        plots.append((title, _figure_png(fig)))
    versioned = [(run, p) for run in runs for p in run.points if p.versions]
    if versioned:
        shown = versioned[:MAX_BAR_ROWS]
        versions = sorted({v for _, p in shown for v in p.versions}, key=version_order)
        title = "Versions compared (--version-split): p50 / p99 and throughput" + left_out_text(
            len(shown), len(versioned)
        )
        if len(versions) > MAX_POINT_VERSIONS:
            title += f" (the first {MAX_POINT_VERSIONS} of {len(versions)} versions; the tables list every one)"
        plots.append((title, _versions_png(runs, shown, versions[:MAX_POINT_VERSIONS])))
    return plots


def left_out_text(shown: int, total: int) -> str:
    """What a bar chart of ``shown`` of ``total`` load levels says of the rest."""
    return "" if shown == total else f" (the first {shown} of {total} levels; the tables list every one)"


def version_order(version: str) -> tuple[int, int, str]:
    """Versions by number (without int(): a name from the API may be any text), other names after them."""
    if version.isascii() and version.isdigit():
        number = version.lstrip("0")
        return (0, len(number), number)
    return (1, 0, version)


def _versions_png(runs: Sequence[PerfRun], rows, versions: Sequence[str]) -> str:
    """One group of bars per load level: each version's p50 and p99 (left axis) and its throughput (right)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (lat_ax, rps_ax) = plt.subplots(1, 2, figsize=(6.4, 3.4))
    x = np.arange(len(rows))
    width = 0.8 / len(versions)
    for j, version in enumerate(versions):
        color = COLORS[j % len(COLORS)]
        figures = [p.versions.get(version) for _, p in rows]
        p50 = [f.latency.p50_ms if f else 0.0 for f in figures]
        p99 = [f.latency.p99_ms if f else 0.0 for f in figures]
        rps = [f.throughput_rps if f else 0.0 for f in figures]
        lat_ax.bar(x + j * width, p99, width, color=color, alpha=0.45, label=f"v{version} p99")
        lat_ax.bar(x + j * width, p50, width, color=color, label=f"v{version} p50")
        rps_ax.bar(x + j * width, rps, width, color=color, label=f"v{version}")
    labels = [f"{run.name if len(runs) > 1 else ''} {load_label(p.mode, p.load)}".strip() for run, p in rows]
    for ax, ylabel in ((lat_ax, "latency (ms)"), (rps_ax, "throughput (req/s)")):
        ax.set_xticks(x + width * (len(versions) - 1) / 2)
        ax.set_xticklabels(labels, fontsize=7, rotation=20)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    with warnings.catch_warnings():  # long names: bbox_inches="tight" fits them anyway, matplotlib need not say
        warnings.filterwarnings("ignore", message="Tight layout not applied", category=UserWarning)
        fig.tight_layout()
    return _figure_png(fig)


def html_from_runs(runs: Sequence[PerfRun], title: str | None = None) -> str:
    from ..templates import render

    runs = list(runs)
    return render(
        "report.html.j2",
        title=html.escape(title or ("tritongen perf: " + " vs ".join(r.name for r in runs))),
        generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        runs=[_run_view(r) for r in runs],
        comparison=[html.escape(line) for line in comparison_lines(runs)],
        plots=[(html.escape(t), png) for t, png in plots_from_runs(runs)],
    )


def load_label(mode: str, load: float) -> str:
    return f"{load:g} in flight" if mode == "concurrency" else f"{load:g} req/s"


def metric_text(name: str, value: float) -> str:
    """A Prometheus gauge as people read it: bytes in binary units, utilisation as a percentage, power in watts."""
    if name.endswith("_bytes"):
        for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if abs(value) >= size:
                return f"{value / size:,.2f} {unit}"
        return f"{value:,.0f} B"
    if name.endswith("_utilization"):
        return f"{value * 100:.1f} %"  # Triton reports utilisation as a fraction of 1
    if name.endswith("_power_usage"):
        return f"{value:,.1f} W"
    return f"{value:,.6g}"


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def client_cpu_text(p: PerfPoint) -> str:
    """The load generator's CPU: the built-in engine's over the measured windows (cores busy, per request);
    perf_analyzer's per request over its whole process (start-up and its discarded windows included)."""
    if p.client_cpu_cores is not None:
        per_request = f", {p.client_cpu_us_per_request:.0f} &micro;s/req" if p.client_cpu_us_per_request else ""
        return f"{p.client_cpu_cores:.2f}{per_request}" + (" (bound)" if p.client_bound else "")
    if p.client_cpu_us_per_request is not None:
        return f"{p.client_cpu_us_per_request:.0f} &micro;s/req (whole run)"
    return "-"


def server_cpu_text(p: PerfPoint) -> str:
    """A local server's CPU per request it answered, its cores busy and its threads' wakeups per request."""
    if p.server_cpu_us_per_request is None or p.server_cpu_cores is None:
        return "-"
    text = f"{p.server_cpu_cores:.2f}, {p.server_cpu_us_per_request:.0f} &micro;s/req"  # as the client's column
    if p.server_wakeups_per_request is not None:
        text += f", {p.server_wakeups_per_request:.1f} wakeups/req"
    return text


def _run_view(run: PerfRun) -> dict:
    rows = []
    for p in run.points:
        rows.append(
            {
                "load": load_label(p.mode, p.load),
                "throughput": _fmt(p.throughput_rps, 1),
                "mean": _fmt(p.latency.mean_ms),
                "p50": _fmt(p.latency.p50_ms),
                "p90": _fmt(p.latency.p90_ms),
                "p95": _fmt(p.latency.p95_ms),
                "p99": _fmt(p.latency.p99_ms),
                "max": _fmt(p.latency.max_ms),
                "errors": html.escape(", ".join(f"{k}: {v}" for k, v in p.errors.items()) or "0"),
                "queue": _fmt(p.server.queue_us, 0),
                "infer": _fmt(p.server.compute_infer_us, 0),
                "batch": _fmt(p.server.avg_batch) if p.server.executions else "-",
                "stable": "yes" if p.stable else "no",
                "step": False,
                "client": client_cpu_text(p),
                "server_cpu": server_cpu_text(p),
            }
        )
        for name, step in p.steps.items():  # an ensemble: how each composing model queued, computed and batched
            rows.append(
                {
                    "load": f"&nbsp;&nbsp;step {html.escape(name)}",
                    "step": True,
                    **{
                        k: ""
                        for k in (
                            "throughput",
                            "mean",
                            "p50",
                            "p90",
                            "p95",
                            "p99",
                            "max",
                            "errors",
                            "stable",
                            "client",
                            "server_cpu",
                        )
                    },
                    "queue": _fmt(step.queue_us, 0),
                    "infer": _fmt(step.compute_infer_us, 0),
                    "batch": _fmt(step.avg_batch) if step.executions else "-",
                }
            )
        for version, v in p.versions.items():  # --version-split: each version's own figures
            rows.append(
                {
                    "load": f"&nbsp;&nbsp;version {html.escape(version)} ({v.share_pct}%)",
                    "step": True,
                    "throughput": _fmt(v.throughput_rps, 1),
                    "mean": _fmt(v.latency.mean_ms),
                    "p50": _fmt(v.latency.p50_ms),
                    "p90": _fmt(v.latency.p90_ms),
                    "p95": _fmt(v.latency.p95_ms),
                    "p99": _fmt(v.latency.p99_ms),
                    "max": _fmt(v.latency.max_ms),
                    "errors": html.escape(", ".join(f"{k}: {n}" for k, n in v.errors.items()) or "0"),
                    "queue": _fmt(v.server.queue_us, 0),
                    "infer": _fmt(v.server.compute_infer_us, 0),
                    "batch": _fmt(v.server.avg_batch) if v.server.executions else "-",
                    "stable": "",
                    "client": html.escape(version_count_text(v)),
                    "server_cpu": "",
                }
            )
    return {
        "name": html.escape(run.name),
        "model": html.escape(run.model),
        "url": html.escape(run.url),
        "protocol": html.escape(run.protocol),
        "engine": html.escape(run.engine),
        "partial": run.partial,
        "partial_reason": html.escape(run.partial_reason),
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.started_unix_s)) if run.started_unix_s else "",
        "inputs": html.escape(str(run.settings.get("inputs", ""))),
        "rows": rows,
        "metrics": [(html.escape(k), metric_text(k, v)) for k, v in sorted(run.metrics.items())],
        "stability_pct": f"{_setting_number(run.settings, 'stability_pct', 10.0):g}",
        "client_note": html.escape(client_bound_note(run)),
        "server_cpu": any(p.server_cpu_us_per_request is not None for p in run.points),
    }


def _setting_number(settings: Mapping[str, Any], name: str, default: float) -> float:
    """A number from a run's settings (free-form in a results.json): the default when it is not a finite one."""
    value = settings.get(name, default)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else default


def report_from_runs(runs: Sequence[PerfRun], out_dir: Path, title: str | None = None, force: bool = False) -> Path:
    """Write ``report.html`` (and each run's JSON/CSV when there is one run) into ``out_dir``, created if missing.

    A destination that cannot take them is refused (:func:`~tritongen.perf.results.check_report_dir`: an earlier
    report there without ``force``) before anything is written; so is a run the report cannot render.
    """
    from .results import check_report_dir, distinct_names, files_from_run

    out_dir = Path(out_dir)
    check_report_dir(out_dir, force)
    page = html_from_runs(distinct_names(runs), title)
    if len(runs) == 1:
        files_from_run(runs[0], out_dir)
    path = out_dir / "report.html"
    out_dir.mkdir(parents=True, exist_ok=True)
    replace_file(path, page)
    return path
