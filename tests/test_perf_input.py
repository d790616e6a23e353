"""What ``tritongen perf`` takes and refuses on its command line, and what it says: one error line for bad input,
no silently ignored option, a warning where it reads nothing, and SIGTERM taken as Ctrl-C."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from tritongen.errors import TritongenError
from tritongen.perf.results import LatencySummary, PerfPoint, PerfRun, json_from_run
from tritongen.perf.spec import MAX_REQUEST_RATE, PerfSpec

NO_SERVER = ["--url", "127.0.0.1:9"]  # refused before any load is sent: nothing needs to listen there


def _one_error_line(code: int, out: str, err: str) -> str:
    assert code != 0 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        # -1 and 0 are refused alike, and the message says so (it said "pass 0 or more" for -1, then refused 0)
        (["--duration-s", "-1"], "error: --duration-s -1 is not above 0: give a time above 0 seconds"),
        (["--duration-s", "0"], "error: --duration-s 0 is not above 0: give a time above 0 seconds"),
        (["--timeout-s", "-1"], "error: --timeout-s -1 is not above 0: give a timeout above 0 seconds, e.g. 30"),
        (["--max-time-s", "0"], "error: --max-time-s 0 is not above 0: give the most seconds the whole run may"),
        (["--max-time-s", "-2"], "error: --max-time-s -2 is not above 0: give the most seconds the whole run may"),
        # a concurrency is a whole number
        (["--concurrency", "1.5"], "error: --concurrency '1.5' is not a comma-separated list of whole numbers: "),
        (["--request-rate", "x"], "error: --request-rate 'x' is not a comma-separated list of numbers: "),
        # an empty list ran the default levels
        (["--concurrency", ""], "error: --concurrency '' names no load level: write it like --concurrency 1,2,4,8"),
        (["--request-rate", ","], "error: --request-rate ',' names no load level: write it like --request-rate 50"),
        # ran levels 1 and 4, the slip unsaid (while "4,4,1" was refused)
        (["--concurrency", "1,,4"], "error: --concurrency '1,,4' has an empty item: write it like"),
        # a repeated level was measured twice, as two rows
        (["--concurrency", "1,4,1"], "error: concurrency 1 is given more than once (each level is measured once)"),
        (["--request-rate", "50,50.0"], "error: request rate 50 is given more than once"),
        # an absurd rate ran windows of "0.0 req/s mean nan ms"
        (["--request-rate", "1e12"], f"error: request rate 1e+12 req/s is over the {MAX_REQUEST_RATE:.0f} req/s"),
        # recorded in results.json, which its readers then refused (a run written that nothing could compare)
        (["--label", "a\u202eb"], "error: --label 'a\\u202eb' holds the character U+202E, which would change how"),
        (["--repo", "/tmp/x\ny"], "error: --repo '/tmp/x\\ny' holds the character U+000A"),
        # a million connections were opened (the descriptors ran out)
        (["--concurrency", "1,1000000"], "error: concurrency 1000000 is over the 4096 requests in flight one client"),
        # an unclosed quote was shlex's traceback
        (
            ["--engine", "perf_analyzer", "--perf-analyzer-args", '"unclosed'],
            "error: --perf-analyzer-args '\"unclosed' cannot be split into options (no closing quotation): close",
        ),
    ],
)
def test_bad_perf_options_are_one_line_that_states_the_accepted_range(capsys, tmp_path, args, line):
    code, out, err = run_cli(["perf", "m", *NO_SERVER, "--report", str(tmp_path / "r"), *args], capsys)
    assert _one_error_line(code, out, err).startswith(line)
    assert not (tmp_path / "r").exists()


def test_the_spec_refuses_the_same_values_from_python():
    with pytest.raises(TritongenError, match="--duration-s 0 is not above 0"):
        PerfSpec(model="m", duration_s=0)
    with pytest.raises(TritongenError, match="names no load level"):
        PerfSpec(model="m", concurrency="")
    with pytest.raises(TritongenError, match="given more than once"):
        PerfSpec(model="m", concurrency=(2, 2))
    with pytest.raises(TritongenError, match="cannot be split into options"):
        PerfSpec(model="m", engine="perf_analyzer", perf_analyzer_args="'a")
    assert PerfSpec(model="m", request_rates=(MAX_REQUEST_RATE,)).request_rates == (MAX_REQUEST_RATE,)


# ------------------------------------------------------------------------------------------ --compare


def _run(label: str) -> PerfRun:
    point = PerfPoint(
        mode="concurrency",
        load=1.0,
        engine="builtin",
        throughput_rps=100.0,
        latency=LatencySummary(1.0, 1.0, 1.0, 1.0, 1.0, 1.0),
        requests=300,
        errors={},
        measured_s=3.0,
        windows=3,
    )
    return PerfRun(model="m", url="127.0.0.1:8001", protocol="grpc", engine="builtin", points=(point,), label=label)


def _two_runs(tmp_path):
    for name in ("pX", "pa1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json_from_run(_run(name)))
        (tmp_path / name / "report.html").write_text(f"{name}'s own report")
    return tmp_path / "pX", tmp_path / "pa1"


def test_compare_refuses_measurement_options_naming_them(capsys, tmp_path):
    a, b = _two_runs(tmp_path)
    argv = ["perf", "--compare", str(a), str(b), "--concurrency", "64", "--engine", "perf_analyzer", "--label", "X"]
    code, out, err = run_cli([*argv, "--report", str(tmp_path / "c")], capsys)
    assert _one_error_line(code, out, err) == (
        "error: --compare reads finished runs: --concurrency, --engine, --label would measure nothing there: drop "
        "them, or run perf without --compare to measure"
    )
    assert out == "" and not (tmp_path / "c").exists()
    code, out, err = run_cli(["perf", "--compare", str(a), str(b), "--report", str(tmp_path / "c")], capsys)
    assert code == 0 and (tmp_path / "c" / "report.html").is_file()


@pytest.mark.parametrize("given", ["folder", "results.json"])
def test_compare_refuses_to_write_into_a_compared_runs_folder(capsys, tmp_path, given):
    a, b = _two_runs(tmp_path)
    source = a if given == "folder" else a / "results.json"
    code, out, err = run_cli(["perf", "--compare", str(source), str(b), "--report", str(a)], capsys)
    line = _one_error_line(code, out, err)
    assert line.startswith(f"error: --report {a} is the folder of the compared run {source}: ")
    assert line.endswith(": write the comparison to a folder of its own, e.g. --report compare/")
    assert (a / "report.html").read_text() == "pX's own report"  # nothing half-written
    import tritongen

    with pytest.raises(TritongenError, match="is the folder of the compared run"):
        tritongen.report([source, b], a)  # the API's comparison too
    with pytest.raises(TritongenError, match="is the folder of the compared run"):
        tritongen.compare([source, b], a, force=True)
    assert (a / "report.html").read_text() == "pX's own report"
    # one run's report may replace its own (its results.json still holds that run alone)
    assert tritongen.compare([source], a, force=True).report_path == a / "report.html"
    assert (a / "report.html").read_text() != "pX's own report"


# ------------------------------------------------------------------------------------------ a faked engine


def _fake_server(monkeypatch, engine):
    """perf_from_spec with everything that would reach a server replaced: ``engine(spec, on_point)`` measures."""
    import importlib

    import tritongen.client
    from tritongen.perf.inputs import request_set_from_arrays

    inputs = importlib.import_module("tritongen.perf.inputs")  # tritongen.perf, the attribute, is the API's function
    run = importlib.import_module("tritongen.perf.run")
    monkeypatch.setattr(tritongen.client, "model_metadata", lambda *a, **k: {"versions": ["1"]})
    requests = request_set_from_arrays({"X": np.zeros((1, 4), np.float32)}, True, "test")
    monkeypatch.setattr(inputs, "request_set_for_model", lambda *a, **k: requests)
    monkeypatch.setattr(run, "_sequence_length", lambda spec, url, timeout_s: 0)
    monkeypatch.setattr(run, "server_cpus_at", lambda url: None)
    monkeypatch.setattr(run, "points_from_engine", lambda spec, req, progress, on_point, *_: engine(spec, on_point))


def test_a_metrics_url_where_nothing_answers_is_warned_about_once(monkeypatch, capsys, tmp_path):
    from tests.conftest import free_ports

    _fake_server(monkeypatch, lambda spec, on_point: on_point(_run("").points[0]))
    url = f"127.0.0.1:{free_ports(1)[0]}"
    code, out, err = run_cli(["perf", "m", *NO_SERVER, "--concurrency", "1", "--metrics-url", url], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "metrics" in line]
    assert warnings == [
        f"warning: no metrics were read from --metrics-url {url} (nothing answered at http://{url}/metrics, or it "
        "served none of Triton's gauges); the run has no server metrics"
    ]
    code, out, err = run_cli(["perf", "m", *NO_SERVER, "--concurrency", "1"], capsys)  # no URL asked for: no warning
    assert code == 0 and "warning" not in err


def test_sigterm_during_perf_keeps_the_levels_measured_as_ctrl_c_does(monkeypatch, capsys, tmp_path):
    import os
    import signal
    import time

    from tritongen.perf.results import run_from_json

    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        pytest.skip("SIGTERM already has a handler here: the command leaves it alone")

    def engine(spec, on_point):
        # Without a handler SIGTERM would end pytest itself: fail instead.
        assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL, "perf runs with SIGTERM's default (exit at once)"
        on_point(_run("").points[0])  # the first level measured
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGTERM did not interrupt perf")

    _fake_server(monkeypatch, engine)
    started = time.monotonic()
    code, out, err = run_cli(["perf", "m", *NO_SERVER, "--concurrency", "1,2,4", "--report", str(tmp_path)], capsys)
    assert time.monotonic() - started < 4.5
    assert err.strip().splitlines()[-1] == (
        "error: the run is partial: terminated (SIGTERM): the levels measured before it stopped are reported in "
        f"{tmp_path}"
    )
    assert code == 143 and "Traceback" not in err  # SIGTERM's exit code, as before the first level ends
    run = run_from_json(tmp_path / "results.json")
    assert run.partial and run.partial_reason == "terminated (SIGTERM)" and len(run.points) == 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # given back after the command


def test_ctrl_c_after_a_level_reports_it_and_exits_130_as_before_one(monkeypatch, capsys, tmp_path):
    """Ctrl-C during the first level exited 130, during a later one 1 (README: "exit 130"): the exit code depended on
    when the key was pressed."""

    def engine(spec, on_point):
        on_point(_run("").points[0])
        raise KeyboardInterrupt

    _fake_server(monkeypatch, engine)
    code, out, err = run_cli(["perf", "m", *NO_SERVER, "--concurrency", "1,2", "--report", str(tmp_path / "r")], capsys)
    assert code == 130 and err.strip().splitlines()[-1].startswith("error: the run is partial: interrupted: ")
    assert (tmp_path / "r" / "results.json").is_file()  # the level measured is kept


def test_ctrl_c_before_the_first_level_ends_is_an_abort_not_a_servers_fault(monkeypatch, capsys, tmp_path):
    """It said "no load level could be measured (interrupted): check that the server is up" and exited 1; build,
    serve and tune exit 130 on Ctrl-C, with "aborted"."""

    def engine(spec, on_point):
        raise KeyboardInterrupt

    _fake_server(monkeypatch, engine)
    code, out, err = run_cli(["perf", "m", *NO_SERVER, "--concurrency", "1,2", "--report", str(tmp_path / "r")], capsys)
    assert code == 130 and "check that the server is up" not in err and "aborted" in err, (code, err)
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------ time and overload


class _NeverAnswers:
    """A sender for a server that takes every request and answers none (a model far slower than the offer)."""

    sends = 0
    resent = 0  # what the level reads of every sender

    async def send(self, index, version="", worker=None):
        import asyncio

        type(self).sends += 1
        await asyncio.sleep(3600)

    async def close(self):
        pass


def test_an_open_loop_offering_more_than_is_served_ends_on_time_counting_what_it_never_sent():
    """20,000 req/s at a server that answers nothing: the windows ended, then the level waited the whole
    --timeout-s (and more) for requests outstanding; the progress lines read "mean nan ms"."""
    import asyncio
    import time

    from tritongen.perf.loadgen import _level

    async def no_stats():
        return None

    lines: list[str] = []
    spoiled: list[bool] = []
    spec = PerfSpec(model="m", url="10.0.0.1:8001", request_rates=(20000,), duration_s=0.3, warmup_s=0.1)
    spec = __import__("dataclasses").replace(spec, max_windows=3, max_in_flight=50, timeout_s=30)
    started = time.monotonic()
    point = asyncio.run(
        _level(
            _NeverAnswers(), "request_rate", 20000, spec, no_stats, lines.append, None, None, lambda: spoiled.append(1)
        )
    )
    took_s = time.monotonic() - started
    # 0.1 s warm-up, 3 windows of 0.1 s, 1 s for the requests outstanding: 1.4 s; the timeout alone was 35 s
    assert took_s < 6.0, f"the level took {took_s:.1f} s"
    assert spoiled, "the requests abandoned at the end were not reported (the sender is then replaced)"
    assert point.throughput_rps == 0 and point.errors["client_overloaded"] > 0 and point.windows == 3
    assert point.requests >= point.errors["client_overloaded"]
    assert len(lines) == 3 and all("no answers" in line and "nan" not in line for line in lines), lines
    assert "never sent" in lines[-1]


def test_max_time_is_a_hard_end_for_the_whole_run(monkeypatch):
    """Levels whose requests take longer than the run may: the builtin engine waited for each of them past the
    cap (61 s for a 3 s --max-time-s). It stops on time now, keeps what it measured, and says what it cut."""
    import importlib
    import time

    import tritongen.client

    loadgen = importlib.import_module("tritongen.perf.loadgen")
    monkeypatch.setattr(loadgen, "RawGrpcSender", lambda *a, **k: _NeverAnswers())
    monkeypatch.setattr(loadgen, "server_cpu_meter_at", lambda url: None)
    monkeypatch.setattr(tritongen.client, "model_metadata", lambda *a, **k: {})
    monkeypatch.setattr(tritongen.client, "model_statistics", lambda *a, **k: {})
    spec = PerfSpec(model="m", url="127.0.0.1:9", concurrency=(1, 2, 4), duration_s=0.6, warmup_s=0.2, max_time_s=3)
    assert spec.time_budget_s()[1] <= 3
    measured: list[PerfPoint] = []
    started = time.monotonic()
    with pytest.raises(TritongenError) as err:
        loadgen.points_from_builtin(spec, None, lambda m: None, measured.append)
    took_s = time.monotonic() - started
    assert took_s < 3 + 2.0, f"the run took {took_s:.1f} s"  # each request would hold its level for an hour
    assert err.value.problem.startswith("--max-time-s 3 ran out: concurrency ")
    assert err.value.fix.startswith("raise --max-time-s")
    assert len(measured) >= 1 and all(p.windows >= 1 for p in measured)


def _hanging_http_server():
    """A listening socket on loopback whose connections are read and never answered (a thread accepts them); the
    port and a function that stops it."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=serve, daemon=True).start()

    def stop() -> None:
        listener.close()
        for conn in held:
            conn.close()

    return listener.getsockname()[1], stop


