"""Deployment thresholds from a measurement: the knee, per-replica capacity, the autoscaling target, replicas.

The input is a ``tritongen perf`` run (``results.json``) against one server, which is one replica:

- **knee**: the last level of the unbroken run of levels, from the lowest load up, whose p99 meets the objective
  without errors: a level above one that failed is not trusted to hold (a caution names both);
- **capacity** per replica: the throughput measured at the knee;
- **autoscaling target**: requests in flight per replica at the knee, ``throughput x server time per request``
  (Little's law). Triton exposes its numerator as a counter, ``rate(nv_inference_request_duration_us) / 1e6``,
  so Prometheus computes the same quantity from the same definition. It grows with offered load on both sides of
  the knee, which queue time does not (a dynamic batcher's queue delay makes queue time *fall* as load rises
  until batches fill), and it is averaged by the counter rather than sampled like
  ``nv_inference_pending_request_count``;
- **replicas**: ``max = ceil(peak_rps / capacity) + 1`` (one spare for a rolling update or a lost node),
  ``min`` 2 in production (a PodDisruptionBudget can then let one go), 1 in development.

**Cautions** say where the measurement understates a replica, or leaves the knee uncertain, each with what to
measure instead: the highest measured load met the objective (the knee lies above it, unmeasured), a level above
the knee met the objective again after one that failed, the knee level was not stable (its windows disagreed), a
level was client-bound (the load generator, not the server, set its pace), or the load generator shared CPUs with
the server. **Notes** say what of the run the thresholds leave out (the levels of a second kind of load).

Without a measurement the same fields hold defaults and ``measured`` is False; every file that uses them
says "unmeasured".
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ..client import DEFAULT_URLS
from ..cpus import cpus_text
from ..errors import TritongenError
from ..files import json_file, json_from_bytes, regular_bytes
from ..names import shown
from ..perf.results import PerfPoint, PerfRun, load_option, load_words, mode_words
from ..served_settings import ServedSettings

DEFAULT_SLO_P99_MS = 100.0
DEFAULT_MAX_REPLICAS = 4
MAX_REPLICAS = 10_000  # a replica count past this is a mistake in the inputs, not a fleet
MAX_EXIT_TIMEOUT_S = 3600  # the grace period for requests in flight at shutdown, however slow the slowest was
MAX_TUNE_RECORD_BYTES = 16 << 20  # tune.json: every trial of a search, a few hundred KiB at most
MAX_UNMEASURED_TARGET = 4096  # the default target where nothing was measured: the most perf keeps in flight
MAX_TARGET_IN_FLIGHT = 1e6  # requests in flight per replica: perf keeps at most 4096 in flight from one client
MAX_KNOB_VALUES_SHOWN = 8  # preferred batch sizes a caution names (a crafted record listed 700,000)
MAX_LOAD_TIME_S = 86_400  # a day: a model that takes longer to load is a mistake in the record, not a model
DEFAULT_LOAD_TIME_S = 90.0  # a budget, not a measurement: the startup probe allows 3x this
FAILURE_RATIO_ALERT = 0.01  # 1% of requests failing, for any one reason
ABOVE_KNEE_ALERT_FACTOR = 1.5  # requests in flight per replica above 1.5x the knee's: scaling is not keeping up
GPU_MEMORY_ALERT_RATIO = 0.9
CPU_REQUEST_STEP = 0.1  # a measured CPU request is rounded up to a tenth of a core
MAX_CPU_REQUEST_CORES = 1024.0  # a server busier than this is a mistake in the results, not one replica
# What a deployed model's name may hold: what tritongen build names models with. The name goes into Kubernetes
# names, Prometheus queries and alert labels (expanded as templates); every one of them escapes it, and this
# keeps each file readable and each name the same in all of them.
DEPLOY_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class LevelRow:
    """One measured load level, as the bundle's README shows it."""

    load: float
    throughput_rps: float
    p99_ms: float
    in_flight: float
    queue_us: float
    errors: int
    meets_slo: bool


