"""The result format both engines produce: one :class:`PerfPoint` per load level, a :class:`PerfRun` per run.

Latencies are in milliseconds, throughput in requests per second (inferences/s with batch 1), server-side
times in microseconds per request. A run saves as JSON (the full record, readable back with
:func:`run_from_json`) and CSV (one row per load level).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np

from ..cpus import cpus_text
from ..errors import TritongenError
from ..files import FileTooLargeError, json_from_bytes, read_problem, regular_bytes, replace_file, size_text
from ..layout import version_from_api  # Triton's versions are int64: a version's name is 1 to 19 ASCII digits
from ..names import display_problem_character, one_line
from ..served_settings import ServedSettings

PERCENTILES = (50, 90, 95, 99)
SERVER_PARTS = ("queue_us", "compute_input_us", "compute_infer_us", "compute_output_us")


@dataclass(frozen=True)
class LatencySummary:
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float | None  # perf_analyzer does not report a maximum


def latency_summary_from_ms(latencies_ms: Sequence[float] | np.ndarray) -> LatencySummary:
    values = np.asarray(latencies_ms, dtype=np.float64)
    if values.size == 0:
        nan = float("nan")
        return LatencySummary(nan, nan, nan, nan, nan, nan)
    p = np.percentile(values, PERCENTILES)
    p50, p90, p95, p99 = (float(x) for x in p)
    return LatencySummary(float(values.mean()), p50, p90, p95, p99, float(values.max()))


@dataclass(frozen=True)
class ServerBreakdown:
    """Per-request averages from Triton's statistics API over the measured windows."""

    requests: int = 0
    executions: int = 0
    queue_us: float = 0.0
    compute_input_us: float = 0.0
    compute_infer_us: float = 0.0
    compute_output_us: float = 0.0

    @property
    def avg_batch(self) -> float:
        return self.requests / self.executions if self.executions else 0.0

    @property
    def total_us(self) -> float:
        return self.queue_us + self.compute_input_us + self.compute_infer_us + self.compute_output_us


def steps_from_stats(
    before: Mapping[str, Any], after: Mapping[str, Any], steps: Sequence[str]
) -> dict[str, ServerBreakdown]:
    """Per composing model of an ensemble, from snapshots that hold ``{"steps": {name: statistics}}``."""
    return {
        name: server_breakdown_from_stats(before["steps"][name], after["steps"][name])
        for name in steps
        if name in before.get("steps", {}) and name in after.get("steps", {})
    }


def server_breakdown_from_stats(before: Mapping[str, Any], after: Mapping[str, Any]) -> ServerBreakdown:
    """The difference of two :func:`tritongen.client.model_statistics` snapshots, per successful request; none (as
    where nothing was counted) where a figure went down between them: the model's statistics were reset (a version
    unloaded, or the model reloaded, during the level), and no difference says what the level did."""
    keys = ("success_count", "execution_count", "queue_ns", "compute_input_ns", "compute_infer_ns", "compute_output_ns")
    delta = {key: int(after[key]) - int(before[key]) for key in keys}
    count = delta["success_count"]
    if count <= 0 or min(delta.values()) < 0:
        return ServerBreakdown()

    def per_request_us(key: str) -> float:
        return delta[key] / count / 1000.0

    return ServerBreakdown(
        requests=count,
        executions=delta["execution_count"],
        queue_us=per_request_us("queue_ns"),
        compute_input_us=per_request_us("compute_input_ns"),
        compute_infer_us=per_request_us("compute_infer_ns"),
        compute_output_us=per_request_us("compute_output_ns"),
    )


@dataclass(frozen=True)
class VersionFigures:
    """One version's share of a load level: the client's view and the server's statistics for it."""

    version: str
    share_pct: int  # asked for
    requests: int  # completed in the measured windows (errors included)
    throughput_rps: float
    latency: LatencySummary
    errors: Mapping[str, int] = field(default_factory=dict)
    server: ServerBreakdown = field(default_factory=ServerBreakdown)  # Triton's statistics for this version only

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def ok(self) -> int:
        return self.requests - self.error_count


ENGINES = ("builtin", "perf_analyzer")  # the load generators a run can be measured with (PerfSpec.engine)
MODES = ("concurrency", "request_rate")  # closed loop at a concurrency; open loop at an offered rate


def mode_words(mode: str) -> str:
    """``concurrency`` or ``request rate``: a kind of load, in words."""
    return "concurrency" if mode == "concurrency" else "request rate"


def load_words(mode: str, loads: Sequence[float]) -> str:
    """``concurrency 1, 2`` or ``50, 100 req/s``: levels of one kind of load, in words."""
    text = ", ".join(f"{load:g}" for load in loads)
    return f"concurrency {text}" if mode == "concurrency" else f"{text} req/s"


def load_option(mode: str, loads: Sequence[float]) -> str:
    """perf's option that measures ``loads``: ``--concurrency 8,16`` or ``--request-rate 50,100``."""
    text = ",".join(f"{load:g}" for load in loads)
    return f"--concurrency {text}" if mode == "concurrency" else f"--request-rate {text}"


