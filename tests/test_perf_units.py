"""Pure parts of tritongen.perf: result files, stability rule, perf_analyzer input data and CSV, tune helpers."""

import base64
import json

import numpy as np
import pytest

from tritongen.errors import TritongenError
from tritongen.perf.inputs import RequestSet, check_requests_against_metadata, request_set_from_arrays
from tritongen.perf.loadgen import Window, is_stable
from tritongen.perf.perf_analyzer import input_data_from_requests, point_from_csv, shape_args_from_requests
from tritongen.perf.results import (
    LatencySummary,
    PerfPoint,
    PerfRun,
    ServerBreakdown,
    csv_from_run,
    json_from_run,
    latency_summary_from_ms,
    run_from_json,
)
from tritongen.perf.spec import PerfSpec

PA_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
    "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,"
    "Avg latency,request/response,response wait\n"
    "4,3792.7,17,526,135,38,238,204,3,960,1240,1500,4010,1050,20,1000\n"
)


def _point(load=1.0, mode="concurrency"):
    return PerfPoint(
        mode=mode,
        load=load,
        engine="builtin",
        throughput_rps=100.0,
        latency=latency_summary_from_ms([1.0, 2.0, 3.0, 10.0]),
        requests=400,
        errors={"unavailable": 2},
        measured_s=4.0,
        windows=3,
        server=ServerBreakdown(400, 100, 10.0, 1.0, 50.0, 2.0),
        window_history=((99.0, 9.0), (101.0, 10.0)),
    )


def test_latency_summary_percentiles_are_ordered():
    s = latency_summary_from_ms(np.random.default_rng(0).exponential(5.0, 5000))
    assert s.p50_ms <= s.p90_ms <= s.p95_ms <= s.p99_ms <= s.max_ms
    assert np.isnan(latency_summary_from_ms([]).mean_ms)


def test_run_json_round_trip_and_csv(tmp_path):
    run = PerfRun(
        model="m",
        url="127.0.0.1:8001",
        protocol="grpc",
        engine="builtin",
        points=(_point(1), _point(50, "request_rate")),
        settings={"duration_s": 2.0},
        metrics={"nv_cpu_utilization": 0.5},
        partial=True,
        partial_reason="server died",
    )
    back = run_from_json(json_from_run(run))
    assert back == run
    path = tmp_path / "r.json"
    path.write_text(json_from_run(run))
    assert run_from_json(path).points[1].mode == "request_rate"
    rows = csv_from_run(run).splitlines()
    assert rows[0].startswith("mode,load,engine,throughput_rps") and len(rows) == 3
    with pytest.raises(TritongenError, match="not a tritongen perf result"):
        run_from_json('{"format": "other"}')


def test_stability_needs_three_close_windows():
    def w(tp, mean):
        return Window(0, 1, 1.0, tp, mean, mean * 2, 0, None)

    assert not is_stable([w(100, 1), w(100, 1)], 10)
    assert is_stable([w(50, 3), w(100, 1), w(104, 1.05), w(97, 0.98)], 10)
    assert not is_stable([w(100, 1), w(130, 1), w(100, 1)], 10)


def test_spec_defaults_and_bad_values():
    spec = PerfSpec(model="m")
    assert spec.levels == (("concurrency", 1.0), ("concurrency", 4.0))
    assert PerfSpec(model="m", url="127.0.0.1:8001").resolved_metrics_url() == "127.0.0.1:8002"
    assert PerfSpec(model="m", url="127.0.0.1:9001").resolved_metrics_url() is None
    with pytest.raises(TritongenError, match="concurrency 0"):
        PerfSpec(model="m", concurrency=(0,))
    with pytest.raises(TritongenError, match="request rate"):
        PerfSpec(model="m", request_rates=(-1,))


