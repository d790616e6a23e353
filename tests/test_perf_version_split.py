"""``tritongen perf --version-split``: the split parsed and checked, the interleave, per-version figures in
results.json, the table and the HTML report, and a real server serving two versions with the counts cross-checked
against Triton's per-version statistics."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from tests.conftest import free_ports
from tritongen.cli import main
from tritongen.errors import TritongenError
from tritongen.perf import PerfSpec
from tritongen.perf.report import html_from_runs
from tritongen.perf.results import (
    LatencySummary,
    PerfPoint,
    PerfRun,
    ServerBreakdown,
    VersionFigures,
    json_from_run,
    run_from_json,
    table_from_run,
)
from tritongen.perf.split import (
    MAX_VERSIONS,
    check_split_against_model,
    schedule_from_split,
    stats_by_version,
    version_split_from_text,
)

# ------------------------------------------------------------------------------------------ the split


def test_split_parsed():
    assert version_split_from_text("1:90,2:10") == (("1", 90), ("2", 10))
    assert version_split_from_text(" 3 : 50 , 01:50 ") == (("3", 50), ("1", 50))
    assert version_split_from_text([(1, 60), ("2", 40)]) == (("1", 60), ("2", 40))
    assert version_split_from_text("") == () and version_split_from_text(None) == ()


@pytest.mark.parametrize(
    "text, words",
    [
        ("1:90,2:20", "add up to 110, not 100"),
        ("1:90", "names 1 version"),
        ("1:90,1:10", "version 1 twice"),
        ("1:100,2:0", "gives version 2 0%"),
        ("0:50,1:50", "version 0"),
        ("1=90,2:10", "'1=90' is not VERSION:PERCENT"),
        ("1:9.5,2:90.5", "is not VERSION:PERCENT"),
        (",".join(f"{v}:10" for v in range(1, 11)), "names 10 versions"),
    ],
)
def test_bad_split_one_line(text, words):
    with pytest.raises(TritongenError) as info:
        PerfSpec(model="m", version_split=text)
    assert words in info.value.problem and "\n" not in info.value.message and info.value.fix


def test_a_version_past_int64_is_refused_as_the_results_reader_refuses_it():
    """perf wrote a results.json naming version 99999999999999999999, which perf --compare then refused."""
    from tritongen.layout import MAX_VERSION

    assert version_split_from_text(f"1:50,{MAX_VERSION}:50")[1] == (str(MAX_VERSION), 50)
    for big in (str(MAX_VERSION + 1), "9" * 5000):
        with pytest.raises(TritongenError, match="--version-split names version .*Triton versions are 1 to"):
            version_split_from_text(f"1:50,{big}:50")


def test_split_needs_the_builtin_engine():
    with pytest.raises(TritongenError, match="needs the builtin engine"):
        PerfSpec(model="m", version_split="1:50,2:50", engine="perf_analyzer")


def test_at_most_eight_versions():
    split = ",".join(f"{v}:{p}" for v, p in zip(range(1, 9), (30, 10, 10, 10, 10, 10, 10, 10)))
    assert len(version_split_from_text(split)) == MAX_VERSIONS


def test_interleave_is_deterministic_and_spread():
    cycle = schedule_from_split((("1", 90), ("2", 10)))
    assert len(cycle) == 10 and Counter(cycle) == {"1": 9, "2": 1}
    assert cycle == schedule_from_split((("1", 90), ("2", 10)))
    three = schedule_from_split((("1", 50), ("2", 30), ("3", 20)))
    assert Counter(three) == {"1": 5, "2": 3, "3": 2}
    assert all(three[i] != three[i + 1] for i in range(len(three) - 1) if three[i] != "1"), three
    # any stretch of sends holds the split to within one cycle
    stream = [three[i % len(three)] for i in range(1003)]
    for start in (0, 7, 500):
        part = Counter(stream[start : start + 200])
        assert abs(part["3"] - 40) <= 2 and abs(part["2"] - 60) <= 3


def test_unloaded_version_refused():
    check_split_against_model((("1", 50), ("2", 50)), "m", ["1", "2"])
    with pytest.raises(TritongenError) as info:
        check_split_against_model((("1", 50), ("3", 50)), "m", ["1", "2"])
    assert info.value.problem == "version 3 of 'm' is not loaded (loaded: 1, 2)" and "version_policy" in info.value.fix
    assert "tritongen rollout's gate" in info.value.fix  # a built repository's config.pbtxt is held to its manifest


def test_server_statistics_split_by_version():
    raw = {
        "model_stats": [
            {
                "version": "1",
                "inference_count": "7",
                "execution_count": "5",
                "inference_stats": {"success": {"count": "7", "ns": "7000"}, "queue": {"count": "7", "ns": "700"}},
            },
            {"version": "2", "inference_stats": {"fail": {"count": "2"}}},
        ]
    }
    by = stats_by_version({"raw": raw})
    assert by["1"]["success_count"] == 7 and by["1"]["queue_ns"] == 700 and by["1"]["execution_count"] == 5
    assert by["2"]["success_count"] == 0 and by["2"]["failure_count"] == 2


# ------------------------------------------------------------------------------------------ results, table, report


def _figures(version: str, share: int, p50: float, ok: int, server_ok: int) -> VersionFigures:
    lat = LatencySummary(p50, p50, p50 * 1.5, p50 * 1.8, p50 * 2, p50 * 3)
    return VersionFigures(
        version, share, ok + 1, ok / 2.0, lat, {"unavailable": 1}, ServerBreakdown(server_ok, server_ok)
    )


def test_versions_in_json_table_and_html():
    lat = LatencySummary(2, 2, 3, 3, 4, 5)
    point = PerfPoint(
        "concurrency",
        4,
        "builtin",
        100.0,
        lat,
        201,
        measured_s=2.0,
        versions={"1": _figures("1", 90, 1.5, 180, 181), "2": _figures("2", 10, 9.0, 20, 19)},
    )
    run = PerfRun("m", "u", "grpc", "builtin", (point,), settings={"version_split": [["1", 90], ["2", 10]]})
    back = run_from_json(json_from_run(run))
    assert back.points[0].versions == point.versions
    data = json.loads(json_from_run(run))
    assert data["points"][0]["versions"]["2"]["latency"]["p50_ms"] == 9.0
    table = table_from_run(run)
    assert "v2 10%" in table and "20 answered, server counted 19" in table
    page = html_from_runs([run])
    assert "version 2 (10%)" in page and "Versions compared" in page and "180 answered, server counted 181" in page


def test_bad_split_on_the_command_line_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["perf", "m", "--version-split", "1:90,2:20", "--url", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.startswith("error: --version-split percentages add up to 110")
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------ a real server

TWO_VERSIONS_CONFIG = """\
name: "ab"
backend: "python"
max_batch_size: 8
input [{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }]
version_policy: { all {} }
instance_group [{ kind: KIND_CPU count: 1 }]
"""
# version 1 answers at once; version 2 sleeps 30 ms per execution (a slower candidate)
VERSION_MODEL = """\
import time