@dataclass(frozen=True)
class Thresholds:
    """Every number the bundle uses. ``measured`` False: defaults, marked "unmeasured" wherever they appear."""

    model: str
    measured: bool
    source: str
    slo_p99_ms: float
    mode: str = "concurrency"
    knee_load: float | None = None
    knee_p99_ms: float | None = None
    capacity_rps: float | None = None  # per replica, at the knee
    target_in_flight: float = 1.0  # HPA/KEDA target: requests in flight per replica
    queue_alert_us: float = 0.0  # mean queue time per request above which the objective cannot be met
    above_knee_in_flight: float = 1.5
    failure_ratio_alert: float = FAILURE_RATIO_ALERT
    gpu_memory_alert_ratio: float = GPU_MEMORY_ALERT_RATIO
    peak_rps: float | None = None
    min_replicas_dev: int = 1
    max_replicas_dev: int = 2
    min_replicas_prod: int = 2
    max_replicas_prod: int = DEFAULT_MAX_REPLICAS
    load_time_s: float = DEFAULT_LOAD_TIME_S
    load_time_measured: bool = False
    exit_timeout_s: int = 30
    levels: tuple[LevelRow, ...] = ()
    cautions: tuple[str, ...] = ()  # where the measurement understates a replica, and what to measure (module doc)
    notes: tuple[str, ...] = ()  # what of the perf run the thresholds leave out (module doc)
    # CPU a replica uses at its autoscaling target: the server's CPU at the knee (cores busy) where the perf run
    # measured it (a server on the perf machine); None: unmeasured, the pod asks for kubernetes.py's default
    cpu_request_cores: float | None = None

    @property
    def mark(self) -> str:
        """The word every generated file puts beside a number that is not from a measurement."""
        return "measured" if self.measured else "unmeasured"

    def json(self) -> str:
        data = asdict(self)
        data["mark"] = self.mark
        return json.dumps(data, indent=2) + "\n"


def _in_flight(point: PerfPoint) -> float:
    """Requests inside the server per replica: throughput x time per request (Little's law).

    The time is the server's (queue + compute, from the statistics API) for a single model. An ensemble's own
    statistics leave out most of the time its steps take, while ``nv_inference_request_duration_us`` counts the
    whole request, so for an ensemble (or without server figures) the client's mean latency stands in for it
    (measured there: 15.5 in flight live at the knee, 9.7 from the ensemble's statistics, 16 from the client).
    """
    use_server = point.server.requests and not point.steps
    server_us = point.server.total_us if use_server else point.latency.mean_ms * 1000.0
    return point.throughput_rps * server_us / 1e6


def check_model_name(model: str) -> str:
    """``model`` if it is a name a bundle can carry (:data:`DEPLOY_NAME_RE`), else one error."""
    if not DEPLOY_NAME_RE.fullmatch(model):
        raise TritongenError(
            f"model name '{shown(model)}' holds characters other than letters, digits, '_', '.' and '-'; "
            "it would go into Kubernetes names, Prometheus queries and alert labels",
            "rename the model's folder and the name in its config.pbtxt to those characters "
            "(as tritongen build names models), and validate the repository again",
        )
    return model


def _cpu_request(run: PerfRun, knee: PerfPoint) -> float | None:
    """Cores busy in the server at the knee (at most the CPUs it had), rounded up to :data:`CPU_REQUEST_STEP`:
    what a replica uses at its autoscaling target. None where the run did not measure it (a server elsewhere)."""
    cores = knee.server_cpu_cores
    if cores is None or isinstance(cores, bool) or not isinstance(cores, (int, float)) or not cores > 0:
        return None
    if run.server_cpus:
        cores = min(cores, float(len(run.server_cpus)))
    if not cores <= MAX_CPU_REQUEST_CORES:  # inf, or past any one server
        raise TritongenError(
            f"the perf results of {run.model} record {cores:g} cores busy in the server at the knee, not a "
            f"server's CPU (over 0, at most {MAX_CPU_REQUEST_CORES:g})",
            "measure the model again with tritongen perf",
        )
    return round(math.ceil(round(cores / CPU_REQUEST_STEP, 6)) * CPU_REQUEST_STEP, 3)


def _replicas(peak_rps: float | None, capacity_rps: float | None, min_replicas: int, default_max: int) -> int:
    if peak_rps is None or not capacity_rps:
        return max(default_max, min_replicas)
    needed = peak_rps / capacity_rps
    if needed > MAX_REPLICAS:
        raise TritongenError(
            f"--peak-rps {peak_rps:g} at the measured capacity of {capacity_rps:.3g} req/s per replica needs "
            f"{needed:.3g} replicas, over {MAX_REPLICAS}",
            "check --peak-rps and the perf results (measure the model again with tritongen perf)",
        )
    return max(math.ceil(needed) + 1, min_replicas)