def test_report_folder_is_checked_by_the_spec_and_the_check_writes_nothing(tmp_path):
    from tritongen.perf.report import report_from_runs
    from tritongen.perf.results import check_report_dir

    check_report_dir(tmp_path / "new" / "deeper")  # missing parents are fine: the report creates them
    assert PerfSpec(model="m", report_dir=str(tmp_path)).report_dir == tmp_path
    assert list(tmp_path.iterdir()) == []  # neither check created a folder, nor left its probe
    notes = tmp_path / "notes.md"
    notes.write_text("# notes\n")
    with pytest.raises(TritongenError, match="notes.md is a file, not a folder") as err:
        PerfSpec(model="m", report_dir=notes)
    assert err.value.fix == "pass --report with a folder path"
    with pytest.raises(TritongenError, match=r"cannot be created \(.*notes.md is a file, not a folder\)"):
        PerfSpec(model="m", report_dir=notes / "out" / "deeper")
    (tmp_path / "taken" / "report.html").mkdir(parents=True)
    with pytest.raises(TritongenError, match="holds a report.html that is not a file"):
        check_report_dir(tmp_path / "taken")
    run = PerfRun(model="m", url="127.0.0.1:8001", protocol="grpc", engine="builtin", points=(_point(1.0),))
    with pytest.raises(TritongenError, match="holds a report.html"):
        report_from_runs([run], tmp_path / "taken")
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["report.html"]  # no results.json, no .csv
    assert notes.read_text() == "# notes\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.md", "taken"]


def test_perf_measures_no_more_levels_or_windows_than_its_results_file_can_hold():
    """A results.json's reader refuses more than MAX_LEVELS levels; perf refused none, so it could write a file it
    then refused (and windows without bound could take it past the reader's byte limit)."""
    from tritongen.perf.results import MAX_LEVELS
    from tritongen.perf.spec import MAX_WINDOWS

    assert len(PerfSpec(model="m", concurrency=tuple(range(1, MAX_LEVELS + 1))).levels) == MAX_LEVELS
    with pytest.raises(TritongenError, match=f"{MAX_LEVELS + 1} load levels are more than the {MAX_LEVELS}"):
        PerfSpec(model="m", concurrency=tuple(range(1, MAX_LEVELS + 2)))
    assert PerfSpec(model="m", max_windows=MAX_WINDOWS).max_windows == MAX_WINDOWS
    with pytest.raises(TritongenError, match=f"--max-windows {MAX_WINDOWS + 1} is outside 3..{MAX_WINDOWS}"):
        PerfSpec(model="m", max_windows=MAX_WINDOWS + 1)


def test_time_budget_is_stated_and_max_time_lowers_the_window_cap():
    spec = PerfSpec(model="m", concurrency=(1, 4), duration_s=3.0, warmup_s=1.0)
    assert spec.time_budget_s() == (2 * (1.0 + 3.0), 2 * (1.0 + 10 * 1.0))
    assert "2 level(s)" in spec.budget_text() and "3 to 10 windows" in spec.budget_text()
    capped = PerfSpec(model="m", concurrency=(1, 4), duration_s=3.0, warmup_s=1.0, max_time_s=13)
    assert capped.max_windows == 5 and capped.time_budget_s()[1] <= 13  # 6.5 s per level: 1 s warm-up + 5 x 1 s
    assert PerfSpec(model="m", concurrency=(1,), max_time_s=1000).max_windows == 10  # never above --max-windows
    with pytest.raises(TritongenError, match="too short for 2 load level") as err:
        PerfSpec(model="m", concurrency=(1, 4), duration_s=3.0, warmup_s=1.0, max_time_s=7.9)
    assert "8 s in all" in err.value.message


def test_report_shows_metrics_in_human_units_and_loads_in_words():
    from tritongen.perf.report import load_label, metric_text

    assert metric_text("nv_cpu_memory_used_bytes", 25_276_059_648.0) == "23.54 GiB"
    assert metric_text("nv_gpu_memory_used_bytes", 512.0) == "512 B"
    assert metric_text("nv_cpu_utilization", 0.4567) == "45.7 %"
    assert metric_text("nv_gpu_power_usage", 71.25) == "71.2 W"
    assert load_label("concurrency", 4.0) == "4 in flight" and load_label("request_rate", 50.5) == "50.5 req/s"