def test_the_http_closed_loop_ends_on_time_and_its_worker_threads_end_with_it(monkeypatch):
    """The HTTP closed loop's workers are threads blocked reading answers that never come: --max-time-s still ends
    the run on time, and closing the sender wakes every one of them (none is left reading after the run)."""
    import importlib
    import threading
    import time

    import tritongen.client

    loadgen = importlib.import_module("tritongen.perf.loadgen")
    monkeypatch.setattr(loadgen, "server_cpu_meter_at", lambda url: None)
    monkeypatch.setattr(tritongen.client, "model_metadata", lambda *a, **k: {})
    monkeypatch.setattr(tritongen.client, "model_statistics", lambda *a, **k: {})
    port, stop = _hanging_http_server()
    requests = __import__("tritongen.perf.inputs", fromlist=["RequestSet"]).RequestSet(
        ({"X": np.zeros((1, 4), np.float32)},), batched=True, source="test"
    )
    spec = PerfSpec(
        model="m",
        url=f"127.0.0.1:{port}",
        protocol="http",
        concurrency=(4, 8),
        duration_s=0.6,
        warmup_s=0.2,
        max_time_s=3,
    )
    try:
        started = time.monotonic()
        with pytest.raises(TritongenError) as err:
            loadgen.points_from_builtin(spec, requests, lambda m: None)
        took_s = time.monotonic() - started
        assert took_s < 3 + 2.0, f"the run took {took_s:.1f} s"  # each request would wait the whole --timeout-s
        assert err.value.problem.startswith("--max-time-s 3 ran out: concurrency ")
        deadline = time.monotonic() + 5
        while any(t.name.startswith("tritongen-http-worker") for t in threading.enumerate()):
            assert time.monotonic() < deadline, "worker threads still reading after the run"
            time.sleep(0.05)
    finally:
        stop()