@dataclass(frozen=True)
class PerfPoint:
    """One load level measured: ``mode`` is ``concurrency`` or ``request_rate`` and ``load`` its value."""

    mode: str
    load: float
    engine: str
    throughput_rps: float
    latency: LatencySummary
    requests: int  # completed requests in the measured windows (errors included)
    errors: Mapping[str, int] = field(default_factory=dict)  # kind -> count
    measured_s: float = 0.0
    windows: int = 0
    stable: bool = True
    server: ServerBreakdown = field(default_factory=ServerBreakdown)
    send_rate_rps: float | None = None  # open loop: the rate requests actually left at
    max_send_lag_ms: float | None = None  # open loop: worst delay of a send behind its schedule
    window_history: tuple[tuple[float, float], ...] = ()  # (throughput_rps, p99_ms) per window
    steps: Mapping[str, ServerBreakdown] = field(default_factory=dict)  # ensemble: each composing model's breakdown
    client_cpu_cores: float | None = None  # built-in engine: CPU the load generator used (1.0 = one core busy)
    client_cpu_us_per_request: float | None = None  # ... and per request sent
    client_machine_share: float | None = None  # server on this machine: the client's share of all its cores
    versions: Mapping[str, VersionFigures] = field(default_factory=dict)  # --version-split: per-version figures
    server_cpu_cores: float | None = None  # a server on this machine: its CPU (all its processes), in cores busy
    server_cpu_us_per_request: float | None = None  # ... and per request it answered (server_cpu.py)
    server_wakeups_per_request: float | None = None  # ... and its threads' wakeups per request it answered
    # built-in engine over HTTP: requests sent once more on a new connection, a kept one having closed with none of
    # the answer come (the server may have run them twice)
    resent: int = 0

    @property
    def client_bound(self) -> bool:
        """The built-in client kept a core busy, or took a fifth of the cores of the machine the server runs on:
        the figures measure it as much as the server."""
        if self.client_cpu_cores is None:
            return False
        share = self.client_machine_share
        return self.client_cpu_cores >= CLIENT_BOUND_CORES or (share is not None and share >= CLIENT_SHARE_COMPETES)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def within(self, p99_ms: float) -> bool:
        """Whether this level held a p99 bound (tune's target, deploy's objective): p99 at most ``p99_ms``, no
        request failed."""
        return self.latency.p99_ms <= p99_ms and self.error_count == 0

    @property
    def where(self) -> str:
        """``concurrency 4`` or ``50 req/s``."""
        return load_words(self.mode, [self.load])


@dataclass(frozen=True)
class PerfRun:
    """A whole run: what was measured, how, and every load level's result."""

    model: str
    url: str
    protocol: str
    engine: str
    points: tuple[PerfPoint, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)  # server Prometheus gauges after the run
    started_unix_s: float = 0.0
    partial: bool = False
    partial_reason: str = ""
    label: str = ""
    client_cpus: tuple[int, ...] = ()  # the CPUs the load generator ran on (its whole set when not pinned)
    server_cpus: tuple[int, ...] = ()  # a local tritonserver's CPUs, where its process was found; () otherwise
    placement: str = ""  # whether those overlap (placement_note); empty when the server's are unknown
    # the batching and instances the server served the model with (its config answer at the start); None where the
    # answer did not say them, and in a results.json written before perf recorded them
    served: ServedSettings | None = None

    @property
    def name(self) -> str:
        return self.label or f"{self.model} ({self.engine})"

    def text(self) -> str:
        """What ``tritongen perf`` prints (:meth:`table`); every result of the API has ``text()``."""
        return self.table()

    def table(self) -> str:
        """The table ``tritongen perf`` prints: one row per load level, with its legend."""
        return table_from_run(self)


# --------------------------------------------------------------------------------------------- files

# The client's Python runs one thread at a time (the event loop, or HTTP workers taking turns at the GIL): at ~1 core
# it cannot send faster, whatever the server
CLIENT_BOUND_CORES = 0.85
# A client on the server's machine using this share of its cores takes them from the server (measured on 2 cores:
# 0.5 cores of client -> 0.77x perf_analyzer's throughput on a ~1 ms model).
CLIENT_SHARE_COMPETES = 0.2


CSV_COLUMNS = (
    "mode",
    "load",
    "engine",
    "throughput_rps",
    "mean_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "requests",
    "errors",
    "measured_s",
    "windows",
    "stable",
    "server_requests",
    "server_executions",
    "avg_batch",
    *SERVER_PARTS,
    "send_rate_rps",
    "max_send_lag_ms",
    "client_cpu_cores",
    "client_cpu_us_per_request",
    "server_cpu_cores",
    "server_cpu_us_per_request",
    "server_wakeups_per_request",
    "resent",
)


def _point_dict(point: PerfPoint) -> dict[str, Any]:
    out = asdict(point)
    out["errors"] = dict(point.errors)
    out["window_history"] = [list(w) for w in point.window_history]
    out["steps"] = {name: asdict(b) for name, b in point.steps.items()}
    out["versions"] = {v: asdict(f) for v, f in point.versions.items()}
    return out


def json_from_run(run: PerfRun) -> str:
    data = {f.name: getattr(run, f.name) for f in fields(run) if f.name != "points"}
    data["settings"] = dict(run.settings)
    data["metrics"] = dict(run.metrics)
    data["served"] = asdict(run.served) if run.served is not None else None
    data["points"] = [_point_dict(p) for p in run.points]
    return json.dumps({"format": "tritongen-perf/1", **data}, indent=2, default=_json_default) + "\n"


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


MAX_RESULT_BYTES = 4 << 20  # a run of many levels is a few hundred KiB; 4 MiB of tiny JSON values parse to ~100 MB
# What one run holds, at most: beyond any real run, and small enough that a run at every bound (each level with
# MAX_POINT_VERSIONS versions, MAX_STEPS steps of 128-character names, 10 windows: ~2.7 MB as perf writes it) stays
# under MAX_RESULT_BYTES, so that what perf writes it reads back, and a report of it draws in seconds.
MAX_LEVELS = 128  # load levels of one run (--concurrency and --request-rate values): 1 to 1024 by powers of 2 is 11
MAX_POINT_VERSIONS = 8  # versions of one level: split.MAX_VERSIONS (split imports this module; a test holds them equal)
MAX_STEPS = 32  # composing models of an ensemble measured at one level (tritongen's own ensembles have 2 or 3)
RESULTS_NAME = "results.json"  # in a --report folder
RESULT_FIX = "pass a results.json written by tritongen perf (or the --report folder that holds it)"


