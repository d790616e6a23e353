"""The perf_analyzer engine: the real perf_analyzer, fed input-data JSON and ``--shape`` made from our samples.

:func:`find_perf_analyzer` looks on ``PATH``, then in the venv (``<venv>/lib/tritongen-tools/perf_analyzer``,
put there by ``scripts/install_perf_analyzer.sh``), and puts the CUDA runtime library from the
``nvidia-cuda-runtime-cu12`` wheel on ``LD_LIBRARY_PATH``. Each load level is one perf_analyzer process whose
CSV (``-f --verbose-csv``) is parsed into the same :class:`PerfPoint` the built-in engine produces.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TritongenError
from ..names import one_line
from ..progress import Progress
from .inputs import RequestSet
from .results import LatencySummary, PerfPoint, ServerBreakdown
from .server_cpu import ServerCpuMeter, ServerReading, server_cpu_between, server_cpu_from_used, server_cpu_meter_at
from .spec import STABLE_WINDOWS, PerfSpec

INSTALL_FIX = (
    "run scripts/install_perf_analyzer.sh (perf_analyzer from "
    "the tritonclient 2.48 wheel, plus libb64-0d and libcudart)"
)


@dataclass(frozen=True)
class PerfAnalyzerInstall:
    binary: Path
    env: Mapping[str, str]


def cuda_runtime_dirs() -> tuple[str, ...]:
    """The library folders of the ``nvidia-cuda-runtime-cu12`` wheel (the wheel's perf_analyzer needs
    ``libcudart.so.12``), put on ``LD_LIBRARY_PATH`` for it; none when the wheel is absent."""
    try:
        import nvidia.cuda_runtime as cuda_runtime  # noqa: PLC0415 - a library folder, not code we run
    except ImportError:
        return ()
    return tuple(str(Path(p) / "lib") for p in cuda_runtime.__path__ if (Path(p) / "lib").is_dir())


def find_perf_analyzer() -> PerfAnalyzerInstall:
    candidates = []
    on_path = shutil.which("perf_analyzer")
    if on_path:
        candidates.append(Path(on_path))
    venv_bin = Path(sys.executable).absolute().parent
    candidates += [venv_bin.parent / "lib" / "tritongen-tools" / "perf_analyzer", venv_bin / "perf_analyzer"]
    binary = next((c for c in candidates if c.is_file() and os.access(c, os.X_OK)), None)
    if binary is None:
        raise TritongenError("perf_analyzer is not installed (not on PATH, not in this environment)", INSTALL_FIX)
    env = dict(os.environ)
    lib_dirs = list(cuda_runtime_dirs())
    if lib_dirs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            lib_dirs + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else [])
        )
    return PerfAnalyzerInstall(binary=binary, env=env)


def input_data_from_requests(requests: RequestSet) -> dict:
    """perf_analyzer's ``--input-data`` JSON: one entry per request, tensors without the batch axis."""
    entries = []
    for request in requests.requests:
        entry: dict[str, dict[str, Any]] = {}
        for name, array in request.items():
            tensor = array[0] if requests.batched else array
            if array.dtype == object or array.dtype.kind in ("U", "S"):
                content = [_text(name, v) for v in np.asarray(tensor).reshape(-1)]
                entry[name] = {"content": content, "shape": list(tensor.shape) or [1]}
            else:
                raw = np.ascontiguousarray(tensor).tobytes()
                entry[name] = {"b64": base64.b64encode(raw).decode(), "shape": list(tensor.shape) or [1]}
        entries.append(entry)
    return {"data": entries}


def _text(name: str, value: Any) -> str:
    """A BYTES value as perf_analyzer's JSON input data carries it: text (its ``b64`` form is a whole tensor's raw
    bytes, not one string's)."""
    if not isinstance(value, bytes):
        return str(value)
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise TritongenError(
            f"input '{one_line(name)[:80]}' holds binary bytes (an encoded image, say), which perf_analyzer's JSON "
            "input data carries only as text",
            "measure it with the built-in engine (drop --engine perf_analyzer)",
        ) from None


def shape_args_from_requests(requests: RequestSet) -> list[str]:
    """``--shape name:d1,d2`` for every input (perf_analyzer needs it for dynamic dims; harmless otherwise)."""
    first = requests.requests[0]
    args = []
    for name, array in first.items():
        shape = array.shape[1:] if requests.batched else array.shape
        args += ["--shape", f"{name}:{','.join(str(int(d)) for d in shape) or '1'}"]
    return args


def _uniform_shapes(requests: RequestSet) -> bool:
    shapes = {tuple((n, a.shape) for n, a in r.items()) for r in requests.requests}
    return len(shapes) == 1