def knee_of(run: PerfRun, slo_p99_ms: float) -> tuple[PerfPoint, list[PerfPoint]]:
    """The knee of the run's first mode, and that mode's points: the last level of the unbroken run of levels, from
    the lowest load up, whose p99 meets the objective without errors. A level above the first that failed is left
    out even where it met the objective (:func:`cautions_of` names it): a load that failed once may fail again."""
    if not run.points:
        raise TritongenError(
            "the perf results hold no measured load level", "run tritongen perf with --report DIR again"
        )
    mode = run.points[0].mode
    points = sorted((p for p in run.points if p.mode == mode), key=lambda p: p.load)
    lowest = points[0]
    if lowest.latency.p99_ms > slo_p99_ms:
        raise TritongenError(
            f"--slo-p99-ms {slo_p99_ms:g} is below the p99 measured at the lowest load "
            f"({lowest.latency.p99_ms:.1f} ms at {lowest.where}): no replica count can meet it",
            "raise --slo-p99-ms, or make the model faster (tritongen tune, a TensorRT engine) and measure again",
        )
    if lowest.error_count:
        raise TritongenError(
            f"the perf results of {run.model} record {lowest.error_count} errors at the lowest load "
            f"({lowest.where}): no measured level is a knee to size replicas from",
            "fix the errors perf reported and measure again",
        )
    knee = lowest
    for p in points[1:]:
        if not p.within(slo_p99_ms):
            break
        knee = p
    return knee, points


def _higher_loads(mode: str, top: float) -> str:
    """perf's option for four loads above ``top``, doubling: ``--concurrency 8,16,32,64``."""
    return load_option(mode, [top * 2**i for i in range(1, 5)])


def _longer_levels(run: PerfRun, points: list[PerfPoint]) -> str:
    """The perf command that measures ``points``' loads again for twice as long each (to a stable measurement)."""
    duration = run.settings.get("duration_s")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration <= 3600:
        duration = 6.0  # perf's default
    loads = load_option(points[0].mode, [p.load for p in points])
    return _perf_command(run, loads, extra=f" --duration-s {2 * duration:g}")


def _failure(point: PerfPoint, slo_p99_ms: float) -> str:
    """Why ``point`` missed: its p99 above the objective, or its errors."""
    if point.latency.p99_ms > slo_p99_ms:
        return f"p99 {point.latency.p99_ms:.1f} ms"
    return f"{point.error_count} errors"


def cautions_of(run: PerfRun, knee: PerfPoint, points: list[PerfPoint], slo_p99_ms: float) -> tuple[str, ...]:
    """What makes the run understate a replica's capacity, or the knee uncertain (the module's docstring), one
    sentence each."""
    out = []
    if knee is points[-1]:
        out.append(
            f"every measured level met p99 <= {slo_p99_ms:g} ms (p99 {knee.latency.p99_ms:.1f} ms at {knee.where}): "
            f"the knee is above {knee.where}, so capacity per replica is understated (and "
            f"replicas overcounted); measure higher loads ("
            f"{_perf_command(run, _higher_loads(knee.mode, knee.load))}, then --from-perf "
            f"perf-{run.model}/)"
        )
    else:
        failed = points[points.index(knee) + 1]
        again = [p for p in points[points.index(failed) + 1 :] if p.within(slo_p99_ms)]
        if again:
            out.append(
                f"{load_words(knee.mode, [p.load for p in again])} met p99 <= {slo_p99_ms:g} ms above {failed.where}, "
                f"which did not ({_failure(failed, slo_p99_ms)}): the knee is {knee.where}, "
                f"the last level below the first that failed, since a load that failed once may fail again; if "
                f"{failed.where} was noise, measure the levels again for longer ("
                f"{_longer_levels(run, points)}, then --from-perf perf-{run.model}/)"
            )
    if not knee.stable:
        out.append(
            f"the knee level, {knee.where}, was not stable (its last windows differed in throughput or "
            "latency by more than the perf run's --stability-pct), so its capacity and p99 are uncertain; measure "
            f"the levels again for longer ({_longer_levels(run, points)}, then --from-perf perf-{run.model}/)"
        )
    bound = [p for p in points if p.client_bound]
    if bound:
        out.append(
            f"the perf run was client-bound at {load_words(knee.mode, [p.load for p in bound])} (its load generator, "
            "not the server, set the pace), so capacity per replica is understated; measure again with --engine "
            "perf_analyzer, or with the client on another machine"
        )
    if not knee.server.requests and not knee.steps:
        out.append(
            f"the server's statistics were not read at the knee level, {knee.where} (the server stopped "
            "answering them during the run, the model's versions changed during it, or the perf run reached it "
            "through a proxy), so the time it computes per "
            "request is unknown: the queue alert is the whole objective and the in-flight target comes from the "
            "client's latency; measure again with the server answering its statistics API"
        )
    shared = sorted(set(run.client_cpus) & set(run.server_cpus))
    if shared:
        out.append(
            f"the perf run's client shared CPUs {cpus_text(tuple(shared))} with the server, taking CPU time a replica "
            "has to itself, so capacity per replica is understated; measure again with them apart (tritongen serve "
            "--cpus, perf --client-cpus) or with the client on another machine"
        )
    return tuple(out)