def test_ctrl_c_mid_level_waits_for_no_request_outstanding():
    """Ctrl-C while requests were outstanding waited up to --timeout-s (+5 s) for them before perf could exit 130."""
    import asyncio
    import time

    from tritongen.perf.inputs import RequestSet
    from tritongen.perf.loadgen import _level
    from tritongen.perf.rawhttp import RawHttpSender

    port, stop = _hanging_http_server()
    spec = PerfSpec(model="m", url=f"127.0.0.1:{port}", protocol="http", duration_s=5, warmup_s=0, timeout_s=60)

    async def no_stats():
        return None

    async def go() -> float:
        requests = RequestSet(({"X": np.zeros((1, 4), np.float32)},), True, "t")
        sender = RawHttpSender(f"127.0.0.1:{port}", "m", requests, 60.0, 4)
        level = asyncio.ensure_future(_level(sender, "concurrency", 4, spec, no_stats, lambda m: None))
        await asyncio.sleep(0.5)
        level.cancel()  # what asyncio.run does with the run on Ctrl-C
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await level
        took_s = time.monotonic() - started
        await sender.close()
        return took_s

    try:
        took_s = asyncio.run(asyncio.wait_for(go(), 120))
    finally:
        stop()
    assert took_s < 3.0, f"the level took {took_s:.1f} s to end after Ctrl-C"


