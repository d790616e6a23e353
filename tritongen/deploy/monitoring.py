"""Prometheus queries on Triton's metrics, and what is built from them: alert rules (plain and as a PrometheusRule),
their promtool unit tests, prometheus-adapter rules, a KEDA ScaledObject and a Grafana dashboard.

Every query is written once here (:class:`Queries`) and used by every file, so a test that runs them against a
live Prometheus covers the bundle. Metric names are the ones Triton 2.51 exposes (checked against the server
in the nvidia-pytriton wheel): the ``nv_inference_*`` counters and ``nv_inference_pending_request_count`` per
model and version, ``nv_inference_request_summary_us`` with ``--metrics-config summary_latencies=true``, and
``nv_gpu_*`` only where the server sees a GPU.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Any

from ..errors import TritongenError
from ..names import shown
from .thresholds import Thresholds

ADAPTER_SERIES = "nv_inference_request_duration_us"
# A canary (a KServe revision, or a version beside the live one) whose p99 is this many times the best version's,
# or whose failure ratio exceeds the best version's by the failure alert's ratio, is worse than the stable one.
CANARY_P99_RATIO = 1.5


# ------------------------------------------------------------------------------------------- text in queries

# Characters a label value keeps as themselves in a query; every other ASCII character is written as an escape.
_PLAIN = frozenset(string.ascii_letters + string.digits + "_.-:/@ ")
_RE2_META = frozenset("\\.+*?()|[]{}^$")  # what Go's regexp.QuoteMeta escapes


def label_value(text: str) -> str:
    """``text`` as a PromQL string literal that Prometheus reads back as exactly ``text`` (its lexer takes Go's
    escapes: https://prometheus.io/docs/prometheus/latest/querying/basics/#string-literals).

    Backslash, double quote and newline get their escapes; every other ASCII character outside letters, digits and
    ``_.-:/@`` and space (control characters, ``{``, ``}``, ``<``, ``$``, ``[``, backquote...) is written as
    ``\\uXXXX``, as is any non-ASCII character that is not printable. So no value can end the string and add
    matchers, nor be read as a template by what reads a query before Prometheus does: prometheus-adapter's
    ``<<...>>`` metricsQuery template, Grafana's ``$variable`` and ``[[variable]]`` interpolation. Every label
    value a query holds (model, job, namespace, pod) goes through here."""
    out = []
    for char in text:
        code = ord(char)
        if char in _PLAIN or (code > 0x7F and char.isprintable()):
            out.append(char)
        elif char in '\\"':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif 0xD800 <= code < 0xE000:  # a lone surrogate (an undecodable file name's byte): no UTF-8 for it
            raise TritongenError(
                f"label value '{shown(text)}' holds a character that is not valid UTF-8 (a lone surrogate)",
                "rename what holds it (a model: its folder and config.pbtxt name) with letters, digits, '_', '.' "
                "and '-'",
            )
        else:
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def regex_quote(text: str) -> str:
    """``text`` as an RE2 regular expression matching exactly ``text`` (Go's ``regexp.QuoteMeta``)."""
    return "".join("\\" + c if c in _RE2_META else c for c in text)


def regex_value(alternatives: list[str]) -> str:
    """A PromQL string literal for a ``=~`` matcher matching exactly one of ``alternatives``."""
    return label_value("|".join(regex_quote(a) for a in alternatives))


def template_text(text: str) -> str:
    """``text`` as a Go template that renders exactly ``text``: Prometheus expands every alert label and annotation
    value as a template at alert time (``{{ query "..." }}`` runs a query), so each ``{{`` of a model name or file
    name is written as an action printing ``{{``. Text outside an action has no other special sequence."""
    return text.replace("{{", '{{ "{{" }}')


def metric_name_for(model: str) -> str:
    """The custom metric's name as prometheus-adapter serves it and the HPA asks for it."""
    return "triton_in_flight_" + re.sub(r"[^a-zA-Z0-9_]", "_", model).lower()


@dataclass(frozen=True)
class Queries:
    """PromQL for one model served by one Prometheus job; ``window`` is every rate's range (1m in a cluster)."""

    job: str
    model: str
    window: str = "1m"
    idle_window: str = "15m"

    @property
    def sel(self) -> str:
        return f"job={label_value(self.job)},model={label_value(self.model)}"

    def rate(self, metric: str, by: str, window: str | None = None) -> str:
        return f"sum by ({by}) (rate({metric}{{{self.sel}}}[{window or self.window}]))"

    # --- signals (what alerts compare with a level, and the HPA reads)
    def in_flight_per_pod(self) -> str:
        return f"{self.rate('nv_inference_request_duration_us', 'namespace, pod')} / 1e6"

    def in_flight_total(self, namespace: str) -> str:
        sel = f"namespace={label_value(namespace)},{self.sel}"
        return f"sum(rate(nv_inference_request_duration_us{{{sel}}}[{self.window}])) / 1e6"

    def p99_ms(self) -> str:
        return f'max by (namespace, pod) (nv_inference_request_summary_us{{{self.sel},quantile="0.99"}}) / 1000'

    def queue_us_per_request(self) -> str:
        return (
            f"{self.rate('nv_inference_queue_duration_us', 'namespace')}"
            f" / {self.rate('nv_inference_request_success', 'namespace')}"
        )

    def failure_ratio_by_reason(self) -> str:
        failures = self.rate("nv_inference_request_failure", "namespace, reason")
        total = (
            f"({self.rate('nv_inference_request_success', 'namespace')}"
            f" + {self.rate('nv_inference_request_failure', 'namespace')})"
        )
        return f"{failures} / ignoring (reason) group_left () {total}"

    # --- versions compared (A/B on one server, a canary revision): Triton labels every series with ``version``
    def versions_p99_ms(self) -> str:
        return f'max by (namespace, version) (nv_inference_request_summary_us{{{self.sel},quantile="0.99"}}) / 1000'

    def versions_per_request_ms(self, metric: str) -> str:
        """A cumulative duration per successful request, per version (request, queue or compute time)."""
        v = "namespace, version"
        return f"{self.rate(metric, v)} / {self.rate('nv_inference_request_success', v)} / 1000"

    def versions_failure_ratio(self) -> str:
        v = "namespace, version"
        failures = self.rate("nv_inference_request_failure", v)
        return f"{failures} / ({self.rate('nv_inference_request_success', v)} + {failures})"

    def versions_rps(self) -> str:
        return self.rate("nv_inference_request_success", "namespace, version")

    def canary_failure_ratio(self, margin: float) -> str:
        """Versions failing ``margin`` more of their requests than the best version of the namespace."""
        ratio = self.versions_failure_ratio()
        return f"{ratio} > on (namespace) group_left () (min by (namespace) ({ratio}) + {margin:g})"

    def canary_p99(self, ratio: float) -> str:
        """Versions whose p99 is ``ratio`` times the best version's."""
        p99 = self.versions_p99_ms()
        return f"{p99} > on (namespace) group_left () (min by (namespace) ({p99}) * {ratio:g})"

    def up(self) -> str:
        return f"up{{job={label_value(self.job)}}}"

    def model_not_ready(self) -> str:
        """Pods not scraped, or scraped without this model's series (Triton drops them when a model is not loaded)."""
        return (
            f"({self.up()} == 0) or ({self.up()} == 1 unless on (namespace, pod) "
            f"nv_inference_request_success{{{self.sel}}})"
        )

    def traffic_rps(self) -> str:
        return self.rate("nv_inference_request_success", "namespace", self.idle_window)

    def gpu_memory_ratio(self) -> str:
        sel = f"job={label_value(self.job)}"
        return (
            f"max by (namespace, pod, gpu_uuid) (nv_gpu_memory_used_bytes{{{sel}}}"
            f" / nv_gpu_memory_total_bytes{{{sel}}})"
        )


@dataclass(frozen=True)
class Alert:
    name: str
    signal: str  # the query that has data whenever the server is scraped (GPU ones: where a GPU is)
    expr: str
    for_: str
    severity: str
    summary: str
    needs_gpu: bool = False


def alerts_for(q: Queries, t: Thresholds, *, for_scale: float = 1.0) -> list[Alert]:
    """The alerts, their levels from ``t``. ``for_scale`` shortens every ``for`` (a live test uses seconds)."""

    def dur(seconds: float) -> str:
        s = max(1, math.ceil(seconds * for_scale))
        return f"{s // 60}m" if s % 60 == 0 else f"{s}s"

    mark = t.mark
    return [
        Alert(
            "TritonLatencyObjective",
            q.p99_ms(),
            f"{q.p99_ms()} > {t.slo_p99_ms:g}",
            dur(300),
            "page",
            f"p99 latency of {t.model} above the {t.slo_p99_ms:g} ms objective",
        ),
        Alert(
            "TritonAboveKnee",
            q.in_flight_per_pod(),
            f"{q.in_flight_per_pod()} > {t.above_knee_in_flight:g}",
            dur(120),
            "page",
            f"requests in flight per replica of {t.model} above {t.above_knee_in_flight:g} "
            f"(1.5x the {mark} knee's {t.target_in_flight:g}): scaling is not keeping up",
        ),
        Alert(
            "TritonQueueTime",
            q.queue_us_per_request(),
            f"{q.queue_us_per_request()} > {t.queue_alert_us:g}",
            dur(300),
            "warning",
            f"mean queue time of {t.model} above {t.queue_alert_us:g} us ({mark})",
        ),
        Alert(
            "TritonFailureRatio",
            q.failure_ratio_by_reason(),
            f"{q.failure_ratio_by_reason()} > {t.failure_ratio_alert:g}",
            dur(300),
            "page",
            f"more than {t.failure_ratio_alert:.0%} of {t.model}'s requests fail with one reason",
        ),
        Alert(
            "TritonModelNotReady",
            q.up(),
            q.model_not_ready(),
            dur(120),
            "page",
            f"a Triton pod is down or has not loaded {t.model}",
        ),
        Alert(
            "TritonNoTraffic",
            q.traffic_rps(),
            f"{q.traffic_rps()} == 0",
            dur(900),
            "warning",
            f"{t.model} answered no request in {q.idle_window}",
        ),
        Alert(
            "TritonGPUMemory",
            q.gpu_memory_ratio(),
            f"{q.gpu_memory_ratio()} > {t.gpu_memory_alert_ratio:g}",
            dur(300),
            "warning",
            f"GPU memory above {t.gpu_memory_alert_ratio:.0%} on a Triton pod",
            needs_gpu=True,
        ),
        Alert(
            "TritonCanaryFailureRatio",
            q.versions_failure_ratio(),
            q.canary_failure_ratio(t.failure_ratio_alert),
            dur(300),
            "page",
            f"a version of {t.model} fails {t.failure_ratio_alert:.0%} more of its requests than the best version "
            "(canary worse than stable)",
        ),
        Alert(
            "TritonCanaryLatency",
            q.versions_p99_ms(),
            q.canary_p99(CANARY_P99_RATIO),
            dur(300),
            "warning",
            f"a version of {t.model} has a p99 over {CANARY_P99_RATIO:g}x the best version's "
            "(canary slower than stable)",
        ),
    ]


def recording_rules(q: Queries, t: Thresholds) -> list[dict[str, Any]]:
    """Per-version series (``tritongen:version_*``) a dashboard or a query compares a canary with: throughput, p99,
    mean latency, queue and compute time per request, failure ratio."""
    records = (
        ("tritongen:version_throughput_rps", q.versions_rps()),
        ("tritongen:version_p99_ms", q.versions_p99_ms()),
        ("tritongen:version_latency_ms", q.versions_per_request_ms("nv_inference_request_duration_us")),
        ("tritongen:version_queue_ms", q.versions_per_request_ms("nv_inference_queue_duration_us")),
        ("tritongen:version_compute_ms", q.versions_per_request_ms("nv_inference_compute_infer_duration_us")),
        ("tritongen:version_failure_ratio", q.versions_failure_ratio()),
    )
    # a recording rule's labels are stored as written, not expanded as templates
    return [{"record": name, "expr": expr, "labels": {"model": t.model}} for name, expr in records]


def rule_groups(q: Queries, t: Thresholds, *, for_scale: float = 1.0) -> list[dict[str, Any]]:
    """Prometheus rule groups (the body of a rules file, and of a PrometheusRule's spec)."""
    rules = [
        {
            "alert": a.name,
            "expr": a.expr,
            "for": a.for_,
            # expanded as templates at alert time: the model's and the results file's names must render as written
            "labels": {"severity": a.severity, "model": template_text(t.model), "thresholds": t.mark},
            "annotations": {
                "summary": template_text(a.summary),
                "thresholds": template_text(f"{t.mark}: {t.source}"),
            },
        }
        for a in alerts_for(q, t, for_scale=for_scale)
    ]
    return [
        {"name": f"tritongen-{q.job}", "rules": rules},
        {"name": f"tritongen-{q.job}-versions", "rules": recording_rules(q, t)},
    ]


def prometheus_rule(name: str, labels: dict[str, str], groups: list[dict[str, Any]], mark: str) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "labels": labels, "annotations": {"tritongen.dev/thresholds": mark}},
        "spec": {"groups": groups},
    }


# ------------------------------------------------------------------------------------------- promtool unit tests


@dataclass(frozen=True)
class Scenario:
    """Per-minute series values for one alert: ``overload`` fires it, ``nominal`` does not."""

    overload: list[dict[str, str]]
    nominal: list[dict[str, str]]


def _seconds(duration: str) -> int:
    """A Prometheus duration of one unit (``10s``, ``1m``, ``2h``) in seconds."""
    value, unit = int(duration[:-1]), duration[-1]
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


def _counter(per_s: float, step_s: int, samples: int) -> str:
    """A counter rising by ``per_s`` per second, one sample a step: promtool's ``start+incrementxN`` notation."""
    return f"0+{per_s * step_s:g}x{samples}"


def _scenarios(q: Queries, t: Thresholds, pod: str, namespace: str, step_s: int, samples: int) -> dict[str, Scenario]:
    podl = f"job={label_value(q.job)},namespace={label_value(namespace)},pod={label_value(pod)}"

    def labels_of(version: int) -> str:
        model = f"job={label_value(q.job)},model={label_value(q.model)},version={label_value(str(version))}"
        return f"{model},namespace={label_value(namespace)},pod={label_value(pod)}"

    base = labels_of(1)

    def s(metric: str, values: str, extra: str = "", labels: str = base) -> dict[str, str]:
        return {"series": f"{metric}{{{labels}{extra}}}", "values": values}

    rps = 10.0
    up = s("up", f"1x{samples}", labels=podl)
    ok = s("nv_inference_request_success", _counter(rps, step_s, samples))

    def in_flight(n: float) -> dict[str, str]:  # duration counter: n requests in flight on average
        return s("nv_inference_request_duration_us", _counter(n * 1e6, step_s, samples))

    def p99(ms: float) -> dict[str, str]:
        return s("nv_inference_request_summary_us", f"{ms * 1000:g}x{samples}", ',quantile="0.99"')

    def queue(us: float) -> dict[str, str]:
        return s("nv_inference_queue_duration_us", _counter(us * rps, step_s, samples))

    def failures(ratio: float) -> list[dict[str, str]]:
        fail = ratio * rps / (1 - ratio)
        return [
            s("nv_inference_request_failure", _counter(fail, step_s, samples), ',reason="BACKEND"'),
            s("nv_inference_request_failure", _counter(0, step_s, samples), ',reason="REJECTED"'),
        ]

    def gpu(ratio: float) -> list[dict[str, str]]:
        g = ',gpu_uuid="GPU-0"'
        return [
            s("nv_gpu_memory_used_bytes", f"{ratio * 80e9:g}x{samples}", g, podl),
            s("nv_gpu_memory_total_bytes", f"{80e9:g}x{samples}", g, podl),
        ]

    idle = s("nv_inference_request_success", f"100x{samples}")

    def version(number: int, failure_ratio: float, p99_ms: float) -> list[dict[str, str]]:
        labels = labels_of(number)
        fail = failure_ratio * rps / (1 - failure_ratio)
        return [
            s("nv_inference_request_success", _counter(rps, step_s, samples), labels=labels),
            s("nv_inference_request_failure", _counter(fail, step_s, samples), ',reason="BACKEND"', labels),
            s("nv_inference_request_summary_us", f"{p99_ms * 1000:g}x{samples}", ',quantile="0.99"', labels),
        ]

    margin, p99_ms = t.failure_ratio_alert, t.slo_p99_ms / 2
    return {
        "TritonLatencyObjective": Scenario([up, ok, p99(t.slo_p99_ms * 2)], [up, ok, p99(t.slo_p99_ms / 2)]),
        "TritonAboveKnee": Scenario(
            [up, ok, in_flight(t.target_in_flight * 2)], [up, ok, in_flight(t.target_in_flight / 2)]
        ),
        "TritonQueueTime": Scenario([up, ok, queue(t.queue_alert_us * 2)], [up, ok, queue(t.queue_alert_us / 2)]),
        "TritonFailureRatio": Scenario(
            [up, ok, *failures(t.failure_ratio_alert * 5)], [up, ok, *failures(t.failure_ratio_alert / 5)]
        ),
        "TritonModelNotReady": Scenario([s("up", f"0x{samples}", labels=podl)], [up, ok]),
        "TritonNoTraffic": Scenario([up, idle], [up, ok]),
        "TritonGPUMemory": Scenario(
            [up, ok, *gpu(min(0.99, t.gpu_memory_alert_ratio + 0.05))], [up, ok, *gpu(t.gpu_memory_alert_ratio / 2)]
        ),
        # version 2 is the canary: failing 3 margins more than version 1 fires, half a margin more does not
        "TritonCanaryFailureRatio": Scenario(
            [up, *version(1, margin / 5, p99_ms), *version(2, margin / 5 + 3 * margin, p99_ms)],
            [up, *version(1, margin / 5, p99_ms), *version(2, margin / 5 + margin / 2, p99_ms)],
        ),
        "TritonCanaryLatency": Scenario(
            [up, *version(1, 0, p99_ms), *version(2, 0, p99_ms * CANARY_P99_RATIO * 1.5)],
            [up, *version(1, 0, p99_ms), *version(2, 0, p99_ms * CANARY_P99_RATIO * 0.8)],
        ),
    }


# Labels an alert carries besides namespace and the rule's own (by its expression's grouping); default: pod.
_GROUPING: dict[str, dict[str, str]] = {
    "TritonQueueTime": {},
    "TritonNoTraffic": {},
    "TritonFailureRatio": {"reason": "BACKEND"},
    "TritonModelNotReady": {"pod": "<pod>", "job": "<job>"},
    "TritonGPUMemory": {"pod": "<pod>", "gpu_uuid": "GPU-0"},
    "TritonCanaryFailureRatio": {"version": "2"},
    "TritonCanaryLatency": {"version": "2"},
}


def promtool_tests(q: Queries, t: Thresholds, rules_file: str, *, for_scale: float = 1.0) -> dict[str, Any]:
    """A ``promtool test rules`` file: per alert, an overload series that fires it and a nominal one that does not."""
    alerts = {a.name: a for a in alerts_for(q, t, for_scale=for_scale)}
    step_s = max(1, _seconds(q.window) // 4)  # several samples in every rate's range
    total_s = 2 * _seconds(q.idle_window) + 900  # past the idle window plus the longest ``for``
    samples = total_s // step_s
    pod, namespace = f"{q.job}-0", "serving"
    tests = []
    for name, sc in _scenarios(q, t, pod, namespace, step_s, samples).items():
        for kind, series in (("overload", sc.overload), ("nominal", sc.nominal)):
            expected = []
            if kind == "overload":
                labels = {
                    "severity": alerts[name].severity,
                    "model": t.model,
                    "thresholds": t.mark,
                    "namespace": namespace,
                    **_GROUPING.get(name, {"pod": pod}),
                }
                labels = {k: (pod if v == "<pod>" else q.job if v == "<job>" else v) for k, v in labels.items()}
                expected = [
                    {
                        "exp_labels": labels,
                        "exp_annotations": {"summary": alerts[name].summary, "thresholds": f"{t.mark}: {t.source}"},
                    }
                ]
            tests.append(
                {
                    "name": f"{name} {kind}",
                    "interval": f"{step_s}s",
                    "input_series": series,
                    "alert_rule_test": [
                        {"eval_time": f"{total_s - step_s}s", "alertname": name, "exp_alerts": expected}
                    ],
                }
            )
    return {"rule_files": [rules_file], "evaluation_interval": f"{step_s}s", "tests": tests}


# ------------------------------------------------------------------------------------------- autoscaling


def adapter_rule(q: Queries) -> dict[str, Any]:
    """One prometheus-adapter rule serving requests in flight per pod as a custom metric."""
    return {
        "seriesQuery": f'{ADAPTER_SERIES}{{namespace!="",pod!="",{q.sel}}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{ADAPTER_SERIES}$", "as": metric_name_for(q.model)},
        "metricsQuery": f"sum by (<<.GroupBy>>) (rate(<<.Series>>{{<<.LabelMatchers>>,{q.sel}}}[{q.window}])) / 1e6",
    }


def adapter_query(rule: dict[str, Any], namespace: str, pods: list[str]) -> str:
    """The query prometheus-adapter sends for ``pods``: its template filled in the way the adapter fills it."""
    matchers = f"namespace={label_value(namespace)},pod=~{regex_value(pods)}"
    return (
        rule["metricsQuery"]
        .replace("<<.Series>>", ADAPTER_SERIES)
        .replace("<<.LabelMatchers>>", matchers)
        .replace("<<.GroupBy>>", "pod")
    )


def adapter_values(q: Queries, t: Thresholds) -> dict[str, Any]:
    """Values for the prometheus-adapter Helm chart (``rules.custom``: the adapter's own rule format)."""
    return {"rules": {"default": False, "custom": [adapter_rule(q)]}}


def scaled_object(
    name: str,
    namespace: str,
    deployment: str,
    q: Queries,
    t: Thresholds,
    *,
    prometheus_url: str,
    min_replicas: int,
    max_replicas: int,
) -> dict[str, Any]:
    """KEDA's alternative to the HPA: the same metric summed over the namespace, the same per-replica target."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": namespace, "annotations": {"tritongen.dev/thresholds": t.mark}},
        "spec": {
            "scaleTargetRef": {"name": deployment},
            "minReplicaCount": min_replicas,
            "maxReplicaCount": max_replicas,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "triggers": [
                {
                    "type": "prometheus",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": prometheus_url,
                        "query": q.in_flight_total(namespace),
                        "threshold": f"{t.target_in_flight:g}",
                    },
                }
            ],
        },
    }


# ------------------------------------------------------------------------------------------- dashboard


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[tuple[str, str], ...]  # (expr, legend)
    needs_gpu: bool = False


def panels_for(q: Queries, t: Thresholds) -> list[Panel]:
    job = f"job={label_value(q.job)}"
    w = q.window

    def per_model(metric: str) -> str:
        return f"sum by (model) (rate({metric}{{{job}}}[{w}]))"

    def rec(name: str) -> str:  # a recording rule's series (the versions group of the rules)
        return f"tritongen:version_{name}{{model={label_value(q.model)}}}"

    return [
        Panel(
            "Throughput per model and version (req/s)",
            "reqps",
            (
                (
                    f"sum by (model, version) (rate(nv_inference_request_success{{{job}}}[{w}]))",
                    "{{model}} v{{version}}",
                ),
            ),
        ),
        Panel(
            "Latency p50 / p99 (ms)",
            "ms",
            tuple(
                (
                    f'max by (model) (nv_inference_request_summary_us{{{job},quantile="{qt}"}}) / 1000',
                    f"{{{{model}}}} {name}",
                )
                for qt, name in (("0.5", "p50"), ("0.99", "p99"))
            ),
        ),
        Panel(
            "Queue vs compute time per request (us)",
            "µs",
            (
                (
                    f"{per_model('nv_inference_queue_duration_us')} / {per_model('nv_inference_request_success')}",
                    "{{model}} queue",
                ),
                (
                    f"{per_model('nv_inference_compute_infer_duration_us')}"
                    f" / {per_model('nv_inference_request_success')}",
                    "{{model}} compute",
                ),
            ),
        ),
        Panel(
            "Average batch size",
            "none",
            ((f"{per_model('nv_inference_count')} / {per_model('nv_inference_exec_count')}", "{{model}}"),),
        ),
        Panel(
            "Failures by reason (req/s)",
            "reqps",
            ((f"sum by (model, reason) (rate(nv_inference_request_failure{{{job}}}[{w}]))", "{{model}} {{reason}}"),),
        ),
        Panel(
            f"Requests in flight per replica vs autoscaling target ({t.mark})",
            "none",
            ((q.in_flight_per_pod(), "{{pod}}"), (f"vector({t.target_in_flight:g})", f"target ({t.mark})")),
        ),
        Panel(
            "Pending requests",
            "none",
            ((f"sum by (model) (nv_inference_pending_request_count{{{job}}})", "{{model}}"),),
        ),
        Panel(
            "Versions compared: p99 and mean latency (ms)",
            "ms",
            ((q.versions_p99_ms(), "v{{version}} p99"), (rec("latency_ms"), "v{{version}} mean")),
        ),
        Panel(
            "Versions compared: queue and compute per request (ms)",
            "ms",
            ((rec("queue_ms"), "v{{version}} queue"), (rec("compute_ms"), "v{{version}} compute")),
        ),
        Panel("Versions compared: failure ratio", "percentunit", ((rec("failure_ratio"), "v{{version}}"),)),
        Panel("CPU utilisation", "percentunit", ((f"avg by (pod) (nv_cpu_utilization{{{job}}})", "{{pod}}"),)),
        Panel(
            "GPU utilisation",
            "percentunit",
            ((f"avg by (pod, gpu_uuid) (nv_gpu_utilization{{{job}}})", "{{pod}} {{gpu_uuid}}"),),
            needs_gpu=True,
        ),
        Panel("GPU memory used", "percentunit", ((q.gpu_memory_ratio(), "{{pod}} {{gpu_uuid}}"),), needs_gpu=True),
    ]


def grafana_dashboard(q: Queries, t: Thresholds, title: str) -> dict[str, Any]:
    panels = []
    for i, p in enumerate(panels_for(q, t)):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": p.title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
                "targets": [
                    {
                        "refId": chr(ord("A") + j),
                        "expr": expr,
                        "legendFormat": legend,
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    }
                    for j, (expr, legend) in enumerate(p.targets)
                ],
            }
        )
    return {
        "title": title,
        "uid": re.sub(r"[^a-zA-Z0-9-]", "-", f"tritongen-{q.job}")[:40],
        "tags": ["triton", "tritongen", f"thresholds-{t.mark}"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "description": f"Triton serving {t.model}; thresholds {t.mark} ({t.source})",
        "templating": {
            "list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },
        "panels": panels,
    }


def all_queries(q: Queries, t: Thresholds, adapter_matchers: tuple[str, list[str]]) -> list[tuple[str, str, bool]]:
    """(where, query, needs_gpu) for every query in the bundle: alert signals and expressions, dashboard panels,
    the adapter's (filled in for ``adapter_matchers`` = (namespace, pods)) and KEDA's."""
    out = []
    for a in alerts_for(q, t):
        out.append((f"alert {a.name} signal", a.signal, a.needs_gpu))
        out.append((f"alert {a.name} expr", a.expr, a.needs_gpu))
    for p in panels_for(q, t):
        for expr, legend in p.targets:
            out.append((f"panel {p.title} [{legend}]", expr, p.needs_gpu))
    for r in recording_rules(q, t):
        out.append((f"record {r['record']}", r["expr"], False))
    namespace, pods = adapter_matchers
    out.append(("prometheus-adapter metricsQuery", adapter_query(adapter_rule(q), namespace, pods), False))
    out.append(("KEDA trigger query", q.in_flight_total(namespace), False))
    return out