def run_from_json(text_or_path: str | Path) -> PerfRun:
    """A run from a results.json (a :class:`~pathlib.Path`, or a str naming one) or from its JSON text (a str that
    starts with ``{``), checked whole: at most :data:`MAX_LEVELS` levels of at most :data:`MAX_POINT_VERSIONS` versions
    (each a number from 1 to :data:`MAX_VERSION`) and :data:`MAX_STEPS` steps, every field's type, every figure
    finite and within bounds, names without control characters, known engines, protocols and modes."""
    is_text = isinstance(text_or_path, str) and text_or_path.lstrip().startswith("{")
    path = None if is_text else Path(text_or_path)
    if path is not None and path.is_dir() and (path / RESULTS_NAME).is_file():  # a report folder: its results
        path = path / RESULTS_NAME
    elif path is not None and path.is_dir():  # "it is a folder: pass ... the folder that holds it" contradicted itself
        raise TritongenError(
            f"perf result folder {path} holds no {RESULTS_NAME}"
            + (
                " (a perf --compare report: its runs' results are in their own --report folders)"
                if (path / "report.html").is_file()
                else ""
            ),
            "pass the results.json of one run (tritongen perf ... --report DIR writes DIR/results.json)",
        )
    where = f"perf result {path}" if path is not None else "perf result text"
    try:
        raw = regular_bytes(path, MAX_RESULT_BYTES) if path is not None else str(text_or_path)
        data = json_from_bytes(raw)
    except FileTooLargeError as e:
        raise TritongenError(f"{where} is over {size_text(e.max_bytes)}", RESULT_FIX) from None
    except OSError as e:
        raise TritongenError(f"{where} {read_problem(e)}", RESULT_FIX) from None
    except UnicodeDecodeError:
        raise TritongenError(f"{where} is not UTF-8 text", RESULT_FIX) from None
    except json.JSONDecodeError as e:
        raise TritongenError(f"{where} is not JSON ({e.msg})", RESULT_FIX) from None
    except ValueError as e:
        raise TritongenError(f"{where} is not readable JSON ({str(e)[:120]})", RESULT_FIX) from None
    if not isinstance(data, dict) or data.get("format") != "tritongen-perf/1":
        raise TritongenError(f"{path or 'the text'} is not a tritongen perf result", RESULT_FIX)
    too_many = _count_problem(data)
    if too_many:
        raise TritongenError(f"{where} {too_many}", RESULT_FIX)
    try:
        run = _run_from_data(data)
        _check_types(run, PerfRun, "")
        _check_values(run)
    except KeyError as e:
        raise TritongenError(f"{where} lacks {str(e)[:120]}", RESULT_FIX) from None
    except (TypeError, ValueError, AttributeError) as e:
        raise TritongenError(f"{where} is malformed ({str(e)[:200]})", RESULT_FIX) from None
    return run


def _count_problem(data: Mapping[str, Any]) -> str | None:
    """Where a parsed results.json holds more load levels, versions or steps than a run of perf can (MAX_LEVELS,
    MAX_POINT_VERSIONS, MAX_STEPS), what; checked before anything is built from it or drawn."""
    points = data.get("points", [])
    if not isinstance(points, list):
        return None  # the type check names it
    if len(points) > MAX_LEVELS:
        return f"holds {len(points)} load levels, over the {MAX_LEVELS} one run of perf measures"
    for i, p in enumerate(points):
        if not isinstance(p, dict):
            continue
        for key, bound, what in (("versions", MAX_POINT_VERSIONS, "versions"), ("steps", MAX_STEPS, "ensemble steps")):
            items = p.get(key)
            if isinstance(items, dict) and len(items) > bound:
                return f"holds {len(items)} {what} at points[{i}], over the {bound} perf measures at one level"
    return None


MAX_CONCURRENCY = 4096  # a closed loop's requests in flight, as many as an open loop keeps (max_in_flight)
MAX_REQUEST_RATE = 100_000.0  # req/s one client offers (the built-in engine's ~15,000-30,000 on one core, with room)
MAX_FIGURE = 1e15  # no figure of a run (requests, microseconds, bytes of a gauge, a Unix time) comes near it
MAX_UNIX_S = 253_402_300_799  # 9999-12-31: a start time a report can print
MAX_TEXT_CHARS = 4096  # a model name, a URL, a label, an error kind


MAX_SETTINGS = 128  # options perf records (a PerfSpec's fields and two of its own)
MAX_SETTING_ITEMS = 4096  # items of one recorded option (levels, CPUs, a version split's pairs)


def _setting_problem(value: Any, depth: int = 0) -> str | None:
    """What a recorded option holds that perf never writes: a value other than a number, a name, a bool or None,
    or lists of them two deep at most (a version split's pairs), or more than :data:`MAX_SETTING_ITEMS` items (a
    file nesting lists a thousand deep was written back a thousand times larger)."""
    if value is None or isinstance(value, (bool, int, str)):
        return _text_problem(value) if isinstance(value, str) else None
    if isinstance(value, float):
        return None if math.isfinite(value) else "is not a finite number"
    if isinstance(value, (list, tuple)) and depth < 2:  # a spec's tuples are lists in the file
        if len(value) > MAX_SETTING_ITEMS:
            return f"holds {len(value)} items, over {MAX_SETTING_ITEMS}"
        return next((f"[{i}] {p}" for i, v in enumerate(value) if (p := _setting_problem(v, depth + 1))), None)
    return "is not what perf records (a number, a name, or a list of them)"


SHOWN_SETTINGS = ("repo", "url", "model", "label")  # recorded options printed in cautions, READMEs and reports