def test_a_system_that_refuses_worker_threads_is_one_error(monkeypatch, caplog):
    """4096 requests in flight over HTTP are 4096 threads: a container's process limit refusing one ended perf
    with a traceback (RuntimeError: can't start new thread)."""
    import asyncio
    import gc
    import threading

    from tritongen.perf.inputs import RequestSet
    from tritongen.perf.loadgen import _level
    from tritongen.perf.rawhttp import RawHttpSender

    def refused(self):
        raise RuntimeError("can't start new thread")

    async def no_stats():
        return None

    async def go():
        sender = RawHttpSender(
            "127.0.0.1:9", "m", RequestSet(({"X": np.zeros((1, 4), np.float32)},), True, "t"), 5.0, 4
        )
        try:
            return await _level(sender, "concurrency", 4, spec, no_stats, lambda m: None)
        finally:
            await sender.close()

    spec = PerfSpec(model="m", url="127.0.0.1:9", protocol="http", duration_s=0.3, warmup_s=0)
    monkeypatch.setattr(threading.Thread, "start", refused)
    with caplog.at_level("ERROR", logger="asyncio"), pytest.raises(TritongenError) as err:
        asyncio.run(go())
    problem, fix = err.value.problem, err.value.fix
    del err  # its traceback holds the level's tasks
    gc.collect()  # each worker's failure but the first was "never retrieved": asyncio logged its traceback
    assert [r.getMessage()[:60] for r in caplog.records if r.name == "asyncio"] == []
    assert problem == "the system refused a thread for each of the 4 requests in flight (can't start new thread)"
    assert "--protocol grpc" in fix