def command_from_spec(
    install: PerfAnalyzerInstall,
    spec: PerfSpec,
    mode: str,
    load: float,
    data_path: Path,
    csv_path: Path,
    requests: RequestSet,
) -> list[str]:
    window_ms = max(100, int(spec.window_s * 1000))
    if mode == "request_rate":
        # perf_analyzer judges stability on the window's request count too: give each window >= 100 requests.
        window_ms = max(window_ms, int(100_000 / load))
    command = [
        str(install.binary),
        "-m",
        spec.model,
        "-u",
        spec.resolved_url(),
        "-i",
        spec.protocol,
        "--input-data",
        str(data_path),
        "--measurement-interval",
        str(window_ms),
        "--stability-percentage",
        f"{spec.stability_pct:g}",
        "--max-trials",
        str(spec.max_windows),
        "-f",
        str(csv_path),
        "--verbose-csv",
    ]
    if requests.batched:
        command += ["-b", "1"]
    if _uniform_shapes(requests):
        command += shape_args_from_requests(requests)
    if requests.sequence_length:  # a stateful model: sequences of this length, one request in flight in each
        command += ["--sequence-length", str(requests.sequence_length), "--sequence-length-variation", "0"]
        command += ["--serial-sequences"]
    if mode == "concurrency":
        command += ["--concurrency-range", f"{int(load)}:{int(load)}"]
    else:
        command += ["--request-rate-range", f"{load:g}:{load:g}", "--request-distribution", spec.arrival]
    return command + list(spec.perf_analyzer_args)


def point_from_csv(text: str, mode: str, load: float, measured_s: float) -> PerfPoint:
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise TritongenError("perf_analyzer wrote an empty CSV", "run it again with --debug to see its output")
    row = rows[-1]

    def us(key: str) -> float:
        value = row.get(key, "")
        return float(value) if value not in ("", None) else 0.0

    throughput = float(row["Inferences/Second"])
    latency = LatencySummary(
        mean_ms=us("Avg latency") / 1000,
        p50_ms=us("p50 latency") / 1000,
        p90_ms=us("p90 latency") / 1000,
        p95_ms=us("p95 latency") / 1000,
        p99_ms=us("p99 latency") / 1000,
        max_ms=None,
    )
    requests = int(round(throughput * measured_s))
    server = ServerBreakdown(
        requests=requests,
        executions=0,
        queue_us=us("Server Queue"),
        compute_input_us=us("Server Compute Input"),
        compute_infer_us=us("Server Compute Infer"),
        compute_output_us=us("Server Compute Output"),
    )
    return PerfPoint(
        mode=mode,
        load=load,
        engine="perf_analyzer",
        throughput_rps=throughput,
        latency=latency,
        requests=requests,
        errors={},
        measured_s=measured_s,
        windows=STABLE_WINDOWS,
        stable=True,
        server=server,
        send_rate_rps=throughput if mode == "request_rate" else None,
    )


def points_from_perf_analyzer(
    spec: PerfSpec,
    requests: RequestSet,
    progress: Progress | None = None,
    on_point: Callable[[PerfPoint], None] | None = None,
    started_s: float | None = None,
) -> list[PerfPoint]:
    """Run perf_analyzer once per load level of ``spec`` and parse each CSV. ``started_s``: the
    ``time.monotonic()`` reading the run began at, which ``--max-time-s`` counts from (default: now)."""
    from .loadgen import time_up_error

    progress = progress or (lambda message: None)
    install = find_perf_analyzer()
    meter = server_cpu_meter_at(spec.resolved_url())
    points = []
    deadline_s = None if spec.max_time_s is None else (started_s or time.monotonic()) + spec.max_time_s
    with tempfile.TemporaryDirectory(prefix="tritongen-pa-") as tmp:
        data_path = Path(tmp) / "input_data.json"
        data_path.write_text(json.dumps(input_data_from_requests(requests)))
        for i, (mode, load) in enumerate(spec.levels):
            label = f"{mode.replace('_', ' ')} {load:g}" + (" req/s" if mode == "request_rate" else "")
            csv_path = Path(tmp) / f"{mode}-{load:g}.csv"
            command = command_from_spec(install, spec, mode, load, data_path, csv_path, requests)
            limit_s = 60 + spec.max_windows * spec.window_s * 3 + spec.timeout_s
            left_s = None if deadline_s is None else deadline_s - time.monotonic()
            if left_s is not None and left_s <= limit_s:  # --max-time-s: perf_analyzer is stopped when it ends
                limit_s = max(left_s, 0.0)
                if limit_s < spec.window_s:
                    raise time_up_error(spec, label, None, len(spec.levels) - i - 1)
            progress(f"  perf_analyzer {mode.replace('_', ' ')} {load:g} ...")
            before = _costs(spec, meter)
            try:
                done, output = _run(command, install, limit_s, mode, load)
            except TritongenError:
                if left_s is not None and left_s <= limit_s + 1:
                    raise time_up_error(spec, label, None, len(spec.levels) - i - 1) from None
                raise
            refused = _usage_error(done.returncode, output)
            if refused:  # an option it does not take: its own words, at once (not the retry, not the usage text)
                raise TritongenError(
                    f"perf_analyzer refused its options: {refused}",
                    "fix --perf-analyzer-args (perf_analyzer --help lists the options it takes)",
                )
            if done.returncode != 0 and "Failed to obtain stable measurement" in output and not csv_path.is_file():
                # Noisy machine: measure 3 windows whatever they vary by, and report the point as not stable.
                widened = list(command)
                widened[widened.index("--stability-percentage") + 1] = "1000"
                if deadline_s is not None:  # the second run gets what --max-time-s leaves of the first's time
                    left_s = deadline_s - time.monotonic()
                    if left_s < spec.window_s:
                        raise time_up_error(spec, label, None, len(spec.levels) - i - 1)
                    limit_s = min(limit_s, left_s)
                progress(
                    f"  perf_analyzer found no stable measurement within {spec.max_windows} windows; "
                    "measuring 3 windows and marking the point not stable"
                )
                try:
                    done, output = _run(widened, install, limit_s, mode, load)
                except TritongenError:
                    if deadline_s is not None and deadline_s - time.monotonic() < 1:
                        raise time_up_error(spec, label, None, len(spec.levels) - i - 1) from None
                    raise
                output += "\nFailed to obtain stable measurement (first attempt)"
            if done.returncode != 0 or not csv_path.is_file():
                last = [line for line in output.splitlines() if line.strip()][-8:]
                raise TritongenError(
                    f"perf_analyzer failed at {mode.replace('_', ' ')} {load:g} (exit code {done.returncode})",
                    "see its output below; check the model name, the URL and that the server is up",
                    details="\n".join(last),
                )
            stable = "Failed to obtain stable measurement" not in output
            point = point_from_csv(csv_path.read_text(), mode, load, spec.duration_s)
            point = _with_costs(replace(point, stable=stable), before, _costs(spec, meter))
            progress(
                f"  perf_analyzer {mode.replace('_', ' ')} {load:g}: "
                f"{point.throughput_rps:.1f} req/s  p99 {point.latency.p99_ms:.2f} ms"
            )
            points.append(point)
            if on_point:
                on_point(point)
    return points