def settings_problem(settings: Mapping[str, Any]) -> str | None:
    """What in ``settings`` (the options a run records) a results.json reader refuses, in words; None where all is
    well."""
    if len(settings) > MAX_SETTINGS:
        return f"settings holds {len(settings)} options, over the {MAX_SETTINGS} perf records"
    for key, value in settings.items():
        problem = setting_problem(key, value)
        if problem:
            return f"settings[{key[:40]!r}] {problem}"
    return None


def setting_problem(key: str, value: Any) -> str | None:
    """What in one recorded option a results.json reader refuses; :class:`~tritongen.perf.spec.PerfSpec` holds its
    options to it, so what perf writes it reads back."""
    problem = _setting_problem(value)
    if problem is None and isinstance(value, str) and key in SHOWN_SETTINGS:
        char = display_problem_character(value)
        if char is not None:
            problem = f"holds the character U+{ord(char):04X}, which would change how it is shown"
    return problem


def _check_values(run: PerfRun) -> None:
    """What the tool acts on holds what it writes: known engines, protocols and modes (a crafted file cannot name
    a new engine), a positive load, a start time a report can print, names without format characters (a
    right-to-left override would spoof a run's name) and line breaks, recorded options as perf writes them."""
    for name in ("model", "url", "label"):
        shown = setting_problem(name, getattr(run, name))
        if shown:
            raise ValueError(f"{name} {shown}")
    problem = settings_problem(run.settings)
    if problem:
        raise ValueError(problem)
    if run.engine not in ENGINES:
        raise ValueError(f"engine is {run.engine[:40]!r}, not one of {', '.join(ENGINES)}")
    if run.started_unix_s > MAX_UNIX_S:
        raise ValueError(f"started_unix_s is {run.started_unix_s:g}, after the year 9999")
    if run.protocol not in ("grpc", "http"):
        raise ValueError(f"protocol is {run.protocol[:40]!r}, not grpc or http")
    for i, p in enumerate(run.points):
        if p.mode not in MODES:
            raise ValueError(f"points[{i}].mode is {p.mode[:40]!r}, not one of {', '.join(MODES)}")
        if p.engine not in ENGINES:
            raise ValueError(f"points[{i}].engine is {p.engine[:40]!r}, not one of {', '.join(ENGINES)}")
        if p.load <= 0:
            raise ValueError(f"points[{i}].load is not positive")
        if p.mode == "concurrency" and not (p.load == int(p.load) and p.load <= MAX_CONCURRENCY):
            raise ValueError(f"points[{i}].load is {p.load:g}, not a concurrency from 1 to {MAX_CONCURRENCY}")
        if p.mode != "concurrency" and p.load > MAX_REQUEST_RATE:
            raise ValueError(f"points[{i}].load is {p.load:g} req/s, over the {MAX_REQUEST_RATE:g} perf offers")
        _check_latency(p.latency, p.throughput_rps, f"points[{i}]")
        for version, v in p.versions.items():
            # str.isdigit() takes "²" and other digits int() refuses: ASCII digits only, at most int64's 19 of them
            number = version_from_api(version)
            if number is None or number < 1:
                shown = f"{version[:20]!r}... ({len(version)} characters)" if len(version) > 40 else repr(version)
                raise ValueError(f"points[{i}].versions has {shown}, not a model version from 1 to 2**63-1")
            _check_latency(v.latency, v.throughput_rps, f"points[{i}].versions[{version[:40]!r}]")
        for j, (window_rps, _) in enumerate(p.window_history):
            if math.isnan(window_rps):
                raise ValueError(f"points[{i}].window_history[{j}] has a throughput of nan")


def _check_latency(latency: LatencySummary, throughput_rps: float, where: str) -> None:
    """NaN is what perf writes for a level (or a version's share of one) without an answer: then every latency is
    NaN (perf_analyzer's maximum None) and the throughput 0; a summary partly NaN, or NaN beside a throughput, is
    not a measurement (a deployment's autoscaling target is computed from the mean)."""
    figures = {f.name: getattr(latency, f.name) for f in fields(latency)}
    nan = [name for name, value in figures.items() if value is not None and math.isnan(value)]
    if not nan:
        return
    if len(nan) + (figures["max_ms"] is None) < len(figures):
        raise ValueError(f"{where}.latency.{nan[0]} is nan beside measured latencies")
    if throughput_rps:
        raise ValueError(f"{where}.latency.{nan[0]} is nan at a throughput of {throughput_rps:g} req/s")


def _text_problem(value: str) -> str | None:
    if len(value) > MAX_TEXT_CHARS:
        return f"is over {MAX_TEXT_CHARS} characters"
    # tabs and line breaks are text (a partial run's reason); other control characters (a terminal escape) are not
    if any((ord(c) < 0x20 and c not in "\t\n\r") or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in value):
        return "holds a control character or a lone surrogate"
    return None


