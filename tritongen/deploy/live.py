"""Live proof of a bundle's signals: a real Prometheus scrapes a real tritonserver while ``tritongen perf`` drives it.

1. measure: perf at the given levels (what a user runs on the target hardware);
2. write the bundle from that measurement (short rate window and ``for`` so a run takes seconds, not minutes);
3. start Prometheus with the bundle's rules, scraping the server with the labels a ServiceMonitor adds;
4. drive half the knee, the knee and twice the knee. Each level is read at an evaluation time chosen from what
   Prometheus scraped, not from a clock: the first scrape that saw the level's requests marks when its load began;
   the evaluation time is a later successful scrape such that the whole rate window, and the alert's ``for``
   before it, lie after that mark, with enough scrapes inside the window and the load still running after it
   (the next scrape's counter is higher). There the HPA's metric is read through the prometheus-adapter query,
   the HPA rule replayed on it, and the alerts' states read once Prometheus has evaluated its rules past it.
   A level whose load ended before such a time existed (a slow machine) is driven again, for longer;
5. run every query of the bundle (alerts, dashboard panels, adapter, KEDA) as a dashboard does: a range query
   over the driven period, counting the series that have points.

Reading at the end of a perf run instead (the first version) read a window that included the idle seconds after
the clients stopped, and gauges (pending requests, CPU, latency summaries) at an instant right after a missed
scrape, when Prometheus has marked every series of the target stale.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import TritongenError
from ..perf.results import PerfRun, files_from_run
from ..server import DEFAULT_IMAGE
from .k8s_bundle import DeployBundle, kubernetes_bundle_from_repository
from .monitoring import Queries, adapter_query, adapter_rule, alerts_for, all_queries
from .prometheus import LocalPrometheus, prometheus_scraping
from .thresholds import desired_replicas

NAMESPACE = "tritongen"
WATCHED_ALERTS = ("TritonAboveKnee", "TritonLatencyObjective", "TritonQueueTime")
COUNTER = "nv_inference_request_success"  # rises with every answered request: marks when load is running

# perf(levels, load_s): load_s None measures (perf's own windows); a number holds each level's load that long.
Perf = Callable[[tuple[int, ...], "float | None"], PerfRun]


@dataclass(frozen=True)
class SteadyWindow:
    """Where one level was read, in Unix seconds, from Prometheus's own sample timestamps."""

    load_seen_s: float  # the first scrape whose counter had risen: the load began before it
    at_s: float  # the evaluation time: a successful scrape, the rate window and the alert's ``for`` behind it loaded
    scrapes: int  # successful scrapes inside the rate window ending at at_s
    tries: int  # drives it took (more than one when a load ended before a full window was scraped)


@dataclass(frozen=True)
class LevelSignal:
    role: str  # "half knee", "knee", "2x knee"
    load: float
    client_p99_ms: float
    in_flight: float  # the HPA metric, from Prometheus through the adapter's query
    desired_replicas: int  # HPA rule replayed from 1 replica
    alerts: dict[str, str]  # alert -> "firing" | "pending" | "inactive"
    window: SteadyWindow


@dataclass(frozen=True)
class QueryResult:
    where: str
    query: str
    series: int  # series with at least one point over the driven period
    needs_gpu: bool


@dataclass(frozen=True)
class ScrapeHealth:
    scrapes: int
    failed: int  # scrapes that did not answer within the interval (``up`` 0)


@dataclass(frozen=True)
class AutoscaleProof:
    measured: PerfRun
    bundle: DeployBundle
    levels: tuple[LevelSignal, ...]
    queries: tuple[QueryResult, ...]
    scrape_health: ScrapeHealth


def _state(states: set[str]) -> str:
    return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"


@dataclass(frozen=True)
class _Timing:
    interval_s: float
    window_s: float
    for_s: float  # the watched overload alert's ``for``
    ramp_s: float  # after the first scrape that saw the load, before the window may start
    min_scrapes: int  # successful scrapes the window must hold

    @property
    def hold_s(self) -> float:
        """Load long enough, on an unloaded machine, for a steady window to be found with room to spare."""
        return self.ramp_s + self.for_s + self.window_s + 4 * self.interval_s + 2.0