import triton_python_backend_utils as pb_utils

PAUSE_S = {pause_s}


class TritonPythonModel:
    def execute(self, requests):
        time.sleep(PAUSE_S)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
"""
V2_PAUSE_MS = 30


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, server_install):
    from tritongen.server import ServeSpec, server_from_repository

    root = tmp_path_factory.mktemp("ab")
    repo = root / "repo"
    for version, pause_s in ((1, 0.0), (2, V2_PAUSE_MS / 1000)):
        (repo / "ab" / str(version)).mkdir(parents=True)
        (repo / "ab" / str(version) / "model.py").write_text(VERSION_MODEL.format(pause_s=pause_s))
    (repo / "ab" / "config.pbtxt").write_text(TWO_VERSIONS_CONFIG)
    inputs = root / "x.npz"
    np.savez(inputs, X=np.ones((4, 4), np.float32))
    http, grpc, metrics = free_ports(3)
    spec = ServeSpec(repo=repo, http_port=http, grpc_port=grpc, metrics_port=metrics, ready_timeout_s=120)
    with server_from_repository(spec) as server:
        yield server, repo, inputs


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_split_on_a_real_server(two_versions, protocol):
    from tritongen.perf import perf_from_spec

    server, repo, inputs = two_versions
    url = server.grpc_url if protocol == "grpc" else server.http_url
    concurrency = 4
    run = perf_from_spec(
        PerfSpec(
            model="ab",
            url=url,
            protocol=protocol,
            repo=repo,
            input_data=inputs,
            concurrency=(concurrency,),
            duration_s=1.5,
            warmup_s=0.3,
            max_windows=3,
            version_split="1:75,2:25",
            metrics_url=server.metrics_url,
        )
    )
    (point,) = run.points
    print(table_from_run(run))
    v1, v2 = point.versions["1"], point.versions["2"]
    assert point.error_count == 0 and v1.error_count == v2.error_count == 0
    assert v1.requests + v2.requests == point.requests
    # sends follow the 3:1 cycle; completions differ from sends only by the requests in flight at the edges
    assert abs(v2.requests - point.requests / 4) <= concurrency + 1, (v1.requests, v2.requests)
    # Triton's per-version statistics count the same requests, give or take those in flight at the window edges
    for v in (v1, v2):
        assert v.server.requests > 0 and abs(v.server.requests - v.ok) <= 2 * concurrency, (v.version, v.ok, v.server)
    assert v2.latency.p50_ms >= V2_PAUSE_MS and v2.server.compute_infer_us >= V2_PAUSE_MS * 1000 * 0.9
    assert v1.latency.p50_ms < v2.latency.p50_ms
    assert run.settings["version_split"] == (("1", 75), ("2", 25))


@pytest.mark.server
def test_split_naming_an_unloaded_version(two_versions, capsys):
    server, repo, inputs = two_versions
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "perf",
                "ab",
                "--url",
                server.grpc_url,
                "--repo",
                str(repo),
                "--input-data",
                str(inputs),
                "--version-split",
                "1:50,3:50",
            ]
        )
    err = capsys.readouterr().err
    assert exc.value.code == 1 and err.splitlines()[0].startswith(
        "error: version 3 of 'ab' is not loaded (loaded: 1, 2): "
    )


@pytest.mark.server
def test_split_in_open_loop(two_versions):
    from tritongen.perf import perf_from_spec

    server, repo, inputs = two_versions
    run = perf_from_spec(
        PerfSpec(
            model="ab",
            url=server.grpc_url,
            repo=repo,
            input_data=inputs,
            request_rates=(40.0,),
            duration_s=1.5,
            warmup_s=0.3,
            max_windows=3,
            version_split="1:75,2:25",
            metrics_url=server.metrics_url,
        )
    )
    (point,) = run.points
    v1, v2 = point.versions["1"], point.versions["2"]
    assert point.error_count == 0 and v1.requests + v2.requests == point.requests
    # sends are scheduled 3:1; completions in the windows differ by the requests in flight at their edges
    assert abs(v2.requests - point.requests / 4) <= 8, (v1.requests, v2.requests)
    assert v1.server.requests > 0 and v2.server.requests > 0