def notes_of(run: PerfRun, points: list[PerfPoint]) -> tuple[str, ...]:
    """What of ``run`` the thresholds leave out: the levels of a second kind of load (a knee is a level of one)."""
    mode = points[0].mode
    others = sorted((p for p in run.points if p.mode != mode), key=lambda p: p.load)
    if not others:
        return ()
    other = mode_words(others[0].mode)
    return (
        f"the perf run also measured {load_words(others[0].mode, [p.load for p in others])}, left out: the "
        f"thresholds come from its {mode_words(mode)} levels alone (a knee is a level of one kind of load); to deploy "
        f"from the {other} levels, measure them alone ("
        f"{_perf_command(run, load_option(others[0].mode, [p.load for p in others]))})",
    )


def thresholds_from_run(
    run: PerfRun,
    *,
    slo_p99_ms: float,
    peak_rps: float | None = None,
    load_time_s: float | None = None,
    source: str = "",
) -> Thresholds:
    """Thresholds from a measured run (see the module's docstring for each derivation)."""
    check_model_name(run.model)
    if slo_p99_ms <= 0:
        raise TritongenError(
            f"--slo-p99-ms {slo_p99_ms:g} is not positive", "give the p99 latency objective in milliseconds"
        )
    if run.partial:
        reason = " ".join(run.partial_reason.split())[:200] or "cut short"
        raise TritongenError(
            f"the perf results of {run.model} are of a partial run ({reason}): its last level stopped before it was "
            "measured to the end, and the thresholds would rest on it",
            "pass the results of a perf run that finished (tritongen perf ... --report DIR)",
        )
    knee, points = knee_of(run, slo_p99_ms)
    target = _in_flight(knee)
    if not math.isfinite(target) or round(target, 3) <= 0:  # NaN passes "<= 0"
        raise TritongenError(
            f"the knee level of {run.model} measured no throughput (or no latency)", "measure again with tritongen perf"
        )
    if target > MAX_TARGET_IN_FLIGHT:  # a Kubernetes quantity past 2**63 milli-units never triggers a scale-up
        raise TritongenError(
            f"the knee level of {run.model} reads {target:.3g} requests in flight per replica ({knee.throughput_rps:g} "
            f"req/s), more than one server holds ({MAX_TARGET_IN_FLIGHT:g}): the figures are not a measurement",
            "pass the results.json of a tritongen perf run",
        )
    compute_us = knee.server.total_us - knee.server.queue_us if knee.server.requests else 0.0
    rows = tuple(
        LevelRow(
            p.load,
            p.throughput_rps,
            p.latency.p99_ms,
            _in_flight(p),
            p.server.queue_us,
            p.error_count,
            p.within(slo_p99_ms),
        )
        for p in points
    )
    longest_ms = knee.latency.max_ms if knee.latency.max_ms and math.isfinite(knee.latency.max_ms) else 0.0
    max_p99_s = min(max(longest_ms, knee.latency.p99_ms) / 1000.0, MAX_EXIT_TIMEOUT_S / 3)
    return Thresholds(
        model=run.model,
        measured=True,
        source=source or f"perf run of {run.model} ({run.engine}, {len(points)} levels)",
        slo_p99_ms=slo_p99_ms,
        mode=knee.mode,
        knee_load=knee.load,
        knee_p99_ms=knee.latency.p99_ms,
        capacity_rps=knee.throughput_rps,
        target_in_flight=round(target, 3),
        queue_alert_us=round(max(slo_p99_ms * 1000.0 - compute_us, slo_p99_ms * 100.0), 1),
        above_knee_in_flight=round(target * ABOVE_KNEE_ALERT_FACTOR, 3),
        peak_rps=peak_rps,
        max_replicas_dev=2,
        max_replicas_prod=_replicas(peak_rps, knee.throughput_rps, 2, DEFAULT_MAX_REPLICAS),
        load_time_s=load_time_s if load_time_s is not None else DEFAULT_LOAD_TIME_S,
        load_time_measured=load_time_s is not None,
        exit_timeout_s=max(10, math.ceil(3 * max_p99_s)),
        levels=rows,
        cautions=cautions_of(run, knee, points, slo_p99_ms),
        notes=notes_of(run, points),
        cpu_request_cores=_cpu_request(run, knee),
    )