def _steady_at(samples: list[tuple[float, float]], before: float, t: _Timing) -> tuple[float, float, int] | None:
    """(load seen, evaluation time, scrapes in its window) from one series' samples, or None while there is none.

    ``before`` is the counter's value just before the load started; samples are one per successful scrape."""
    seen = next((ts for ts, v in samples if v > before), None)
    if seen is None:
        return None
    earliest = seen + t.ramp_s + t.for_s + t.window_s
    for i, (ts, value) in enumerate(samples[:-1]):
        if ts < earliest:
            continue
        inside = sum(1 for s, _ in samples if ts - t.window_s < s <= ts)
        still_running = samples[i + 1][1] > value
        if inside >= t.min_scrapes and still_running:
            return seen, ts, inside
    return None


def _wait_for_scrape_after(prom: LocalPrometheus, series: str, after_s: float, timeout_s: float) -> float:
    """The value of ``series`` at its first scrape after ``after_s`` (a baseline before a load starts)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        later = [(ts, v) for ts, v in prom.samples(series, 30) if ts > after_s]
        if later:
            return later[0][1]
        time.sleep(0.25)
    raise TritongenError(
        f"Prometheus scraped {series} no more within {timeout_s:g} s", f"see {prom.workdir / 'prometheus.log'}"
    )


def _drive_level(
    prom: LocalPrometheus, perf: Perf, load: int, series: str, t: _Timing, tries: int = 3
) -> tuple[PerfRun, SteadyWindow]:
    """Drive ``load`` with perf in a thread until Prometheus holds a steady window of it (the module's 4.)."""
    hold_s = t.hold_s
    for attempt in range(1, tries + 1):
        before = _wait_for_scrape_after(prom, series, time.time(), timeout_s=30 * t.interval_s + 30)
        started_s = time.time()
        with ThreadPoolExecutor(1, thread_name_prefix=f"tritongen-drive-{load}") as pool:
            driving = pool.submit(perf, (load,), hold_s)
            found = None
            while found is None:
                done = driving.done()
                found = _steady_at(prom.samples(series, time.time() - started_s + 5), before, t)
                if found is None and done:
                    break
                time.sleep(0.25 if found is None else 0)
            run = driving.result()  # waits for the level's end; re-raises what perf raised
        if found is not None:
            seen, at_s, scrapes = found
            return run, SteadyWindow(seen, at_s, scrapes, attempt)
        hold_s *= 2
    raise TritongenError(
        f"Prometheus never held {t.window_s:g} s of steady load at concurrency {load} in {tries} drives",
        f"the machine may be too busy to scrape every {t.interval_s:g} s; see {prom.workdir / 'prometheus.log'}",
    )


def _rules_evaluated_past(prom: LocalPrometheus, at_s: float, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while prom.rules_evaluated_s() <= at_s:
        if time.monotonic() > deadline:
            raise TritongenError(
                f"Prometheus did not evaluate its rules within {timeout_s:g} s",
                f"see {prom.workdir / 'prometheus.log'}",
            )
        time.sleep(0.25)


def autoscale_proof(
    server,
    repo: Path,
    workdir: Path,
    *,
    perf: Perf,
    measure_levels: tuple[int, ...],
    slo_p99_ms: float,
    peak_rps: float | None = None,
    rate_window_s: int = 10,
    for_scale: float = 0.025,
    interval_s: float = 1.0,
    ramp_s: float = 1.0,
) -> AutoscaleProof:
    """Measure, write the bundle, and read its signals live at half, once and twice the knee (module docstring)."""
    workdir = Path(workdir)
    measured = perf(measure_levels, None)
    results = files_from_run(measured, workdir / "perf")["json"]
    bundle = kubernetes_bundle_from_repository(
        repo,
        workdir / "bundle",
        perf_results=results,
        slo_p99_ms=slo_p99_ms,
        peak_rps=peak_rps,
        rate_window=f"{rate_window_s}s",
        alert_for_scale=for_scale,
        force=True,
        image=DEFAULT_IMAGE,  # the proof reads the bundle's signals from the server here, not from an image
    )
    t = bundle.thresholds
    knee = int(t.knee_load)  # type: ignore[arg-type]  # a bundle made from perf results always has a knee
    q = Queries(job=bundle.app, model=bundle.model, window=f"{rate_window_s}s")
    above_knee = next(a for a in alerts_for(q, t, for_scale=for_scale) if a.name == "TritonAboveKnee")
    timing = _Timing(
        interval_s=interval_s,
        window_s=rate_window_s,
        for_s=float(above_knee.for_[:-1]) * (60 if above_knee.for_.endswith("m") else 1),
        ramp_s=ramp_s,
        min_scrapes=max(3, math.ceil(rate_window_s / interval_s / 2)),
    )
    pod = f"{bundle.app}-0"
    series = f'{COUNTER}{{{q.sel},version="1"}}'
    hpa_query = adapter_query(adapter_rule(q), NAMESPACE, [pod])
    levels = []
    with prometheus_scraping(
        server.metrics_url,
        workdir / "prometheus",
        job=bundle.app,
        namespace=NAMESPACE,
        pod=pod,
        rule_files=(bundle.out / "monitoring" / "rules.yaml",),
        interval_s=interval_s,
    ) as prom:
        started_s = time.time()
        for role, load in (("half knee", max(1, knee // 2)), ("knee", knee), ("2x knee", 2 * knee)):
            run, window = _drive_level(prom, perf, load, series, timing)
            _rules_evaluated_past(prom, window.at_s + interval_s, timeout_s=30 * interval_s + 30)
            samples = prom.query(hpa_query, window.at_s)
            in_flight = samples[0].value if samples else math.nan
            desired = desired_replicas(1, in_flight, t.target_in_flight) if samples else 0
            alerts = {name: _state(prom.alerts(name, window.at_s)) for name in WATCHED_ALERTS}
            levels.append(LevelSignal(role, load, run.points[0].latency.p99_ms, in_flight, desired, alerts, window))
        ended_s = time.time()
        found = tuple(
            QueryResult(where, expr, len(prom.query_range(expr, started_s, ended_s, interval_s)), gpu)
            for where, expr, gpu in all_queries(q, t, (NAMESPACE, [pod]))
        )
        up = prom.samples(q.up(), ended_s - started_s + 5, ended_s)
        health = ScrapeHealth(len(up), sum(1 for _, v in up if v == 0))
    return AutoscaleProof(measured, bundle, tuple(levels), found, health)


def proof_table(proof: AutoscaleProof) -> str:
    t = proof.bundle.thresholds
    lines = [
        f"knee: {t.mode} {t.knee_load:g} (p99 {t.knee_p99_ms:.1f} ms <= {t.slo_p99_ms:g} ms), capacity "
        f"{t.capacity_rps:.1f} req/s per replica, HPA target {t.target_in_flight:g} requests in flight per replica",
        "measured: "
        + "; ".join(
            f"{r.load:g}: {r.throughput_rps:.1f} req/s, p99 {r.p99_ms:.1f} ms, "
            f"{r.in_flight:.2f} in flight, queue {r.queue_us / 1000:.1f} ms"
            for r in t.levels
        ),
        f"{'level':>10} {'load':>5} {'p99 ms':>8} {'in flight':>9} {'replicas':>8}  alerts",
    ]
    for lv in proof.levels:
        alerts = ", ".join(f"{k}={v}" for k, v in lv.alerts.items())
        lines.append(
            f"{lv.role:>10} {lv.load:>5g} {lv.client_p99_ms:>8.1f} {lv.in_flight:>9.2f} "
            f"{lv.desired_replicas:>8}  {alerts}"
        )
    for lv in proof.levels:
        w = lv.window
        lines.append(
            f"{lv.role:>10}: read {w.at_s - w.load_seen_s:.1f} s after its load was first scraped, "
            f"{w.scrapes} scrapes in the rate window, drive {w.tries}"
        )
    h = proof.scrape_health
    lines.append(f"scrapes: {h.scrapes}, {h.failed} missed")
    empty = [r.where for r in proof.queries if r.series == 0]
    lines.append(
        f"queries: {len(proof.queries)} run, {len(proof.queries) - len(empty)} returned data; empty: "
        + (", ".join(empty) or "none")
    )
    return "\n".join(lines)
