"""``tritongen perf``: check the model and its inputs, run the chosen engine over every load level, collect the
server's metrics, and hand back one :class:`PerfRun` (marked partial when the server went away mid-run)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from ..cpus import available_cpus, cpus_text, pinned
from ..errors import TritongenError
from ..progress import Progress
from ..served_settings import ServedSettings, comparable_settings
from .placement import placement_note, server_cpus_at
from .results import PerfPoint, PerfRun
from .spec import PerfSpec

if TYPE_CHECKING:
    from .inputs import RequestSet

METRIC_NAMES = (
    "nv_gpu_utilization",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_power_usage",
    "nv_cpu_utilization",
    "nv_cpu_memory_used_bytes",
    "nv_cpu_memory_total_bytes",
)


def metrics_from_server(metrics_url: str | None, timeout_s: float = 5.0) -> dict[str, float]:
    """Selected gauges from Triton's Prometheus endpoint (GPU ones only where a GPU is present), summed per name."""
    from ..client import metrics_from_url

    return metrics_from_url(metrics_url, METRIC_NAMES, timeout_s) if metrics_url else {}


def _sequence_length(spec: PerfSpec, url: str, timeout_s: float) -> int:
    """Requests per sequence: the spec's, or the default for a sequence model; refused for other models."""
    from ..client import Triton
    from .sequences import DEFAULT_SEQUENCE_LENGTH, is_sequence_model

    with Triton(url, spec.protocol, timeout_s=timeout_s) as triton:
        sequence = is_sequence_model(triton.model_config(spec.model))
    if not sequence:
        if spec.sequence_length:
            raise TritongenError(
                f"--sequence-length given but '{spec.model}' is not a sequence model", "drop --sequence-length"
            )
        return 0
    if spec.request_rates and spec.engine == "builtin":
        raise TritongenError(
            f"'{spec.model}' is a sequence model: the builtin engine drives it with concurrent streams only",
            "use --concurrency (each client is one stream), or --engine perf_analyzer for --request-rate",
        )
    return spec.sequence_length or DEFAULT_SEQUENCE_LENGTH


def served_differs_from_disk(served: ServedSettings, spec: PerfSpec) -> str | None:
    """Where the model's config.pbtxt in ``spec.repo`` batches or runs instances otherwise than the server serves it
    (a build --force or a tune since the server loaded it), what differs and what to do; None where it agrees, or
    where there is no such file here."""
    from ..validate import config_from_file

    if spec.repo is None:
        return None
    path = spec.repo / spec.model / "config.pbtxt"
    try:
        if not path.is_file():
            return None
        on_disk = comparable_settings(config_from_file(path))
    except (TritongenError, OSError):
        return None
    changed = served.differences(on_disk) if on_disk is not None else []
    if not changed:
        return None
    return (
        f"the server serves {spec.model} otherwise than {path} now says ({'; '.join(changed)}): these figures measure "
        "what the server loaded; restart tritongen serve (or tritongen rollout a new version) to measure the config "
        "on disk"
    )


def points_from_engine(
    spec: PerfSpec,
    requests: RequestSet,
    progress: Progress | None = None,
    on_point: Callable[[PerfPoint], None] | None = None,
    started_s: float | None = None,
) -> list[PerfPoint]:
    """Measure every load level of ``spec`` with the engine ``spec.engine`` names (built-in or perf_analyzer);
    ``--max-time-s`` counts from ``started_s`` (a ``time.monotonic()`` reading; default: now)."""
    from .loadgen import points_from_builtin
    from .perf_analyzer import points_from_perf_analyzer

    engine = points_from_perf_analyzer if spec.engine == "perf_analyzer" else points_from_builtin
    return engine(spec, requests, progress, on_point, started_s)


# Why a run stopped early, by the exit code of the command it stopped: Ctrl-C, SIGTERM, SIGHUP (signals.Terminated).
STOPPED_BY = {130: "interrupted", 143: "terminated (SIGTERM)", 129: "hung up (SIGHUP)"}


def stopped_exit_code(partial_reason: str) -> int | None:
    """The exit code of a run stopped by Ctrl-C or a signal (its ``partial_reason``); None for any other reason."""
    return next((code for code, reason in STOPPED_BY.items() if reason == partial_reason), None)