# ------------------------------------------------------------------------------------------ perf_analyzer


def _fake_perf_analyzer(monkeypatch, tmp_path, body: str):
    """perf_analyzer replaced by a shell script of ``body`` (each run appends "run" to the returned file first),
    with no server CPU meter; returns (the perf_analyzer module, the calls file)."""
    import importlib
    import os
    import stat

    pa = importlib.import_module("tritongen.perf.perf_analyzer")
    calls = tmp_path / "calls"
    script = tmp_path / "perf_analyzer"
    script.write_text(f"#!/bin/sh\necho run >> {calls}\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(pa, "find_perf_analyzer", lambda: pa.PerfAnalyzerInstall(script, dict(os.environ)))
    monkeypatch.setattr(pa, "server_cpu_meter_at", lambda url: None)
    return pa, calls


def test_perf_analyzer_refusing_an_option_stops_at_once_with_its_own_words(monkeypatch, tmp_path):
    """--perf-analyzer-args '--bogus-flag': its usage text holds "stable measurement", so perf took the exit for
    an unstable level, ran it a second time, then showed the usage text; the line naming the option was lost."""

    import tritongen.client
    from tritongen.perf.inputs import request_set_from_arrays

    pa, calls = _fake_perf_analyzer(
        monkeypatch,
        tmp_path,
        "echo \"$0: unrecognized option '--bogus-flag'\" >&2\n"
        'echo "Usage: $0 [options]" >&2\n'
        "echo '  --stability-percentage (-s) <deviation threshold for stable measurement (in percentage)>' >&2\n"
        "exit 99\n",
    )

    def no_server(*a, **k):
        raise TritongenError("no server", "start one")

    monkeypatch.setattr(tritongen.client, "model_statistics", no_server)
    spec = PerfSpec(
        model="m", url="127.0.0.1:9", engine="perf_analyzer", concurrency=(1, 2), perf_analyzer_args="--bogus-flag"
    )
    requests = request_set_from_arrays({"X": np.zeros((1, 4), np.float32)}, True, "test")
    with pytest.raises(TritongenError) as err:
        pa.points_from_perf_analyzer(spec, requests, lambda m: None)
    assert err.value.problem == "perf_analyzer refused its options: unrecognized option '--bogus-flag'"
    assert err.value.fix.startswith("fix --perf-analyzer-args")
    assert "Usage" not in str(err.value) and calls.read_text() == "run\n"  # once, not again with a wider band


def test_perf_analyzers_second_try_at_an_unstable_level_gets_what_max_time_leaves(monkeypatch, tmp_path):
    """A level perf_analyzer found no stable measurement for is measured again with a wider band: that second run
    was given the whole level's time limit again, past --max-time-s."""
    import time

    import tritongen.client
    from tritongen.perf.inputs import request_set_from_arrays

    pa, calls = _fake_perf_analyzer(  # unstable after 1.5 s; the second try (a wider band) would take a minute
        monkeypatch,
        tmp_path,
        'case "$*" in *"--stability-percentage 1000"*) exec sleep 60;; esac\n'
        "sleep 1.5\n"
        "echo 'Failed to obtain stable measurement within 10 measurement windows' >&2\n"
        "exit 1\n",
    )
    monkeypatch.setattr(tritongen.client, "model_statistics", lambda *a, **k: {})
    spec = PerfSpec(
        model="m", url="127.0.0.1:9", engine="perf_analyzer", concurrency=(1,), duration_s=0.5, warmup_s=0.1,
        max_time_s=4,
    )  # fmt: skip
    requests = request_set_from_arrays({"X": np.zeros((1, 4), np.float32)}, True, "test")
    started = time.monotonic()
    with pytest.raises(TritongenError) as err:
        pa.points_from_perf_analyzer(spec, requests, lambda m: None)
    took_s = time.monotonic() - started
    assert calls.read_text() == "run\nrun\n" and took_s < 4 + 2.0, took_s  # the bug: 1.5 s + a fresh 4 s
    assert err.value.problem.startswith("--max-time-s 4 ran out")


# ------------------------------------------------------------------------------------------ seed


def test_each_run_draws_its_own_poisson_seed_and_records_it(monkeypatch, capsys, tmp_path):
    """A fixed seed biased every short Poisson run the same way (a 200/s level read 177.6 twice)."""
    from tritongen.perf.results import run_from_json

    seeds = {PerfSpec(model="m", request_rates=(200,), arrival="poisson").seed for _ in range(5)}
    assert len(seeds) == 5
    assert PerfSpec(model="m", request_rates=(200,), arrival="poisson", seed=7).seed == 7
    with pytest.raises(TritongenError, match="--seed -1 is outside"):
        PerfSpec(model="m", request_rates=(200,), arrival="poisson", seed=-1)
    _fake_server(monkeypatch, lambda spec, on_point: on_point(_run("").points[0]))
    recorded = []
    for extra in ([], [], ["--seed", "7"]):
        out_dir = tmp_path / str(len(recorded))
        argv = ["perf", "m", *NO_SERVER, "--request-rate", "200", "--arrival", "poisson", "--report", str(out_dir)]
        code, out, err = run_cli([*argv, *extra], capsys)
        assert code == 0, err
        recorded.append(run_from_json(out_dir / "results.json").settings["seed"])
    assert isinstance(recorded[0], int) and recorded[0] != recorded[1] and recorded[2] == 7


def test_a_huge_max_time_is_no_cap_not_an_overflow():
    """--max-time-s 1e308 with 1 s windows was an OverflowError traceback (an infinite number of windows)."""
    from tritongen.perf.spec import PerfSpec

    spec = PerfSpec(model="m", max_time_s=1e308, duration_s=1)
    assert spec.max_windows == PerfSpec(model="m", duration_s=1).max_windows


def test_the_questions_before_the_load_end_within_max_time_on_a_server_that_never_answers():
    """A server that takes the connection and says nothing: the metadata question waited --timeout-s (30 s at most),
    whatever --max-time-s said."""
    import socket
    import time

    from tritongen.perf.run import perf_from_spec

    assert PerfSpec(model="m").probe_timeout_s == 30.0
    assert PerfSpec(model="m", timeout_s=5).probe_timeout_s == 5.0
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the connection; nothing ever reads or answers it
        port = silent.getsockname()[1]
        spec = PerfSpec(
            model="m", url=f"127.0.0.1:{port}", protocol="http", timeout_s=60, concurrency=(1,), duration_s=0.5,
            warmup_s=0.2, max_time_s=2,
        )  # fmt: skip
        assert spec.probe_timeout_s == 2.0
        started = time.monotonic()
        with pytest.raises(TritongenError):
            perf_from_spec(spec)
        assert time.monotonic() - started < 20  # 2 s and the client's own set-up; the bug waited 30 s


def test_a_report_folder_holding_an_earlier_report_needs_force_and_one_holding_other_files_is_refused(tmp_path):
    """perf --report DIR replaced an earlier run's results.json (the baseline of a --compare) and wrote into a
    deploy bundle's folder, silently."""
    earlier = tmp_path / "perf-m"
    earlier.mkdir()
    (earlier / "results.json").write_text("{}")
    with pytest.raises(TritongenError) as err:
        PerfSpec(model="m", report_dir=earlier)
    assert (
        err.value.problem
        == f"the report folder {earlier} holds an earlier perf report (results.json): this run would replace it"
    )
    assert err.value.fix.startswith("pass --force to replace it")
    assert PerfSpec(model="m", report_dir=earlier, force=True).report_dir == earlier
    bundle = tmp_path / "k8s"
    bundle.mkdir()
    for name in ("kustomization.yaml", "README.md", "base", "overlays"):
        (bundle / name).write_text("")
    with pytest.raises(TritongenError, match=r"holds other files than a perf report \(README.md, base, kustomization"):
        PerfSpec(model="m", report_dir=bundle, force=True)
    (tmp_path / "empty").mkdir()
    assert PerfSpec(model="m", report_dir=tmp_path / "empty").report_dir == tmp_path / "empty"


def test_perf_force_on_the_command_line_reaches_the_spec(capsys, tmp_path):
    earlier = tmp_path / "perf-m"
    earlier.mkdir()
    (earlier / "results.json").write_text("{}")
    code, _, err = run_cli(["perf", "m", "--url", "127.0.0.1:9", "--report", str(earlier)], capsys)
    assert code == 1 and "holds an earlier perf report" in err and "pass --force" in err
    code, _, err = run_cli(["perf", "m", "--url", "127.0.0.1:9", "--report", str(earlier), "--force"], capsys)
    assert code == 1 and "earlier perf report" not in err  # past the folder: no server answers on port 9


def test_max_time_counts_the_questions_before_the_load_as_part_of_the_run(tmp_path):
    """A server that answers each question after 1.8 s: with --max-time-s 2 each question got up to 2 s of its own
    and the load's clock started after them (the first request went out at 9 s, the run took 11 s)."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tritongen.perf.run import perf_from_spec

    tensor = '{"name": "x", "datatype": "FP32", "shape": [-1, 4]}'
    metadata = f'{{"name": "m", "versions": ["1"], "platform": "python", "inputs": [{tensor}], "outputs": [{tensor}]}}'
    config = '{"name": "m", "max_batch_size": 8, "input": [], "output": []}'

    class Slow(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802 - http.server's name
            time.sleep(1.8)
            body = (config if self.path.endswith("/config") else metadata).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            released.wait(30)  # inference never answers within the run

        def log_message(self, *args):
            pass

    data = tmp_path / "x.npz"
    np.savez(data, x=np.zeros((1, 4), np.float32))

    class Quiet(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass  # the client hung up on the unanswered request: printed later, it landed in another test's stderr

    released = threading.Event()
    server = Quiet(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = PerfSpec(
            model="m", url=f"127.0.0.1:{server.server_address[1]}", protocol="http", timeout_s=60, concurrency=(1,),
            duration_s=0.5, warmup_s=0.2, max_time_s=3, input_data=data,
        )  # fmt: skip
        started = time.monotonic()
        with pytest.raises(TritongenError):
            perf_from_spec(spec)
        took_s = time.monotonic() - started
        assert took_s < 3 + 5, took_s  # the bug: 11.4 s (1.8 s per question, then 3 s of load counted from there)
    finally:
        released.set()
        server.shutdown()
        server.server_close()


def test_force_replaces_an_earlier_report_after_the_run_and_a_comparison_too(monkeypatch, tmp_path, capsys):
    """--force got past the check before the run, then the report written after it was refused: the run's figures
    were lost, and the fix asked for the flag already given. A second comparison into one folder could not be
    written at all (--force was refused as a measurement option)."""
    import importlib

    import tritongen

    perf_package = importlib.import_module("tritongen.perf")  # tritongen.perf is the API's function
    monkeypatch.setattr(perf_package, "perf_from_spec", lambda spec, progress=None: _run(""))
    folder = tmp_path / "perf-m"
    folder.mkdir()
    (folder / "results.json").write_text("{}")
    tritongen.perf("m", report_dir=folder, force=True)
    assert json.loads((folder / "results.json").read_text())["model"] == _run("").model
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json_from_run(_run("")))
    b.write_text(json_from_run(_run("")))
    compare = ["perf", "--compare", str(a), str(b), "--report", str(tmp_path / "cmp")]
    assert run_cli(compare, capsys)[0] == 0
    code, _, err = run_cli(compare, capsys)
    assert code == 1 and "holds an earlier perf report (report.html)" in err
    assert run_cli([*compare, "--force"], capsys)[0] == 0
    assert tritongen.report([a, b], tmp_path / "cmp", force=True).is_file()


@pytest.mark.parametrize(
    "extra, words",
    [
        (
            ["--concurrency", "1", "--arrival", "poisson"],
            "error: --arrival poisson shapes the schedule of --request-rate",
        ),
        (["--concurrency", "1", "--seed", "7"], "error: --seed 7 draws --arrival poisson's schedule, and the arrival"),
        (
            ["--request-rate", "50", "--seed", "7"],
            "error: --seed 7 draws --arrival poisson's schedule, and the arrival",
        ),
        (
            ["--request-rate", "50", "--arrival", "poisson", "--seed", "7", "--engine", "perf_analyzer"],
            "error: --seed 7 draws the built-in engine's Poisson schedule; perf_analyzer draws its own",
        ),
    ],
)
def test_arrival_options_a_run_would_not_use_are_refused(capsys, extra, words):
    """They were accepted, ignored, and recorded in results.json as if they had shaped the run."""
    code, _, err = run_cli(["perf", "m", *NO_SERVER, *extra], capsys)
    assert code == 1 and err.startswith(words), err


def test_versions_the_server_names_that_are_no_int64_number_are_skipped_choosing_samples(tmp_path):
    """int() of the metadata's versions: "²" (str.isdigit() takes it) and 5000 digits were a ValueError traceback;
    versions that are no int64 number are skipped, and unversioned requests take the newest build's samples."""
    from tritongen.layout import MAX_VERSION, SAMPLES_NAME, artifact_dir
    from tritongen.perf.inputs import request_set_for_model

    for version, width in ((1, 4), (2, 6)):
        folder = artifact_dir(tmp_path / "m", version)
        folder.mkdir(parents=True)
        np.savez(folder / SAMPLES_NAME, x=np.zeros((2, width), np.float32))

    def width(versions: list) -> int:
        metadata = {"name": "m", "max_batch_size": 8, "versions": versions}
        metadata["inputs"] = [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}]
        return request_set_for_model(metadata, tmp_path).requests[0]["x"].shape[1]

    assert width(["1", "\u00b2"]) == 4 and width(["1", "9" * 5000]) == 4 and width(["1", str(MAX_VERSION + 1)]) == 4
    assert width(["\u00b2"]) == 6  # no version named: the newest build's