@dataclass(frozen=True)
class _Costs:
    """What a perf_analyzer run costs, read before and after it: the server's answers (statistics API), the
    server's CPU (a server on this machine) and the CPU of this process's reaped children (perf_analyzer)."""

    at_s: float
    answered: int | None
    executions: int | None
    server_reading: ServerReading | None
    children_cpu_s: float


def _costs(spec: PerfSpec, meter: ServerCpuMeter | None) -> _Costs:
    from ..client import model_statistics

    answered: int | None
    executions: int | None
    try:
        stats = model_statistics(spec.resolved_url(), spec.model, spec.protocol, 10)
        answered, executions = int(stats["success_count"]), int(stats["execution_count"])
    except (TritongenError, KeyError, TypeError, ValueError):
        answered = executions = None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return _Costs(
        at_s=time.perf_counter(),
        answered=answered,
        executions=executions,
        server_reading=meter.read() if meter is not None else None,
        children_cpu_s=usage.ru_utime + usage.ru_stime,
    )


def _with_costs(point: PerfPoint, before: _Costs, after: _Costs) -> PerfPoint:
    """``point`` with the server's CPU (cores, per request) and perf_analyzer's CPU per request over its whole run,
    start-up and the windows it threw away included (it reports only its last windows), per request the server
    answered in that time; and the server's request and execution counts over the run (its CSV has no batch
    size: requests / executions is the server's average batch)."""
    if before.answered is None or after.answered is None or after.answered <= before.answered:
        return point
    answered = after.answered - before.answered
    server = server_cpu_from_used(
        server_cpu_between(before.server_reading, after.server_reading), after.at_s - before.at_s, answered
    )
    executions = (after.executions or 0) - (before.executions or 0)
    return replace(
        point,
        server=replace(point.server, requests=answered, executions=max(executions, 0)),
        client_cpu_us_per_request=(after.children_cpu_s - before.children_cpu_s) / answered * 1e6,
        server_cpu_cores=server.cores if server else None,
        server_cpu_us_per_request=server.us_per_request if server else None,
        server_wakeups_per_request=server.wakeups_per_request if server else None,
    )


def _usage_error(returncode: int, output: str) -> str:
    """perf_analyzer's own complaint where it exited on its command line (the lines before its usage text, e.g.
    "unrecognized option '--bogus-flag'"), one line; "" where it did not."""
    lines = output.splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith("Usage:")), None)
    if returncode == 0 or at is None:
        return ""
    said = [line.strip() for line in lines[:at] if line.strip()][-3:] or ["it printed its usage text"]
    return "; ".join(line.split("perf_analyzer: ", 1)[-1] for line in said)[:300]


def _run(command: list[str], install: PerfAnalyzerInstall, limit_s: float, mode: str, load: float):
    try:
        done = subprocess.run(command, env=install.env, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        raise TritongenError(
            f"perf_analyzer did not finish {mode.replace('_', ' ')} {load:g} within {limit_s:.0f} s",
            "check that the server is up and answering; lower --max-windows",
        ) from None
    return done, (done.stdout + done.stderr).strip()