def test_perf_analyzer_input_data_is_exact_and_shapes_come_from_samples():
    x = np.arange(2 * 5 * 8, dtype=np.float32).reshape(2, 5, 8)
    requests = request_set_from_arrays({"x": x}, batched=True, source="t")
    data = input_data_from_requests(requests)
    assert len(data["data"]) == 2 and data["data"][0]["x"]["shape"] == [5, 8]
    raw = base64.b64decode(data["data"][1]["x"]["b64"])
    np.testing.assert_array_equal(np.frombuffer(raw, np.float32).reshape(5, 8), x[1])
    assert shape_args_from_requests(requests) == ["--shape", "x:5,8"]
    json.dumps(data)


def test_perf_analyzer_csv_parses_into_a_point():
    p = point_from_csv(PA_CSV, "concurrency", 4, 3.0)
    assert p.throughput_rps == pytest.approx(3792.7)
    assert (
        p.latency.p99_ms == pytest.approx(4.01)
        and p.latency.mean_ms == pytest.approx(1.05)
        and p.latency.max_ms is None
    )
    assert p.server.queue_us == 135 and p.server.compute_infer_us == 238


def test_inputs_that_do_not_match_the_model_are_refused():
    meta = {"name": "m", "max_batch_size": 8, "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1, 8]}]}
    good = request_set_from_arrays({"x": np.zeros((2, 3, 8), np.float32)}, True, "t")
    check_requests_against_metadata(good, meta)
    with pytest.raises(TritongenError, match="missing x"):
        check_requests_against_metadata(
            request_set_from_arrays({"y": np.zeros((2, 3, 8), np.float32)}, True, "t"), meta
        )
    with pytest.raises(TritongenError, match="FP64"):
        check_requests_against_metadata(request_set_from_arrays({"x": np.zeros((2, 3, 8))}, True, "t"), meta)
    with pytest.raises(TritongenError, match="shape"):
        check_requests_against_metadata(RequestSet(({"x": np.zeros((1, 3, 7), np.float32)},), True, "t"), meta)


def test_tune_config_round_trip_and_frontier():
    from tritongen.perf.tune_configs import candidate_from_config, config_from_candidate
    from tritongen.perf.tune_select import frontier
    from tritongen.perf.tune_spec import Candidate
    from tritongen.validate import config_from_text

    base = config_from_text(
        'name: "m"\nbackend: "python"\nmax_batch_size: 8\ninput [{name: "x" data_type: TYPE_FP32 dims: [4]}]\n'
        'output [{name: "y" data_type: TYPE_FP32 dims: [4]}]\ndynamic_batching { preferred_batch_size: [4, 8] '
        "max_queue_delay_microseconds: 500 }\ninstance_group [{count: 1 kind: KIND_CPU}]\n"
    )
    c = candidate_from_config(base)
    assert c == Candidate(1, 500, 8, (4, 8))
    new = Candidate(2, 0, 16, (16,))
    assert candidate_from_config(config_from_candidate(base, new)) == new
    assert candidate_from_config(base) == c  # the base is not modified
    pts = [
        (c, PerfPoint("concurrency", n, "builtin", tp, LatencySummary(1, 1, 1, 1, p99, 1), 1))
        for n, tp, p99 in ((1, 100, 1.0), (2, 90, 2.0), (4, 300, 3.0), (8, 250, 5.0))
    ]
    assert [p.throughput_rps for _, p in frontier(pts)] == [100, 300]


def test_tune_seeds_a_second_descent_in_the_batching_region():
    from tritongen.perf.tune_select import batching_seed, parallel_seed
    from tritongen.perf.tune_spec import Candidate

    space = {
        "instances": [1, 2],
        "max_queue_delay_us": [0, 500],
        "max_batch_size": [2, 4, 8, 16],
        "preferred": ["none"],
    }
    assert batching_seed(space, Candidate(2, 500, 8, (4, 8))) == Candidate(1, 500, 16, ())
    assert batching_seed({"instances": [1, 2]}, Candidate(1, 0, 0, ())) is None  # no batching: nothing to seed
    # and one in the instance-parallel region: the most instances, the same max batch size, no preferred sizes
    assert parallel_seed(space, Candidate(1, 500, 8, (4, 8))) == Candidate(2, 500, 8, ())
    assert parallel_seed({"instances": [1, 2, 3]}, Candidate(1, 0, 0, ())) == Candidate(3, 0, 0, ())
    assert parallel_seed({"instances": [1]}, Candidate(1, 500, 8, ())) is None  # one instance only: no such region


def test_a_client_bound_level_is_flagged_with_its_cpu_and_what_to_do():
    from dataclasses import replace

    from tritongen.perf.results import client_bound_note, table_from_run

    easy, busy = (
        replace(_point(1.0), client_cpu_cores=0.3, client_cpu_us_per_request=300.0),
        replace(_point(4.0), client_cpu_cores=0.97, client_cpu_us_per_request=410.0),
    )
    run = PerfRun(model="m", url="u", protocol="grpc", engine="builtin", points=(easy, busy))
    assert not easy.client_bound and busy.client_bound
    note = client_bound_note(run)
    assert (
        note.startswith("client-bound at concurrency 4:") and "0.97 cores" in note and "--engine perf_analyzer" in note
    )
    assert "(client-bound)" in table_from_run(run).splitlines()[3] and note in table_from_run(run)
    assert client_bound_note(replace(run, points=(easy,))) == ""
    assert run_from_json(json_from_run(run)).points[1].client_cpu_us_per_request == 410.0
    # Half a core is not a busy core, but on the server's own 2-core machine it is a quarter of the machine.
    local = replace(easy, client_cpu_cores=0.5, client_machine_share=0.25)
    assert local.client_bound and not replace(local, client_machine_share=None).client_bound
    assert not replace(local, client_machine_share=0.1).client_bound
    assert run_from_json(json_from_run(replace(run, points=(local,)))).points[0].client_machine_share == 0.25


def test_the_machine_share_counts_only_for_a_server_on_this_machine(monkeypatch):
    """Loopback, 0.0.0.0 and any address of this machine's interfaces reach a server on this machine (the client
    shares its cores); an address elsewhere does not."""
    import ipaddress
    import os

    from tritongen.perf.loadgen import _machine_share
    from tritongen.server import ports

    cores = os.cpu_count() or 1
    assert _machine_share(PerfSpec(model="m", url="127.0.0.1:8001"), 0.5) == 0.5 / cores
    assert _machine_share(PerfSpec(model="m", url="localhost:8001"), 0.5) == 0.5 / cores
    assert _machine_share(PerfSpec(model="m", url="0.0.0.0:8001"), 0.5) == 0.5 / cores
    monkeypatch.setattr(ports, "_interface_addresses", lambda: frozenset({ipaddress.ip_address("10.1.2.3")}))
    assert _machine_share(PerfSpec(model="m", url="10.1.2.3:8001"), 0.5) == 0.5 / cores  # this machine's own
    assert _machine_share(PerfSpec(model="m", url="10.1.2.4:8001"), 0.5) is None


def test_more_perf_analyzer_options_pass_through_but_not_the_ones_tritongen_sets(tmp_path):
    from tritongen.perf.inputs import RequestSet
    from tritongen.perf.perf_analyzer import PerfAnalyzerInstall, command_from_spec

    spec = PerfSpec(model="m", engine="perf_analyzer", perf_analyzer_args="--async --max-threads 1")
    assert spec.perf_analyzer_args == ("--async", "--max-threads", "1")
    requests = RequestSet(requests=({"x": np.zeros((1, 4), np.float32)},), batched=True, source="test")
    command = command_from_spec(
        PerfAnalyzerInstall(tmp_path / "pa", {}),
        spec,
        "concurrency",
        4,
        tmp_path / "d.json",
        tmp_path / "o.csv",
        requests,
    )
    assert command[-3:] == ["--async", "--max-threads", "1"] and command.count("-u") == 1
    assert PerfSpec(model="m", engine="perf_analyzer", perf_analyzer_args=["--streaming"]).perf_analyzer_args == (
        "--streaming",
    )
    for managed in ("-u 10.0.0.1:8001", "--concurrency-range=1:64", "-f /tmp/x.csv", "--measurement-interval 50"):
        with pytest.raises(TritongenError, match="tritongen sets itself"):
            PerfSpec(model="m", engine="perf_analyzer", perf_analyzer_args=managed)
    with pytest.raises(TritongenError, match="without --engine perf_analyzer"):
        PerfSpec(model="m", perf_analyzer_args="--async")
    with pytest.raises(TritongenError, match="too long"):
        PerfSpec(model="m", engine="perf_analyzer", perf_analyzer_args=("--async",) * 65)


def test_a_text_ensemble_without_samples_is_measured_with_its_end_to_end_sentences(tmp_path):
    from tritongen.end_to_end import END_TO_END_NAME, write_reference
    from tritongen.errors import TritongenError
    from tritongen.layout import artifact_dir
    from tritongen.perf.inputs import request_set_for_model

    artifacts = artifact_dir(tmp_path / "minilm", 1)
    artifacts.mkdir(parents=True)
    write_reference(artifacts / END_TO_END_NAME, ["a cat sat", "it rained"], {"EMBEDDING": np.ones((2, 4), np.float32)})
    metadata = {
        "name": "minilm",
        "max_batch_size": 16,
        "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": [],
    }
    requests = request_set_for_model(metadata, tmp_path)
    assert [r["TEXT"].tolist() for r in requests.requests] == [[[b"a cat sat"]], [[b"it rained"]]]
    assert requests.source.endswith(END_TO_END_NAME)
    image = {**metadata, "inputs": [{"name": "IMAGE", "datatype": "FP32", "shape": [-1, 3]}]}
    with pytest.raises(TritongenError, match="--text-file"):  # not a text model: no sentences to send
        request_set_for_model(image, tmp_path)


def test_the_table_names_error_kinds_and_says_unsent_requests_are_not_the_servers():
    from dataclasses import replace

    from tritongen.perf.results import PerfRun, table_from_run

    point = replace(_point(2000.0, mode="request_rate"), errors={"client_overloaded": 5333, "http_500: boom": 2})
    table = table_from_run(PerfRun("m", "u", "http", "builtin", (point, replace(_point(4.0), errors={}))))
    assert "errors at 2000/s: client_overloaded 5333, http_500: boom 2" in table
    assert "5333 requests this client could not send on schedule" in table
    assert "errors at 4c" not in table  # a level without errors gets no line


def test_requests_sent_again_are_shown_and_kept_in_the_results():
    """A server closing kept connections as requests left had each request sent twice (once unanswered), and
    nothing said so: it did double the work at the load shown."""
    from dataclasses import replace

    from tritongen.perf.results import PerfRun, csv_from_run, json_from_run, run_from_json, table_from_run

    run = PerfRun("m", "u", "http", "builtin", (replace(_point(4.0), errors={}, resent=1925), _point(8.0)))
    table = table_from_run(run)
    assert "sent again at 4c: 1925 requests, on a new connection" in table and "sent again at 8c" not in table
    assert "errors at 4c" not in table
    assert [p.resent for p in run_from_json(json_from_run(run)).points] == [1925, 0]
    header, first = csv_from_run(run).splitlines()[:2]
    assert header.endswith(",resent") and first.endswith(",1925")


def test_an_ensembles_time_is_its_steps_summed_not_client_and_network():
    from dataclasses import replace

    from tritongen.perf.report import time_parts_us
    from tritongen.perf.results import ServerBreakdown

    ensemble = replace(
        _point(1.0),
        latency=replace(_point(1.0).latency, mean_ms=8.43),
        server=ServerBreakdown(100, 100, 1.6, 82.0, 5565.0, 476.0),  # the ensemble's own: steps' queues left out
        steps={
            "pre": ServerBreakdown(100, 100, 637.0, 10.0, 80.0, 5.0),
            "model": ServerBreakdown(100, 20, 634.0, 40.0, 5400.0, 30.0),
            "post": ServerBreakdown(100, 100, 645.0, 5.0, 400.0, 5.0),
        },
    )
    parts = time_parts_us(ensemble)
    assert parts["queue_us"] == 637.0 + 634.0 + 645.0 and parts["compute_infer_us"] == 80.0 + 5400.0 + 400.0
    assert abs(sum(parts.values()) - 8430.0) < 1e-6 and parts["other_us"] < 1000.0  # was 2.3 ms of "client"
    plain = time_parts_us(_point(1.0))
    assert plain["queue_us"] == 10.0 and plain["compute_infer_us"] == 50.0


def test_a_reference_whose_texts_cannot_be_sent_is_damaged(tmp_path):
    from tritongen.end_to_end import END_TO_END_NAME, read_reference, write_reference
    from tritongen.errors import TritongenError

    path = tmp_path / END_TO_END_NAME
    write_reference(path, ["\ud800"], {"EMBEDDING": np.ones((1, 4), np.float32)})  # JSON carries a lone surrogate
    with pytest.raises(TritongenError, match="is damaged"):
        read_reference(path)


def test_perf_sends_the_samples_of_the_version_the_server_answers_with(tmp_path):
    """Unversioned requests reach the newest version the server has ready; a newer build on disk that is not loaded
    yet (other shapes, say) must not supply perf's requests."""
    from tritongen.layout import SAMPLES_NAME, artifact_dir
    from tritongen.perf.inputs import request_set_for_model

    for version, width in ((1, 4), (2, 6)):
        folder = artifact_dir(tmp_path / "m", version)
        folder.mkdir(parents=True)
        np.savez(folder / SAMPLES_NAME, x=np.zeros((2, width), np.float32))

    def metadata(versions: list[str]) -> dict:
        return {
            "name": "m",
            "max_batch_size": 8,
            "versions": versions,
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1]}],
        }

    served_1 = request_set_for_model(metadata(["1"]), tmp_path)
    assert served_1.requests[0]["x"].shape == (1, 4) and "/1/" in served_1.source
    assert request_set_for_model(metadata(["1", "2"]), tmp_path).requests[0]["x"].shape == (1, 6)
    assert request_set_for_model(metadata(["3"]), tmp_path).requests[0]["x"].shape == (1, 6)  # not built here: newest