def _check_types(value: Any, hint: Any, where: str, nan_ok: bool = False) -> None:
    """Raise ValueError where ``value`` (read from a file) is not what the annotation ``hint`` says: every figure
    a table or a report formats must be a number (finite, 0 to :data:`MAX_FIGURE`; NaN only in a latency summary
    and a window's figures, where perf writes it for no answers), every name a string without control characters,
    before anything formats it."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is Any:
        return
    if is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, hint):
            raise ValueError(f"{where or 'the run'} is not a {hint.__name__}")
        hints = get_type_hints(hint)
        for f in fields(hint):
            name = f"{where}.{f.name}".lstrip(".")
            # NaN where perf writes it: an empty level's latency summary, a window without an answer's p99
            nan_here = nan_ok or hint is LatencySummary or f.name == "window_history"
            _check_types(getattr(value, f.name), hints[f.name], name, nan_here)
        return
    if origin in (Union, UnionType):
        problems = []
        for option in args:
            try:
                _check_types(value, option, where, nan_ok)
                return
            except ValueError as e:
                if option is not type(None):  # "is not a NoneType" says nothing about a value that is there
                    problems.append(str(e))
        raise ValueError(min(problems, key=len) if problems else f"{where} has the wrong type")
    if origin is tuple:
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if not isinstance(value, tuple) or len(items) != len(value):
            raise ValueError(f"{where} is not a list of the right length")
        for i, (item, item_hint) in enumerate(zip(value, items)):
            _check_types(item, item_hint, f"{where}[{i}]", nan_ok)
        return
    if origin in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} is not an object")
        for key, item in value.items():
            _check_types(key, args[0], f"{where} key", nan_ok)
            _check_types(item, args[1], f"{where}[{key!r}]"[:120], nan_ok)
        return
    ok = {
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        bool: isinstance(value, bool),
        str: isinstance(value, str),
        type(None): value is None,
    }.get(hint)
    if ok is None:
        raise TypeError(f"no check for {hint!r} at {where}")  # a field type this checker does not know yet
    if not ok:
        raise ValueError(f"{where} is not a {getattr(hint, '__name__', hint)} ({type(value).__name__})")
    if hint in (float, int) and not (nan_ok and value != value) and not 0 <= value <= MAX_FIGURE:
        raise ValueError(f"{where} is {str(value)[:40]}, not a figure from 0 to {MAX_FIGURE:g}")
    if hint is str and (problem := _text_problem(value)):
        raise ValueError(f"{where} {problem}")


def _run_from_data(data: Mapping[str, Any]) -> PerfRun:
    points = []
    for p in data.get("points", []):
        points.append(
            PerfPoint(
                mode=p["mode"],
                load=p["load"],
                engine=p["engine"],
                throughput_rps=p["throughput_rps"],
                latency=LatencySummary(**p["latency"]),
                requests=p["requests"],
                errors=dict(p.get("errors", {})),
                measured_s=p.get("measured_s", 0.0),
                windows=p.get("windows", 0),
                stable=p.get("stable", True),
                server=ServerBreakdown(**p.get("server", {})),
                send_rate_rps=p.get("send_rate_rps"),
                max_send_lag_ms=p.get("max_send_lag_ms"),
                window_history=tuple(tuple(w) for w in p.get("window_history", ())),
                steps={name: ServerBreakdown(**b) for name, b in p.get("steps", {}).items()},
                client_cpu_cores=p.get("client_cpu_cores"),
                client_machine_share=p.get("client_machine_share"),
                client_cpu_us_per_request=p.get("client_cpu_us_per_request"),
                server_cpu_cores=p.get("server_cpu_cores"),
                server_cpu_us_per_request=p.get("server_cpu_us_per_request"),
                server_wakeups_per_request=p.get("server_wakeups_per_request"),
                resent=p.get("resent", 0),
                versions={v: _version_from_dict(f) for v, f in p.get("versions", {}).items()},
            )
        )
    keep = {f.name for f in fields(PerfRun)} - {"points"}
    run = {k: v for k, v in data.items() if k in keep}
    for name in ("client_cpus", "server_cpus"):
        value = run.get(name) or ()
        run[name] = tuple(value) if isinstance(value, list) else value
    served = run.get("served")
    if isinstance(served, dict):
        sizes = served.get("preferred_batch_sizes", ())
        if isinstance(sizes, list):  # as perf writes them: in order, once each (a mixed list: a TypeError here)
            sizes = tuple(sorted(set(sizes)))
        run["served"] = ServedSettings(**{**served, "preferred_batch_sizes": sizes})
    return PerfRun(points=tuple(points), **run)


def _version_from_dict(data: Mapping[str, Any]) -> VersionFigures:
    return VersionFigures(
        version=data["version"],
        share_pct=data["share_pct"],
        requests=data["requests"],
        throughput_rps=data["throughput_rps"],
        latency=LatencySummary(**data["latency"]),
        errors=dict(data.get("errors", {})),
        server=ServerBreakdown(**data.get("server", {})),
    )


def csv_from_run(run: PerfRun) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in run.points:
        lat = p.latency
        writer.writerow(
            [
                p.mode,
                p.load,
                p.engine,
                _r(p.throughput_rps),
                _r(lat.mean_ms),
                _r(lat.p50_ms),
                _r(lat.p90_ms),
                _r(lat.p95_ms),
                _r(lat.p99_ms),
                _r(lat.max_ms),
                p.requests,
                p.error_count,
                _r(p.measured_s),
                p.windows,
                p.stable,
                p.server.requests,
                p.server.executions,
                _r(p.server.avg_batch),
                *(_r(getattr(p.server, k)) for k in SERVER_PARTS),
                _r(p.send_rate_rps),
                _r(p.max_send_lag_ms),
                _r(p.client_cpu_cores),
                _r(p.client_cpu_us_per_request),
                _r(p.server_cpu_cores),
                _r(p.server_cpu_us_per_request),
                _r(p.server_wakeups_per_request),
                p.resent,
            ]
        )
    return buffer.getvalue()


def _r(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


REPORT_FILES = ("report.html", RESULTS_NAME, "results.csv")  # what a report folder receives


def check_compare_dir(sources: Sequence[str | Path], out_dir: Path) -> None:
    """Refuse ``out_dir`` for a comparison's report when it is the folder of one of the compared runs (a report
    folder, or the folder a results.json lies in): its report.html would show the comparison while its results.json
    still held that one run."""
    out_dir = Path(out_dir)
    for source in sources:
        folder = Path(source) if os.path.isdir(source) else Path(source).parent
        try:
            same = os.path.isdir(out_dir) and os.path.samefile(out_dir, folder)
        except OSError:
            same = False
        if same:
            raise TritongenError(
                f"--report {out_dir} is the folder of the compared run {source}: its report.html would show the "
                "comparison while its results.json holds that run alone",
                "write the comparison to a folder of its own, e.g. --report compare/",
            )


def _check_report_folder_holds_a_report(out_dir: Path, force: bool) -> None:
    """Refuse an existing folder with other files than a report's, and one with an earlier report unless ``force``."""
    earlier: list[str] = []
    others: list[str] = []
    with os.scandir(out_dir) as entries:
        for entry in itertools.islice(entries, 1000):  # enough to tell; a huge folder is no report folder either
            (earlier if entry.name in REPORT_FILES else others).append(entry.name)
    if others:
        shown = ", ".join(sorted(one_line(n)[:60] for n in others)[:3]) + (", ..." if len(others) > 3 else "")
        raise TritongenError(
            f"the report folder {out_dir} holds other files than a perf report ({shown}): the report would be written "
            "among them",
            "pass --report with a new or empty folder, e.g. --report perf-<model>/",
        )
    if earlier and not force:
        raise TritongenError(
            f"the report folder {out_dir} holds an earlier perf report ({', '.join(sorted(earlier))}): this run "
            "would replace it",
            "pass --force to replace it, or --report another folder (keep the earlier one to --compare with)",
        )


