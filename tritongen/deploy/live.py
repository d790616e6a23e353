"""Live proof of a bundle's signals: a real Prometheus scrapes a real tritonserver while ``tritongen perf`` drives it.

1. measure: perf at the given levels (what a user runs on the target hardware);
2. write the bundle from that measurement (short rate window and ``for`` so a run takes seconds, not minutes);
3. start Prometheus with the bundle's rules, scraping the server with the labels a ServiceMonitor adds;
4. drive half the knee, the knee and twice the knee; at the end of each, read the HPA's metric through the
   prometheus-adapter query, replay the HPA rule on it, and read which alerts are pending or firing;
5. run every query of the bundle (alerts, dashboard panels, adapter, KEDA) and count what each returns.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..perf.results import PerfRun, files_from_run
from .k8s_bundle import DeployBundle, kubernetes_bundle_from_repository
from .monitoring import Queries, adapter_query, adapter_rule, all_queries
from .prometheus import prometheus_scraping
from .thresholds import desired_replicas

NAMESPACE = "tritongen"
WATCHED_ALERTS = ("TritonAboveKnee", "TritonLatencyObjective", "TritonQueueTime")


@dataclass(frozen=True)
class LevelSignal:
    role: str  # "half knee", "knee", "2x knee"
    load: float
    client_p99_ms: float
    in_flight: float  # the HPA metric, from Prometheus through the adapter's query
    desired_replicas: int  # HPA rule replayed from 1 replica
    alerts: dict[str, str]  # alert -> "firing" | "pending" | "inactive"


@dataclass(frozen=True)
class QueryResult:
    where: str
    query: str
    series: int
    needs_gpu: bool


@dataclass(frozen=True)
class AutoscaleProof:
    measured: PerfRun
    bundle: DeployBundle
    levels: tuple[LevelSignal, ...]
    queries: tuple[QueryResult, ...]


def _state(states: set[str]) -> str:
    return "firing" if "firing" in states else "pending" if "pending" in states else "inactive"


def autoscale_proof(
    server,
    repo: Path,
    workdir: Path,
    *,
    perf: Callable[[tuple[int, ...], str], PerfRun],
    measure_levels: tuple[int, ...],
    slo_p99_ms: float,
    peak_rps: float | None = None,
    rate_window_s: int = 10,
    for_scale: float = 0.025,
    settle_s: float = 2.0,
) -> AutoscaleProof:
    """``perf(levels, phase)`` runs tritongen perf on the served model (phase: "measure" or "drive")."""
    workdir = Path(workdir)
    measured = perf(measure_levels, "measure")
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
    )
    t = bundle.thresholds
    knee = int(t.knee_load)  # type: ignore[arg-type]  # a bundle made from perf results always has a knee
    q = Queries(job=bundle.app, model=bundle.model, window=f"{rate_window_s}s")
    pod = f"{bundle.app}-0"
    hpa_query = adapter_query(adapter_rule(q), NAMESPACE, [pod])
    levels = []
    with prometheus_scraping(
        server.metrics_url,
        workdir / "prometheus",
        job=bundle.app,
        namespace=NAMESPACE,
        pod=pod,
        rule_files=(bundle.out / "monitoring" / "rules.yaml",),
    ) as prom:
        for role, load in (("half knee", max(1, knee // 2)), ("knee", knee), ("2x knee", 2 * knee)):
            run = perf((load,), "drive")
            at_s = time.time() - 0.5  # the level's last instant, before its clients stop
            samples = prom.query(hpa_query, at_s)
            in_flight = samples[0].value if samples else math.nan
            desired = desired_replicas(1, in_flight, t.target_in_flight) if samples else 0
            alerts = {name: _state(prom.alerts(name, at_s)) for name in WATCHED_ALERTS}
            levels.append(LevelSignal(role, load, run.points[0].latency.p99_ms, in_flight, desired, alerts))
            if role != "2x knee":
                time.sleep(settle_s)
            else:
                results_at = at_s
        found = tuple(
            QueryResult(where, expr, len(prom.query(expr, results_at)), gpu)
            for where, expr, gpu in all_queries(q, t, (NAMESPACE, [pod]))
        )
    return AutoscaleProof(measured, bundle, tuple(levels), found)


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
    empty = [r.where for r in proof.queries if r.series == 0]
    lines.append(
        f"queries: {len(proof.queries)} run, {len(proof.queries) - len(empty)} returned data; empty: "
        + (", ".join(empty) or "none")
    )
    return "\n".join(lines)