def test_a_load_needing_more_open_files_than_allowed_raises_the_limit_or_is_refused():
    """300 connections under ulimit -n 200: the connects failed as "connection", then a statistics client's pipe
    aborted the process (SIGABRT, a gevent traceback)."""
    import resource

    from tritongen.perf.loadgen import enough_open_files

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
        enough_open_files(556, "300 connections")  # the hard limit allows it: raised
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 556
        if hard != resource.RLIM_INFINITY:
            with pytest.raises(TritongenError) as err:
                enough_open_files(hard + 1, "many connections")
            assert err.value.problem.startswith(f"many connections need about {hard + 1} open files")
            assert err.value.fix == "raise the limit (ulimit -n), or measure a lower --concurrency"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_http_workers_share_a_cpu_the_local_server_does_not_use(monkeypatch):
    """All worker threads on the process's first CPU piled onto one of the server's (serve --cpus 0-3) while
    others stood idle (the reviewer): the first CPU outside the server's set where there is one."""
    import importlib
    import os

    loadgen = importlib.import_module("tritongen.perf.loadgen")
    placement = importlib.import_module("tritongen.perf.placement")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.setattr(placement, "server_cpus_at", lambda url: (0, 1, 2, 3))
    assert loadgen.worker_cpu_for("127.0.0.1:8000") == 4
    monkeypatch.setattr(placement, "server_cpus_at", lambda url: (0, 1, 2, 3, 4, 5))
    assert loadgen.worker_cpu_for("127.0.0.1:8000") == 0  # no CPU of its own: shared, the first
    monkeypatch.setattr(placement, "server_cpus_at", lambda url: None)  # no local server found
    assert loadgen.worker_cpu_for("10.0.0.1:8000") == 0