def test_report_writes_one_report_for_runs_or_their_results_files(tmp_path):
    """tritongen.report is perf --compare from Python: runs perf() returned, or the results.json files an earlier
    perf --report wrote, in one report.html."""
    import tritongen
    from tritongen.errors import TritongenError

    a = PerfRun(model="m", url="u", protocol="grpc", engine="builtin", points=(_point(1.0),), label="a")
    b = PerfRun(model="m", url="u", protocol="grpc", engine="perf_analyzer", points=(_point(4.0),), label="b")
    path = tritongen.report([a], tmp_path / "one")
    assert path == tmp_path / "one" / "report.html" and (tmp_path / "one" / "results.json").is_file()
    both = tritongen.report([tmp_path / "one" / "results.json", b], str(tmp_path / "both"), title="A and B")
    page = both.read_text()
    assert "A and B" in page and ">a<" in page and ">b<" in page
    assert not (tmp_path / "both" / "results.json").exists()  # results files belong to one run
    with pytest.raises(TritongenError, match="report\\(\\) got no runs"):
        tritongen.report([], tmp_path / "none")
    with pytest.raises(TritongenError, match="got a dict among its runs"):
        tritongen.report([{}], tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_a_space_inside_a_number_list_is_refused_not_dropped():
    """--concurrency "1 4" ran one level at concurrency 14 (every space was dropped before the split)."""
    from tritongen.perf.spec import numbers_from_text

    assert numbers_from_text(" 1, 4 ,", int, "--concurrency") == (1, 4)
    with pytest.raises(TritongenError, match="'1 4' is not a comma-separated list of whole numbers"):
        numbers_from_text("1 4", int, "--concurrency")


# ------------------------------------------------------------------------------------------ levels where all failed

REFUSED = "internal: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Invalid input shape: {2,2}"


def _failed_run(*points):
    return PerfRun(model="pnet", url="127.0.0.1:8001", protocol="grpc", engine="builtin", points=points)


def _all_failed(load=1.0):
    from dataclasses import replace

    return replace(
        _point(load),
        throughput_rps=0.0,
        latency=latency_summary_from_ms([]),
        requests=819,
        errors={REFUSED: 818, "deadline_exceeded": 1},
    )


def test_a_level_where_every_request_failed_is_an_error_naming_the_first_failure(tmp_path):
    from tritongen.perf.results import LevelFailed, failed_level_error

    assert failed_level_error(_failed_run(_point(1), _point(4))) is None  # some answers: results, as before
    run = _failed_run(_point(1), _all_failed(4))
    failed = failed_level_error(run, tmp_path / "r")
    assert isinstance(failed, LevelFailed) and failed.run is run
    assert failed.problem == f"every request at concurrency 4 failed (819, 2 kinds), the first with {REFUSED}"
    assert failed.fix == f"fix that and run perf again; every failure kind is in {tmp_path / 'r' / 'results.json'}"
    assert failed_level_error(_failed_run(_all_failed(1))).fix == "fix that and run perf again"


def test_a_level_where_nothing_was_answered_nor_failed_is_an_error():
    """A server that took every request and answered none (a hung model) gave "0.0 req/s ... errors 0" and exit 0:
    the requests' timeouts fell after the last measured window."""
    from dataclasses import replace

    from tritongen.perf.results import failed_level_error

    silent = replace(_point(4), throughput_rps=0.0, latency=latency_summary_from_ms([]), requests=0, errors={})
    failed = failed_level_error(_failed_run(_point(1), silent))
    assert failed is not None and failed.problem.startswith("no request at concurrency 4 was answered in its measured ")
    assert "--duration-s" in failed.fix
    # not where an empty window is no fault (the reviewer): an open loop at 0.1 req/s may have had nothing due;
    # perf_analyzer's count is its throughput times the time (0.07 req/s rounds to 0); a run --max-time-s cut
    assert failed_level_error(_failed_run(replace(silent, mode="request_rate", load=0.1))) is None
    assert failed_level_error(_failed_run(replace(silent, engine="perf_analyzer"))) is None
    assert failed_level_error(replace(_failed_run(silent), partial=True, partial_reason="--max-time-s")) is None


def _fake_perf(monkeypatch, run):
    import importlib

    package = importlib.import_module("tritongen.perf")  # tritongen.perf, the attribute, is the API's function
    monkeypatch.setattr(package, "perf_from_spec", lambda spec, progress=None: run)


def test_perf_from_python_raises_for_a_level_without_answers_after_writing_its_results(tmp_path, monkeypatch):
    import tritongen

    _fake_perf(monkeypatch, _failed_run(_all_failed(1)))
    with pytest.raises(TritongenError, match=r"^every request at concurrency 1 failed .*Invalid input shape") as err:
        tritongen.perf("pnet", concurrency=1, report_dir=tmp_path / "r")
    assert run_from_json(tmp_path / "r" / "results.json").points[0].errors[REFUSED] == 818  # there to look at
    assert err.value.run.points[0].requests == 819
    _fake_perf(monkeypatch, _failed_run(_point(1)))  # a level with answers and some failures: returned as before
    assert tritongen.perf("pnet", concurrency=1).points[0].errors == {"unavailable": 2}


def test_perf_on_the_command_line_shows_the_table_then_ends_with_one_error_line(tmp_path, monkeypatch, capsys):
    from tritongen.cli import main

    _fake_perf(monkeypatch, _failed_run(_point(1), _all_failed(4)))
    with pytest.raises(SystemExit) as exc:
        main(["perf", "pnet", "--concurrency", "1,4", "--report", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert exc.value.code == 1 and "Traceback" not in err
    assert f"errors at 4c: {REFUSED} 818" in out and "report: " in out
    assert err.strip().splitlines() == [
        f"error: every request at concurrency 4 failed (819, 2 kinds), the first with {REFUSED}: fix that and run "
        f"perf again; every failure kind is in {tmp_path / 'r' / 'results.json'}"
    ]


def test_a_window_where_every_answer_is_unavailable_with_a_reason_means_the_server_is_gone():
    """gRPC failures carry their reason now ('unavailable: ...'); the server-gone rule reads the kind before it."""
    import asyncio

    from tritongen.perf.loadgen import ServerGone, _level

    class Refused:
        resent = 0

        async def send(self, index, version="", worker=None):
            await asyncio.sleep(0.001)
            return "unavailable: Request for unknown model: 'm' has no available versions"

    async def no_stats():
        return None

    spec = PerfSpec(model="m", url="10.0.0.1:8001", duration_s=0.3, warmup_s=0, max_windows=100)
    with pytest.raises(ServerGone, match="no server answered during window"):
        asyncio.run(_level(Refused(), "concurrency", 1, spec, no_stats, lambda m: None))


def test_inputs_of_different_batch_sizes_are_refused_before_sending():
    """x with 8 rows and t with 4 went to the server, whose refusal names neither the file nor the inputs."""
    from tritongen.perf.inputs import check_arrays_against_metadata

    metadata = {
        "name": "m",
        "max_batch_size": 8,
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
            {"name": "t", "datatype": "INT64", "shape": [-1, 1]},
        ],
    }
    arrays = {"x": np.zeros((8, 4), np.float32), "t": np.zeros((4, 1), np.int64)}
    with pytest.raises(TritongenError, match=r"hold different batch sizes \(x: 8, t: 4\)"):
        check_arrays_against_metadata(arrays, metadata, "cond_bad.npz")


def test_a_dimension_the_model_does_not_take_is_named_not_the_batch_hint():
    """[30, 256] against [-1, 512] was told that a batched model's shape starts with the batch dimension."""
    from tritongen.perf.inputs import check_arrays_against_metadata

    metadata = {"name": "vad", "max_batch_size": 8, "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 512]}]}
    with pytest.raises(TritongenError) as err:
        check_arrays_against_metadata({"x": np.zeros((1, 256), np.float32)}, metadata, "vadbad.npz")
    assert err.value.fix.startswith("dimension 1 is 256, the model takes 512") and "array[None]" not in err.value.fix
    with pytest.raises(TritongenError) as flat:
        check_arrays_against_metadata({"x": np.zeros(512, np.float32)}, metadata, "flat.npz")
    assert "a single item: array[None]" in flat.value.fix  # a dimension missing: the batch hint stays


def test_a_local_servers_own_metrics_port_wins_over_the_8002_guess(monkeypatch):
    """With 8002 taken, serve picked another metrics port; perf on :8001 read 8002 (the other listener) all the
    same, as the guess came before the lookup."""
    from tritongen.perf import run
    from tritongen.server import ports

    monkeypatch.setattr(ports, "metrics_address_at", lambda url: "127.0.0.1:36817")
    assert run.metrics_url_for(PerfSpec(model="m", url="127.0.0.1:8001"), "127.0.0.1:8001") == "127.0.0.1:36817"
    given = PerfSpec(model="m", url="127.0.0.1:8001", metrics_url="h:9102")
    assert run.metrics_url_for(given, "127.0.0.1:8001") == "h:9102"  # asked for by name
    monkeypatch.setattr(ports, "metrics_address_at", lambda url: None)  # a server elsewhere: Triton's default
    assert run.metrics_url_for(PerfSpec(model="m", url="127.0.0.1:8001"), "127.0.0.1:8001") == "127.0.0.1:8002"