def unmeasured_thresholds(
    model: str,
    *,
    max_batch_size: int,
    instances: int,
    slo_p99_ms: float | None = None,
    load_time_s: float | None = None,
) -> Thresholds:
    """Defaults from the model's config (one full batch per instance in flight), marked unmeasured. No peak rate:
    without a measured capacity per replica none sizes the replicas."""
    check_model_name(model)
    slo = slo_p99_ms if slo_p99_ms is not None else DEFAULT_SLO_P99_MS
    full = max(1, max_batch_size) * max(1, instances)
    target = float(min(full, MAX_UNMEASURED_TARGET))  # a config's 2**31 x 17,000 overflowed a Kubernetes quantity
    capped = f", capped at {MAX_UNMEASURED_TARGET}" if full > MAX_UNMEASURED_TARGET else ""
    return Thresholds(
        model=model,
        measured=False,
        source=f"unmeasured: defaults from config.pbtxt (one full batch per instance in flight{capped})",
        slo_p99_ms=slo,
        target_in_flight=target,
        queue_alert_us=slo * 1000.0 / 2,
        above_knee_in_flight=target * ABOVE_KNEE_ALERT_FACTOR,
        load_time_s=load_time_s if load_time_s is not None else DEFAULT_LOAD_TIME_S,
        load_time_measured=load_time_s is not None,
    )


def _tune_records(model_dir: Path) -> list[Path]:
    """``tritongen tune``'s records (``<version>/tritongen/tune.json``) of the version folders Triton reads (not
    ``01/`` or ``9x/``), the newest version's first."""
    from ..layout import artifact_dir, version_numbers
    from ..perf.tune_spec import TUNE_RECORD

    records = (artifact_dir(model_dir, v) / TUNE_RECORD for v in reversed(version_numbers(model_dir)))
    return [p for p in records if p.is_file() or p.is_symlink()]


def _perf_command(run: PerfRun, loads: str, repo: Path | None = None, extra: str = "") -> str:
    """The perf command that measures ``loads`` (perf's option) of ``run``'s model again, on the run's server
    (``--url``/``--protocol`` where not perf's defaults) and with its repository's samples (``repo``, else the
    run's own ``--repo``), into the report folder the run's advice names."""
    if repo is None:
        recorded = run.settings.get("repo")
        repo = Path(recorded) if isinstance(recorded, str) and recorded else None
    where = ""
    if repo is not None and repo != Path("model_repository"):
        where += f" --repo {shlex.quote(str(repo))}"
    if run.url != DEFAULT_URLS.get(run.protocol):
        where += f" --url {shlex.quote(run.url)}" + (" --protocol http" if run.protocol == "http" else "")
    elif run.protocol == "http":
        where += " --protocol http"
    return f"tritongen perf {run.model} {loads}{extra}{where} --report perf-{run.model}/ --force"


def _measure_again(run: PerfRun, repo: Path | None = None) -> str:
    """How to measure ``run``'s model again as configured now: serve it anew (a running server keeps the config it
    loaded), then the same perf command (:func:`_perf_command`)."""
    mode = run.points[0].mode if run.points else "concurrency"
    loads = load_option(mode, sorted({p.load for p in run.points if p.mode == mode}))
    return (
        f"restart tritongen serve on the repository (a running server keeps the config it loaded) and measure the "
        f"model again ({_perf_command(run, loads, repo)}, then --from-perf perf-{run.model}/)"
    )