def perf_from_spec(spec: PerfSpec, progress: Progress | None = None) -> PerfRun:
    """Load-test ``spec.model`` on a running server. Raises :class:`TritongenError` for bad use before any load."""
    from ..client import model_metadata
    from .inputs import request_set_for_model
    from .loadgen import ServerGone
    from .perf_analyzer import find_perf_analyzer

    started_s = time.monotonic()  # --max-time-s counts from here: the questions before the load too
    progress = progress or (lambda message: None)
    url = spec.resolved_url()

    def probe_s() -> float:  # a question's timeout: within what --max-time-s leaves
        if spec.max_time_s is None:
            return spec.probe_timeout_s
        return max(0.5, min(spec.probe_timeout_s, spec.max_time_s - (time.monotonic() - started_s)))

    if spec.engine == "perf_analyzer":
        find_perf_analyzer()  # fail before anything else if it is missing
    metadata = model_metadata(url, spec.model, protocol=spec.protocol, timeout_s=probe_s())
    if spec.version_split:
        from .split import check_split_against_model

        check_split_against_model(spec.version_split, spec.model, metadata["versions"])
    if spec.repo is not None:  # perf from another folder than serve's: the build the local server serves
        from ..server.local import served_repository

        spec = replace(spec, repo=served_repository(spec.repo, spec.model, url))
    requests = request_set_for_model(metadata, spec.repo, spec.input_data, spec.text_file)
    requests = replace(requests, sequence_length=_sequence_length(spec, url, probe_s()))
    settings = spec.recorded_settings()
    settings["inputs"] = requests.source
    settings["distinct_requests"] = len(requests.requests)
    run = PerfRun(
        model=spec.model,
        url=url,
        protocol=spec.protocol,
        engine=spec.engine,
        points=(),
        settings=settings,
        started_unix_s=round(time.time(), 3),
        label=spec.label,
        served=metadata.get("served"),
    )
    collected: list[PerfPoint] = []
    progress(
        f"{spec.engine}: {spec.model} at {url} ({spec.protocol}); "
        f"{len(requests.requests)} distinct request(s) from {requests.source}"
    )
    if run.served is not None:
        progress(f"served with {run.served.text()}")
        changed = served_differs_from_disk(run.served, spec)
        if changed:
            progress(f"warning: {changed}")
    progress(f"time: {spec.budget_text()}")
    if spec.version_split:
        progress("versions: " + ", ".join(f"v{v} {p}%" for v, p in spec.version_split) + " (interleaved in send order)")
    client_cpus = spec.client_cpus or available_cpus()
    server_cpus = server_cpus_at(url)
    run = replace(
        run,
        client_cpus=client_cpus,
        server_cpus=server_cpus or (),
        placement=placement_note(client_cpus, server_cpus),
    )
    if spec.client_cpus:
        progress(f"client pinned to CPUs {cpus_text(spec.client_cpus)}")
    if run.placement:
        progress(run.placement)
    partial_reason = ""
    try:
        with pinned(spec.client_cpus):  # perf_analyzer, started inside, inherits the set
            points_from_engine(spec, requests, progress, collected.append, started_s)
    except ServerGone as gone:
        partial_reason = f"the server stopped answering: {gone}"
    except TritongenError as err:
        if not collected:
            raise
        partial_reason = err.message
    except KeyboardInterrupt as stop:
        if not collected:  # stopped before a level ended: an abort (exit 130), not a server's fault
            raise
        partial_reason = STOPPED_BY.get(getattr(stop, "exit_code", 130), STOPPED_BY[130])  # SIGTERM: Terminated
    if partial_reason and not collected and spec.engine == "builtin":
        raise TritongenError(
            f"no load level of '{spec.model}' could be measured ({partial_reason})",
            "check that the server is up (tritongen serve) and the model loaded",
        )
    metrics_url = metrics_url_for(spec, url)
    metrics = metrics_from_server(metrics_url)
    if spec.metrics_url and not metrics:  # asked for by name: its absence is said, once (the default is a guess)
        progress(
            f"warning: no metrics were read from --metrics-url {spec.metrics_url} (nothing answered at "
            f"http://{metrics_url}/metrics, or it served none of Triton's gauges); the run has no server metrics"
        )
    return replace(
        run,
        points=tuple(collected),
        metrics=metrics,
        partial=bool(partial_reason),
        partial_reason=partial_reason,
    )


def metrics_url_for(spec: PerfSpec, url: str) -> str | None:
    """Where the server's metrics are read: ``--metrics-url`` where given; else the metrics port of the local
    tritonserver listening at ``url`` (a serve that found 8002 taken listens on another: 8002 is then someone
    else's); else 8002 beside Triton's default ports."""
    if spec.metrics_url:
        return spec.resolved_metrics_url()
    from ..server.ports import metrics_address_at

    return metrics_address_at(url) or spec.resolved_metrics_url()