def check_report_dir(out_dir: Path, force: bool = False) -> None:
    """Raise :class:`TritongenError` unless a report can be written into ``out_dir``: a folder that exists and can
    be written in, or one that can be created (missing parents included). :class:`~tritongen.perf.PerfSpec` runs
    it on its ``report_dir``, before any load is sent: a bad ``--report`` costs no run. A folder holding other
    files than a report's is refused (a deploy bundle, the current folder), and one holding an earlier report
    without ``force`` (its results.json may be the baseline of a ``--compare``).

    Nothing is left behind: writability is probed with an empty folder, removed at once (``os.access`` says yes
    to root on a path where nothing can be created, such as ``/proc``).
    """
    out_dir = Path(out_dir)
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise TritongenError(f"the report path {out_dir} is a file, not a folder", "pass --report with a folder path")
    if os.path.isdir(out_dir):
        for name in REPORT_FILES:
            target = out_dir / name
            if os.path.lexists(target) and (os.path.islink(target) or not os.path.isfile(target)):
                raise TritongenError(
                    f"the report folder {out_dir} holds a {name} that is not a file (a link or a folder)",
                    f"remove {target}, or pass --report with another folder",
                )
        _check_report_folder_holds_a_report(out_dir, force)
        existing = out_dir
    else:
        existing = out_dir.parent
        while not os.path.lexists(existing) and existing != existing.parent:
            existing = existing.parent
        if not os.path.isdir(existing):
            raise TritongenError(
                f"the report folder {out_dir} cannot be created ({existing} is a file, not a folder)",
                "pass --report with a folder path whose parents are folders",
            )
    try:
        probe = tempfile.mkdtemp(prefix=".tritongen-probe-", dir=existing)
    except OSError as exc:
        problem = "cannot be written in" if existing == out_dir else f"cannot be created in {existing}"
        raise TritongenError(
            f"the report folder {out_dir} {problem} ({exc.strerror or exc})",
            "pass --report with a folder you can write to, or fix its permissions",
        ) from None
    os.rmdir(probe)


def files_from_run(run: PerfRun, out_dir: Path) -> dict[str, Path]:
    """Write ``results.json`` and ``results.csv`` into ``out_dir`` (both rendered before either is written)."""
    out_dir = Path(out_dir)
    texts = {"json": json_from_run(run), "csv": csv_from_run(run)}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / RESULTS_NAME, "csv": out_dir / "results.csv"}
    for kind, path in paths.items():
        replace_file(path, texts[kind])
    return paths


def _loads_words(points: Sequence[PerfPoint]) -> str:
    """``concurrency 1, 2; 50, 100 req/s``."""
    by_mode = {mode: [p.load for p in points if p.mode == mode] for mode in MODES}
    return "; ".join(load_words(mode, loads) for mode, loads in by_mode.items() if loads)


def table_from_run(run: PerfRun) -> str:
    """A plain-text table for the terminal."""
    head = (
        f"{'load':>10} {'req/s':>9} {'mean ms':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'errors':>6} {'queue us':>9} {'infer us':>9} {'batch':>5} {'srv CPU us':>10}"
    )
    lines = [
        f"{run.name}: {run.url} ({run.protocol})" + ("  [PARTIAL: " + run.partial_reason + "]" if run.partial else ""),
        head,
    ]
    for p in run.points:
        unit = "c" if p.mode == "concurrency" else "/s"
        load = f"{p.load:g}{unit}"
        mx = _ms(p.latency.max_ms)
        flag = ("" if p.stable else "  (not stable)") + ("  (client-bound)" if p.client_bound else "")
        lines.append(
            f"{load:>10} {p.throughput_rps:>9.1f} {_ms(p.latency.mean_ms):>8} "
            f"{_ms(p.latency.p50_ms):>8} {_ms(p.latency.p90_ms):>8} "
            f"{_ms(p.latency.p99_ms):>8} {mx:>8} {p.error_count:>6} "
            + (
                f"{p.server.queue_us:>9.0f} {p.server.compute_infer_us:>9.0f} {p.server.avg_batch:>5.2f} "
                if p.server.requests
                else f"{'-':>9} {'-':>9} {'-':>5} "  # no statistics read: not zero
            )
            + f"{_us(p.server_cpu_us_per_request):>10}{flag}"
        )
        for name, step in p.steps.items():
            lines.append(
                f"{'':>10} {'step ' + name:<56} {step.queue_us:>9.0f} "
                f"{step.compute_infer_us:>9.0f} {step.avg_batch:>5.2f}"
            )
        for version, v in p.versions.items():
            label = f"v{version} {v.share_pct}%"
            lines.append(
                f"{label:>10} {v.throughput_rps:>9.1f} {_ms(v.latency.mean_ms):>8} {_ms(v.latency.p50_ms):>8} "
                f"{_ms(v.latency.p90_ms):>8} {_ms(v.latency.p99_ms):>8} {_ms(v.latency.max_ms):>8} {v.error_count:>6} "
                f"{v.server.queue_us:>9.0f} {v.server.compute_infer_us:>9.0f} {v.server.avg_batch:>5.2f}"
                f"  {version_count_text(v)}"
            )
    lines += error_lines(run)
    unread = [p for p in run.points if not p.server.requests and p.throughput_rps > 0]
    if unread:
        lines.append(
            f"the server's statistics could not be read at {_loads_words(unread)} (queue us, "
            "infer us and batch show -): the server stopped answering them, the model's versions changed during "
            "the level (a rollout or rollback: an unloaded version's counters go with it), or --url reaches it "
            "through a proxy"
        )
    note = client_bound_note(run)
    if note:
        lines.append(note)
    if any(p.server_cpu_us_per_request is not None for p in run.points):
        lines.append(
            "srv CPU us: CPU time the local tritonserver (its process and its stubs) spent per request it answered; "
            "with its cores busy it serves at most cores x 1,000,000 / that requests a second"
        )
    if run.placement:
        lines.append(run.placement)
    elif run.client_cpus:
        lines.append(f"client CPUs {cpus_text(run.client_cpus)}")
    # a results.json from elsewhere (perf --compare) may carry a newline or a terminal's escape in any text
    return "\n".join(one_line(line) for line in lines)