def test_perf_from_another_folder_reads_the_build_the_local_server_serves(monkeypatch, capsys, tmp_path):
    """`infer NAME` found the build through the local server's record; `perf NAME` against the same server said
    "no build of model 'NAME' in model_repository" (a newcomer's first perf run from another folder)."""
    import importlib

    local = importlib.import_module("tritongen.server.local")
    inputs = importlib.import_module("tritongen.perf.inputs")
    _fake_server(monkeypatch, lambda spec, on_point: on_point(_run("").points[0]))
    served = tmp_path / "served"
    (served / "m").mkdir(parents=True)
    monkeypatch.setattr(local, "local_server", lambda url: (0.0, {}, ((served, None),)))
    read_from = []
    real = inputs.request_set_for_model  # the fake's: any arguments
    monkeypatch.setattr(inputs, "request_set_for_model", lambda meta, repo, *a: read_from.append(repo) or real())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, out, err = run_cli(["perf", "m", *NO_SERVER, "--concurrency", "1"], capsys)
    assert code == 0, err
    assert read_from == [served]
    read_from.clear()
    code, out, err = run_cli(["perf", "m", *NO_SERVER, "--concurrency", "1", "--repo", str(tmp_path / "mine")], capsys)
    assert code == 0 and read_from == [tmp_path / "mine"]  # a repository given is the one read