def config_changed_caution(now: ServedSettings | None, run: PerfRun, repo: Path | None = None) -> str | None:
    """A caution where the model's config.pbtxt (``now``) batches or runs instances otherwise than the server
    served it while ``run`` measured it (a tune, a hand edit since): the figures are of the config before. None
    where they agree, or where the run did not record what it measured (see :func:`tuned_after_caution`)."""
    if run.served is None or now is None:
        return None
    changed = run.served.differences(now)
    if not changed:
        return None
    return (
        f"{run.model}'s config.pbtxt now serves it otherwise than this perf run measured it ({'; '.join(changed)}), "
        f"so the thresholds are of the config before; {_measure_again(run, repo)}"
    )


def tuned_after_caution(model_dir: Path, run: PerfRun) -> str | None:
    """A caution where ``tritongen tune`` rewrote the model's config.pbtxt after ``run`` began measuring it: the
    figures are of the config before. For a results.json that does not record the config it measured (written before
    perf recorded it: :func:`config_changed_caution` compares that), the times (tune.json's ``created_unix_s``, the
    run's ``started_unix_s``) are what shows it; None where no record is newer."""
    if not run.started_unix_s > 0:
        return None
    for record in _tune_records(model_dir):
        try:
            data = json_file(record, MAX_TUNE_RECORD_BYTES)
            created, config = data["created_unix_s"], data["winner"]["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(created, bool) or not isinstance(created, (int, float)) or not math.isfinite(created):
            continue
        if created <= run.started_unix_s:
            return None
        wrote = []  # the knobs tune wrote (its Candidate), where the record holds them as numbers
        for knob in ("instances", "max_queue_delay_us", "max_batch_size", "preferred"):
            value = config.get(knob) if isinstance(config, dict) else None
            values = value if isinstance(value, list) else [value]
            if values and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31 for v in values):
                more = f",... ({len(values)} values)" if len(values) > MAX_KNOB_VALUES_SHOWN else ""
                wrote.append(f"{knob} {','.join(map(str, values[:MAX_KNOB_VALUES_SHOWN]))}{more}")
        return (
            f"tritongen tune rewrote {run.model}'s config.pbtxt ({record.relative_to(model_dir.parent)}"
            f"{': ' + ', '.join(wrote) if wrote else ''}) after this perf run measured it, so the thresholds are of "
            f"the config before; {_measure_again(run, model_dir.parent)}"
        )
    return None


def load_time_from_tune_record(model_dir: Path, digests: Mapping[str, str] | None = None) -> float | None:
    """The winner's measured load time from ``tritongen tune``'s record (``<version>/tritongen/tune.json``), if any.
    ``digests`` (a verify report's, by ``NAME/path``): a record is read once and used only as verified (one it did
    not list is not used; one changed since is refused), so what sets the startup probe is what was checked."""
    import hashlib

    for record in _tune_records(model_dir):
        try:
            data = regular_bytes(record, MAX_TUNE_RECORD_BYTES)
        except OSError:
            continue
        if digests is not None:
            expected = digests.get(f"{model_dir.name}/{record.relative_to(model_dir).as_posix()}")
            if expected is None:
                continue  # not verified: not what the bundle is made from
            if hashlib.sha256(data).hexdigest() != expected:
                raise TritongenError(
                    f"{record} changed after it was verified (its sha256 no longer matches its manifest)",
                    "run again once nothing writes to the repository (tritongen verify names what changed)",
                )
        try:
            load_s = json_from_bytes(data)["winner"]["load_s"]
        except (ValueError, KeyError, TypeError):
            continue
        if load_s is None:
            continue
        # the startup probe's failure threshold is computed from it: a crafted Infinity or 1e300 is no load time
        if isinstance(load_s, bool) or not isinstance(load_s, (int, float)) or not 0 < load_s <= MAX_LOAD_TIME_S:
            raise TritongenError(
                f"{record} holds a winner load_s of {str(load_s)[:40]}, not a load time in seconds "
                f"(over 0, at most {MAX_LOAD_TIME_S})",
                f"run tritongen tune on {model_dir.name} again, or remove {record}",
            )
        return float(load_s)
    return None


def desired_replicas(current: int, value: float, target: float, tolerance: float = 0.1) -> int:
    """Kubernetes' HPA rule for one metric: ``ceil(current x value / target)``, unchanged within the tolerance."""
    ratio = value / target
    if abs(ratio - 1.0) <= tolerance:
        return current
    return max(1, math.ceil(current * ratio))