ERROR_KINDS_SHOWN = 4  # per level; the rest are counted in results.json


def error_lines(run: PerfRun) -> list[str]:
    """One line per level that had errors: the kinds and their counts, so that requests the client never sent
    (``client_overloaded``: an open loop offered more than it could send on schedule) are not read as failures
    of the server; and one per level where requests were sent again."""
    lines = []
    for p in run.points:
        where = f"{p.load:g}c" if p.mode == "concurrency" else f"{p.load:g}/s"
        if p.resent:
            lines.append(
                f"sent again at {where}: {p.resent} requests, on a new connection: the server closed kept connections "
                "as they left, unanswered (the server may have run them twice; counted once here)"
            )
        if not p.errors:
            continue
        kinds = sorted(p.errors.items(), key=lambda kv: -kv[1])
        text = ", ".join(f"{kind} {count}" for kind, count in kinds[:ERROR_KINDS_SHOWN])
        more = f" and {len(kinds) - ERROR_KINDS_SHOWN} more kinds" if len(kinds) > ERROR_KINDS_SHOWN else ""
        lines.append(f"errors at {where}: {text}{more}")
        if "client_overloaded" in p.errors:
            lines.append(
                f"  client_overloaded: {p.errors['client_overloaded']} requests this client could not send on "
                "schedule (never sent, not the server's failures): offer a lower --request-rate"
            )
    return lines


class LevelFailed(TritongenError):
    """Every request of a load level failed: nothing was measured there. ``run`` holds what was (its figures, every
    failure kind by count), for a caller to look at; ``perf --report`` has written it before this is raised."""

    def __init__(self, run: PerfRun, problem: str, fix: str) -> None:
        super().__init__(problem, fix)
        self.run = run


def failed_level_error(run: PerfRun, report_dir: Path | None = None) -> LevelFailed | None:
    """The error for the first level of ``run`` where no request succeeded (each failed, with a kind, or none was
    answered at all), if any:
    its figures are no measurement of the model, so the run is no success. Levels with some answers stay results
    (their error kinds are counted, as :func:`error_lines` shows)."""
    for p in run.points:
        # nothing answered and nothing failed: a closed loop's every request still out (an open loop at a low rate
        # may have had none due in its windows; perf_analyzer's counts are its throughput times the time; a run
        # --max-time-s cut says so itself)
        silent = not p.requests and not p.errors and p.engine == "builtin" and p.mode == "concurrency"
        if silent and not run.partial:
            return LevelFailed(
                run,
                f"no request at {p.where} was answered in its measured {p.measured_s:.1f} s (none failed either: "
                "the server took the requests and kept them)",
                "check the server (its log, its model's health); a model that takes longer than a window per "
                "request needs a longer --duration-s",
            )
        if not p.errors or p.requests > p.error_count:
            continue
        where = p.where
        first = next(iter(p.errors))  # kinds are counted in the order they first happened
        kinds = f", {len(p.errors)} kinds" if len(p.errors) > 1 else ""
        saved = f"; every failure kind is in {Path(report_dir) / 'results.json'}" if report_dir else ""
        return LevelFailed(
            run,
            f"every request at {where} failed ({p.error_count}{kinds}), the first with {first}",
            f"fix that and run perf again{saved}",
        )
    return None


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.2f}"  # nan: a level without answers


def version_count_text(v: VersionFigures) -> str:
    """The client's answered requests for a version against the server's count for it (edges of the windows
    differ by the requests in flight there)."""
    if not v.server.requests:
        return f"{v.ok} answered (no server statistics)"
    return f"{v.ok} answered, server counted {v.server.requests}"


def client_bound_note(run: PerfRun) -> str:
    """A warning when the built-in client, not the server, limited some load level."""
    bound = [p for p in run.points if p.client_bound]
    if not bound:
        return ""
    worst = max(bound, key=lambda p: p.client_cpu_cores or 0.0)
    # a level that sent no request has cores busy but no CPU per request (loadgen writes None there)
    per_request = worst.client_cpu_us_per_request
    per_request_text = f" ({per_request:.0f} us of CPU per request)" if per_request is not None else ""
    return (
        f"client-bound at {_loads_words(bound)}: tritongen's client used "
        f"{worst.client_cpu_cores or 0.0:.2f} cores{per_request_text}, so these "
        "figures understate the server; measure again with --engine perf_analyzer (C++, cheaper per request), or "
        "run the client on another machine"
    )


AGREE_PCT = 5.0  # two runs' throughputs within this of each other need no explaining
# A server using this share of its CPUs (or more) is CPU-bound: it serves cores / CPU per request.
SATURATED_SHARE = 0.85


# Wakeups per request this far apart (a ratio) are named as a cause of a difference in the server's CPU per request.
WAKEUPS_DIFFER = 1.25


def wakeups_words(base: PerfPoint, other: PerfPoint) -> str:
    """How often the server's threads woke per request under each run, where both were read; where they differ
    by WAKEUPS_DIFFER or more, what that means: a thread woken once per request costs more than one that reads a
    burst of requests at once (server_cpu.py)."""
    before, after = base.server_wakeups_per_request, other.server_wakeups_per_request
    if before is None or after is None:
        return ""
    text = f", its threads woke {after:.2f} times per request against {before:.2f}"
    low, high = sorted((before, after))
    if low > 0 and high / low >= WAKEUPS_DIFFER:
        text += (
            " (requests that arrive one at a time wake a thread each; those that arrive together share a wakeup: "
            "how each client paces its requests)"
        )
    return text


def distinct_names(runs: Sequence[PerfRun]) -> tuple[PerfRun, ...]:
    """``runs``, those whose names (label, else model and engine) another run shares labelled apart by what differs
    between them: protocol, engine, URL, else start time, else their place in the list (``#2``). A comparison of
    two runs both named ``minilm (builtin)`` would otherwise read one name against itself."""
    names = [run.name for run in runs]
    out = list(runs)
    for name in dict.fromkeys(names):
        group = [i for i, n in enumerate(names) if n == name]
        if len(group) < 2:
            continue
        details: dict[int, list[str]] = {i: [] for i in group}
        for describe in (
            lambda r: {"http": "HTTP", "grpc": "gRPC"}.get(r.protocol, r.protocol),
            lambda r: r.engine,
            lambda r: r.url,
            lambda r: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_unix_s)) if r.started_unix_s else "",
        ):
            if len({describe(runs[i]) for i in group}) > 1:
                for i in group:
                    details[i].append(describe(runs[i]) or "?")
        for place, i in enumerate(group, 1):
            shown = ", ".join(details[i]) if details[i] else f"#{place}"
            out[i] = replace(runs[i], label=f"{name} [{shown}]")
        if len({out[i].name for i in group}) < len(group):  # the same details: their places tell them apart
            for place, i in enumerate(group, 1):
                out[i] = replace(out[i], label=f"{out[i].name} #{place}")
    return tuple(out)


def comparison_lines(runs: Sequence[PerfRun]) -> list[str]:
    """Where a run measured the model served with other batching or instances than the first run, one line naming
    what differed. Where a run reads a throughput more than AGREE_PCT away from the first run's at the same load,
    one line on whether the server's own CPU per request accounts for it: a server whose cores are saturated serves
    cores / CPU per request, and that cost depends on how each client's requests arrive (README: perf)."""
    if len(runs) < 2:
        return []
    runs = distinct_names(runs)
    base = runs[0]
    by_load = {(p.mode, p.load): p for p in base.points}
    lines = []
    for other in runs[1:]:
        if base.served is not None and other.served is not None and base.served != other.served:
            lines.append(
                f"{other.name} measured the model served otherwise than {base.name} did "
                f"({'; '.join(base.served.differences(other.served))}): the figures compare two configs"
            )
        for p in other.points:
            a = by_load.get((p.mode, p.load))
            if a is None or a.throughput_rps <= 0 or p.throughput_rps <= 0:
                continue
            tp = p.throughput_rps / a.throughput_rps
            if abs(tp - 1.0) * 100.0 <= AGREE_PCT or not 1e-6 < tp < 1e6:  # a million times: not two measurements
                continue
            where = p.where
            line = f"{where}: {other.name} reads {tp:.2f}x the throughput of {base.name}"
            a_cpu, p_cpu = a.server_cpu_us_per_request or 0.0, p.server_cpu_us_per_request or 0.0
            if not (a_cpu >= 1e-3 and p_cpu >= 1e-3):  # a nanosecond of CPU per request: not measured
                lines.append(line + "; the server's CPU was not measured in both (a server on another machine)")
                continue
            cpu = p_cpu / a_cpu
            line += (
                f"; the server spent {cpu:.2f}x the CPU per request on its requests "
                f"({p.server_cpu_us_per_request:.0f} against {a.server_cpu_us_per_request:.0f} us)"
            ) + wakeups_words(a, p)
            cores = len(base.server_cpus) if base.server_cpus == other.server_cpus else 0
            busy = (a.server_cpu_cores or 0.0, p.server_cpu_cores or 0.0)
            if not cores or min(busy) < SATURATED_SHARE * cores:
                lines.append(
                    line
                    + f"; the server was not saturated in both (cores busy {busy[0]:.2f} and {busy[1]:.2f}"
                    + (f" of {cores}" if cores else "")
                    + "): the clients' pace, not the server's capacity, sets these figures"
                )
            elif abs(tp * cpu - 1.0) * 100.0 <= AGREE_PCT:
                lines.append(
                    line + f"; with its {cores} CPU(s) saturated in both, that accounts for the difference: the "
                    "server itself did different work per request for each client; neither measurement is off"
                )
            else:
                lines.append(
                    line + f"; with its {cores} CPU(s) saturated in both, that accounts for a throughput of "
                    f"{1 / cpu:.2f}x, not all of it: compare the clients' CPU and the queue times"
                )
    return [one_line(line) for line in lines]
