"""tritongen.client against the session's real tritonserver (see conftest.tiny_server), no mocks."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest

from tests.conftest import free_ports
from tritongen.client import (
    default_url,
    infer_concurrently,
    infer_from_arrays,
    model_metadata,
    model_statistics,
    protocol_for_url,
    spec_protocol,
)
from tritongen.errors import TritongenError

PROTOCOLS = ("grpc", "http")


def url_for(server, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


# --------------------------------------------------------------------------------------------- no server needed


def test_default_url_per_protocol_and_env_override(monkeypatch):
    for name in ("TRITONGEN_URL", "TRITONGEN_GRPC_URL", "TRITONGEN_HTTP_URL"):
        monkeypatch.delenv(name, raising=False)
    assert default_url("grpc") == "127.0.0.1:8001"
    assert default_url("http") == "127.0.0.1:8000"
    monkeypatch.setenv("TRITONGEN_URL", "gpu-host:9001")
    assert default_url("grpc") == default_url("http") == "gpu-host:9001"
    monkeypatch.setenv("TRITONGEN_HTTP_URL", "gpu-host:9000")
    assert default_url("http") == "gpu-host:9000" and default_url("grpc") == "gpu-host:9001"
    with pytest.raises(TritongenError, match="protocol 'tcp'"):
        default_url("tcp")


def test_a_url_scheme_chooses_the_protocol_unless_protocol_is_given():
    assert protocol_for_url("http://127.0.0.1:8000", None) == "http"
    assert protocol_for_url(" HTTP://host:8000/", None) == "http"
    assert protocol_for_url("grpc://127.0.0.1:8001", None) == "grpc"
    assert protocol_for_url("127.0.0.1:8000", None) == "grpc"  # no scheme: gRPC, as before
    assert protocol_for_url(None, None) == "grpc"
    assert protocol_for_url("127.0.0.1:8000", "http") == "http"
    assert protocol_for_url("http://127.0.0.1:8000", "http") == "http"
    with pytest.raises(TritongenError) as err:
        protocol_for_url("http://127.0.0.1:8000", "grpc")
    assert err.value.message == (
        "--url http://127.0.0.1:8000 asks for HTTP but --protocol is grpc: "
        "pass --protocol http, or --url host:port of the server's gRPC port"
    )


def test_a_spec_settles_its_protocol_from_the_url_or_the_environment(monkeypatch, tmp_path):
    """Specs built directly (the library, not the CLI) choose the protocol as the CLI does: an http:// URL is
    spoken to over HTTP, and so is an http:// $TRITONGEN_URL when no URL is given."""
    from tritongen.deploy.rollout import RolloutSpec
    from tritongen.infer import InferSpec
    from tritongen.perf.spec import PerfSpec
    from tritongen.perf.tune_spec import TuneSpec

    for name in ("TRITONGEN_URL", "TRITONGEN_GRPC_URL", "TRITONGEN_HTTP_URL"):
        monkeypatch.delenv(name, raising=False)
    specs = {
        "infer": lambda **kw: InferSpec(name="m", **kw),
        "perf": lambda **kw: PerfSpec(model="m", **kw),
        "tune": lambda **kw: TuneSpec(model_dir=tmp_path / "m", max_p99_ms=10, **kw),
        "rollout": lambda **kw: RolloutSpec(repo=tmp_path, name="m", to_version=2, **kw),
    }
    for what, make in specs.items():
        assert make().protocol == "grpc", what
        assert make(url="http://h:8000").protocol == "http", what
        assert make(url="h:8000", protocol="http").protocol == "http", what
        with pytest.raises(TritongenError, match="asks for HTTP but --protocol is grpc"):
            make(url="http://h:8000", protocol="grpc")
    monkeypatch.setenv("TRITONGEN_URL", "http://gpu-host:9000")
    for what, make in specs.items():
        assert make().protocol == "http", what
        assert make(url="gpu-host:9001").protocol == "grpc", what  # a URL given: the environment is not asked
    assert RolloutSpec(repo=tmp_path, name="m", to_version=2).url == "http://gpu-host:9000"
    assert PerfSpec(model="m").resolved_url() == "gpu-host:9000"
    with pytest.raises(TritongenError) as err:
        InferSpec(name="m", protocol="grpc")
    assert err.value.message == (
        "$TRITONGEN_URL http://gpu-host:9000 asks for HTTP but --protocol is grpc: "
        "pass --protocol http, or set $TRITONGEN_URL to host:port of the server's gRPC port"
    )
    monkeypatch.setenv("TRITONGEN_GRPC_URL", "gpu-host:9001")  # the protocol's own variable is the one used
    assert spec_protocol(None, "grpc") == "grpc" and spec_protocol(None, None) == "http"
    assert InferSpec(name="m", protocol="grpc").protocol == "grpc"


def test_a_protocol_is_read_whatever_its_case(monkeypatch, tmp_path):
    """HTTP, gRPC, Http: the library and spec files take a protocol in any case, as the CLI does."""
    from tritongen.client import _check_protocol
    from tritongen.infer import InferSpec
    from tritongen.perf.spec import PerfSpec

    for name in ("TRITONGEN_URL", "TRITONGEN_GRPC_URL", "TRITONGEN_HTTP_URL"):
        monkeypatch.delenv(name, raising=False)
    assert _check_protocol("HTTP") == "http" and _check_protocol(" gRPC ") == "grpc"
    assert spec_protocol(None, "HTTP") == "http" and protocol_for_url("http://h:8000", "Http") == "http"
    assert InferSpec(name="m", protocol="gRPC").protocol == "grpc"
    assert PerfSpec(model="m", url="h:8000", protocol="HTTP").protocol == "http"
    for bad in ("tcp", 5):
        with pytest.raises(TritongenError, match="is not supported: use grpc or http"):
            _check_protocol(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_server_is_a_quick_clean_error(protocol):
    (port,) = free_ports(1)
    started = time.monotonic()
    with pytest.raises(TritongenError) as err:
        infer_from_arrays(
            f"127.0.0.1:{port}", "double", {"X": np.ones((1, 4), np.float32)}, protocol=protocol, timeout_s=30
        )
    assert time.monotonic() - started < 5
    assert f"no Triton server answers at 127.0.0.1:{port} over {protocol}" in str(err.value)
    assert "tritongen serve" in err.value.fix


# --------------------------------------------------------------------------------------------- real server


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_round_trip(tiny_server, protocol):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = infer_from_arrays(url_for(tiny_server, protocol), "double", {"X": x}, protocol=protocol)
    assert list(out) == ["Y"]
    np.testing.assert_array_equal(out["Y"], x * 2 + 1)
    assert out["Y"].dtype == np.float32


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_string_tensors(tiny_server, protocol):
    text = np.array(["héllo", "triton", ""])  # a str array; bytes and object arrays work the same
    out = infer_from_arrays(
        url_for(tiny_server, protocol), "env_probe", {"TEXT": text}, protocol=protocol, outputs=["UPPER"]
    )
    assert list(out) == ["UPPER"]
    assert [v.decode() for v in out["UPPER"]] == ["HÉLLO", "TRITON", ""]


def test_a_servers_address_knows_its_protocol_and_reads_as_host_port():
    """RunningServer.http_url is text ("127.0.0.1:8000") that a spec without a protocol speaks HTTP to (it spoke gRPC
    to the HTTP port, and failed)."""
    import copy
    import pickle

    from tritongen.client import ServerAddress
    from tritongen.infer import InferSpec
    from tritongen.perf import PerfSpec

    http = ServerAddress("127.0.0.1:8000", "http")
    assert http == "127.0.0.1:8000" and f"{http}" == "127.0.0.1:8000" and http.rpartition(":")[2] == "8000"
    assert copy.deepcopy(http).protocol == pickle.loads(pickle.dumps(http)).protocol == "http"
    assert protocol_for_url(http, None) == "http" and protocol_for_url(str(http), None) == "grpc"
    assert InferSpec(name="m", url=http).protocol == "http" and PerfSpec(model="m", url=http).protocol == "http"
    assert InferSpec(name="m", url=ServerAddress("127.0.0.1:8001", "grpc")).protocol == "grpc"
    with pytest.raises(TritongenError) as err:
        PerfSpec(model="m", url=http, protocol="grpc")
    assert err.value.message == (
        "--url 127.0.0.1:8000 is the server's HTTP port but --protocol is grpc: "
        "pass --protocol http, or --url host:port of the server's gRPC port"
    )


@pytest.mark.server
def test_a_running_servers_http_url_is_spoken_to_over_http_from_python(tiny_server, tmp_path):
    import tritongen

    np.savez(tmp_path / "x.npz", X=np.ones((2, 4), np.float32))
    result = tritongen.infer("double", url=tiny_server.http_url, input_file=tmp_path / "x.npz", repo=tmp_path)
    np.testing.assert_array_equal(result.outputs["Y"], np.full((2, 4), 3.0, np.float32))
    run = tritongen.perf(
        "double",
        url=tiny_server.http_url,
        concurrency=1,
        duration_s=0.3,
        warmup_s=0,
        input_data=tmp_path / "x.npz",
        repo=None,
    )
    assert run.protocol == "http" and run.points[0].requests > run.points[0].error_count


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_other_protocols_port_is_named_as_such(tiny_server, protocol):
    """A request over one protocol to the other's port says a server answers there over the other protocol
    (not that no server answers, or that it rejected the request)."""
    other = "http" if protocol == "grpc" else "grpc"
    wrong = url_for(tiny_server, other)
    with pytest.raises(TritongenError) as err:
        infer_from_arrays(wrong, "double", {"X": np.ones((1, 4), np.float32)}, protocol=protocol, timeout_s=10)
    assert f"over {protocol}, but one answers there over {other}" in err.value.problem
    shown = {"grpc": "gRPC", "http": "HTTP"}[protocol]
    assert err.value.fix == (
        f"pass --url {other}://{wrong} without --protocol (or --url {wrong} --protocol {other}), or keep {shown} and "
        f"point --url at the server's {shown} port (gRPC is usually port 8001, HTTP 8000)"
    )


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_fix_for_the_other_protocols_port_works_as_written(tiny_server, tmp_path, monkeypatch, protocol):
    """`tritongen infer --url http://HOST:GRPC_PORT` suggested `--protocol grpc`, which with that URL is refused
    ("asks for HTTP but --protocol is grpc"). Every way of asking for one protocol at the other's port gets a fix
    whose every alternative, run as written, infers; and so does keeping the protocol at its own port."""
    import re

    from click.testing import CliRunner

    from tritongen.cli import cli

    for name in ("TRITONGEN_URL", "TRITONGEN_GRPC_URL", "TRITONGEN_HTTP_URL"):
        monkeypatch.delenv(name, raising=False)
    np.savez(tmp_path / "x.npz", X=np.arange(8, dtype=np.float32).reshape(2, 4))
    other = "http" if protocol == "grpc" else "grpc"
    wrong, right = url_for(tiny_server, other), url_for(tiny_server, protocol)

    def infer(args):
        base = ["infer", "double", "--input-file", str(tmp_path / "x.npz"), "--repo", str(tmp_path)]
        return CliRunner().invoke(cli, base + args)

    asked = [["--url", f"{protocol}://{wrong}"], ["--url", wrong, "--protocol", protocol]]
    if protocol == "grpc":
        asked.append(["--url", wrong])  # no scheme, no --protocol: gRPC
    fixes = set()
    for args in asked:
        failed = infer(args)
        assert isinstance(failed.exception, TritongenError), (args, failed.output)
        fixes.add(failed.exception.fix)
        assert infer([a.replace(wrong, right) for a in args]).exit_code == 0, args  # keep it, at its own port
    (fix,) = fixes  # one fix, whatever the call looked like
    without = re.search(r"pass --url (\S+) without --protocol", fix)
    given = re.search(r"\(or --url (\S+) --protocol (\w+)\)", fix)
    assert without and given, fix
    for args in (["--url", without.group(1)], ["--url", given.group(1), "--protocol", given.group(2)]):
        followed = infer(args)
        assert followed.exit_code == 0, (args, followed.output, followed.exception)
        assert "Y: float32 [2, 4] [1, 3, 5, 7, 9, 11" in followed.output
        assert protocol_for_url(args[1], args[3] if len(args) > 2 else None) == other


@pytest.mark.server
def test_an_http_url_is_served_over_http(tiny_server, tmp_path):
    """api.infer (tritongen infer --url http://...) speaks HTTP to an http:// URL instead of gRPC."""
    from tritongen import api

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.savez(tmp_path / "x.npz", X=x)
    result = api.infer("double", url=f"http://{tiny_server.http_url}", input_file=tmp_path / "x.npz", repo=tmp_path)
    np.testing.assert_array_equal(result.outputs["Y"], x * 2 + 1)


@pytest.mark.server
def test_an_http_tritongen_url_is_served_over_http(tiny_server, tmp_path, monkeypatch):
    """$TRITONGEN_URL=http://host:port (no --url, no --protocol): tritongen infer speaks HTTP to it."""
    from click.testing import CliRunner

    from tritongen.cli import cli

    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.savez(tmp_path / "x.npz", X=x)
    for name in ("TRITONGEN_GRPC_URL", "TRITONGEN_HTTP_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRITONGEN_URL", f"http://{tiny_server.http_url}")
    result = CliRunner().invoke(
        cli, ["infer", "double", "--input-file", str(tmp_path / "x.npz"), "--repo", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "Y: float32 [2, 4] [1, 3, 5, 7, 9, 11" in result.output
    # --output-file: every output whole (the line shows six values), written where asked; a bad name is refused
    out = tmp_path / "answers.npz"
    saved = CliRunner().invoke(
        cli, ["infer", "double", "--input-file", str(tmp_path / "x.npz"), "--repo", str(tmp_path)]
        + ["--output-file", str(out)]
    )  # fmt: skip
    assert saved.exit_code == 0 and f"outputs saved: {out}" in saved.output, saved.output
    np.testing.assert_array_equal(np.load(out)["Y"], 2 * x + 1)
    # --expected: the answers to one's own inputs against one's own outputs, within --atol/--rtol
    base = ["infer", "double", "--input-file", str(tmp_path / "x.npz"), "--repo", str(tmp_path)]
    np.savez(tmp_path / "want.npz", Y=2 * x + 1 + 1e-6)
    matched = CliRunner().invoke(cli, [*base, "--expected", str(tmp_path / "want.npz")])
    assert matched.exit_code == 0 and "check against the expected outputs given:" in matched.output, matched.output
    assert "MATCH" in matched.output and "|served - expected| <= 0.0001 + 0.001" in matched.output
    np.savez(tmp_path / "off.npz", Y=2 * x + 1.01)
    off = CliRunner().invoke(cli, [*base, "--expected", str(tmp_path / "off.npz")])
    assert isinstance(off.exception, TritongenError) and "MISMATCH" in off.output
    assert f"served outputs differ from --expected {tmp_path / 'off.npz'} beyond tolerance" in off.exception.message
    # a variant (an INT8 build) missing its --expected outputs at these tolerances: that, and the note why
    import importlib

    infer_module = importlib.import_module("tritongen.infer")  # tritongen.infer is the API's function
    built_precision = infer_module._built_precision
    monkeypatch.setattr(infer_module, "_built_precision", lambda model_dir, version=None: "int8")
    variant = CliRunner().invoke(cli, [*base, "--expected", str(tmp_path / "off.npz")])
    assert f"served outputs differ from --expected {tmp_path / 'off.npz'}" in variant.exception.message
    assert "note: this is the build's int8 variant, compared with --atol/--rtol" in variant.output
    monkeypatch.setattr(infer_module, "_built_precision", built_precision)
    loose = CliRunner().invoke(cli, [*base, "--expected", str(tmp_path / "off.npz"), "--atol", "0.02"])
    assert loose.exit_code == 0, loose.output
    np.savez(tmp_path / "named.npz", Z=2 * x)
    unknown = CliRunner().invoke(cli, [*base, "--expected", str(tmp_path / "named.npz")])
    assert isinstance(unknown.exception, TritongenError) and "holds 'Z', which is no output" in str(unknown.exception)
    # a single .npy is the one output's, as a single .npy input is the one input's; a record array is refused
    np.save(tmp_path / "want.npy", 2 * x + 1)
    single = CliRunner().invoke(cli, [*base, "--expected", str(tmp_path / "want.npy")])
    assert single.exit_code == 0 and "MATCH" in single.output, single.output
    np.savez(tmp_path / "records.npz", Y=np.zeros((2, 4), "V4"))
    records = CliRunner().invoke(cli, [*base, "--expected", str(tmp_path / "records.npz")])
    assert isinstance(records.exception, TritongenError), records.output
    assert "holds 'Y' as |V4 values, which no output holds" in str(records.exception)
    refused = CliRunner().invoke(
        cli, ["infer", "double", "--input-file", str(tmp_path / "x.npz"), "--output-file", "o.txt"]
    )
    assert isinstance(refused.exception, TritongenError) and "o.txt is not a .npz file" in refused.exception.message


@pytest.mark.server
def test_perf_from_python_writes_its_report_where_report_dir_says(tiny_server, tmp_path, monkeypatch):
    """tritongen.perf(report_dir=...) writes what perf --report writes (it only checked the folder)."""
    import tritongen

    np.savez(tmp_path / "x.npz", X=np.zeros((2, 4), np.float32))

    def perf(report_dir):
        return tritongen.perf(
            "double",
            url=tiny_server.grpc_url,
            concurrency=1,
            duration_s=0.3,
            warmup_s=0,
            input_data=tmp_path / "x.npz",
            repo=None,
            report_dir=report_dir,
        )

    out = tmp_path / "report"
    assert perf(out).points[0].load == 1
    assert {"report.html", "results.json", "results.csv"} <= {p.name for p in out.iterdir()}
    # The folder is checked before the run; where it cannot take the report after it, the figures are not lost.
    from tritongen.perf import report as report_module

    def refuse(runs, out_dir, title=None, force=False):
        raise TritongenError(f"{out_dir} went read-only", "pass a folder that can be written")

    monkeypatch.setattr(report_module, "report_from_runs", refuse)
    with pytest.raises(TritongenError) as err:
        perf(tmp_path / "again")
    assert err.value.problem.startswith("the run finished, but its report could not be written: ")
    assert "req/s" in err.value.details  # the run's table


@pytest.mark.server
def test_concurrent_requests_are_batched_together(tiny_server):
    requests = [{"X": np.full((1, 4), i, np.float32)} for i in range(64)]
    before = model_statistics(tiny_server.grpc_url, "double")
    responses = infer_concurrently(tiny_server.grpc_url, "double", requests, concurrency=16)
    after = model_statistics(tiny_server.grpc_url, "double")
    for request, response in zip(requests, responses):
        np.testing.assert_array_equal(response["Y"], request["X"] * 2 + 1)
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    print(f"\n64 requests in {executions} executions; batch sizes {after['batch_executions']}")
    assert inferences == 64
    assert executions < inferences  # the dynamic batcher combined requests
    assert max(after["batch_executions"]) > 1


@pytest.mark.server
def test_concurrent_requests_over_http(tiny_server):
    requests = [{"X": np.full((2, 4), i, np.float32)} for i in range(12)]
    responses = infer_concurrently(tiny_server.http_url, "double", requests, protocol="http", concurrency=4)
    assert [r["Y"][0, 0] for r in responses] == [i * 2 + 1 for i in range(12)]
    stats = model_statistics(tiny_server.http_url, "double", protocol="http")
    assert stats["inference_count"] >= 24 and 0 < stats["execution_count"] <= stats["inference_count"]


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_metadata(tiny_server, protocol):
    meta = model_metadata(url_for(tiny_server, protocol), "double", protocol=protocol)
    assert meta["name"] == "double" and meta["platform"] == "python" and meta["max_batch_size"] == 8
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4], "optional": False}]
    assert meta["outputs"] == [{"name": "Y", "datatype": "FP32", "shape": [-1, 4]}]


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "model, inputs, expected",
    [
        ("nope", {"X": np.ones((1, 4), np.float32)}, "has no model 'nope' ready"),
        ("double", {"Z": np.ones((1, 4), np.float32)}, "unexpected inference input 'Z'"),
        ("double", {"X": np.ones((1, 4), np.float64)}, "data-type is 'FP64', but model 'double' expects 'FP32'"),
        ("double", {"X": np.ones((9, 4), np.float32)}, "batch-size must be <= 8"),
    ],
    ids=["unknown-model", "unknown-input", "wrong-dtype", "batch-too-big"],
)
def test_rejected_requests_are_clean_errors(tiny_server, protocol, model, inputs, expected):
    with pytest.raises(TritongenError) as err:
        infer_from_arrays(url_for(tiny_server, protocol), model, inputs, protocol=protocol)
    assert expected in str(err.value)
    assert err.value.fix and "<" not in err.value.fix  # no placeholder left for the user to fill in
    if model == "double" and protocol == "http":
        assert f"GET http://{tiny_server.http_url}/v2/models/double" in err.value.fix


@pytest.mark.server
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_model_name_with_a_typo_gets_the_servers_closest_name(tiny_server, protocol):
    inputs = {"X": np.ones((1, 4), np.float32)}
    with pytest.raises(TritongenError) as err:
        infer_from_arrays(url_for(tiny_server, protocol), "doubel", inputs, protocol=protocol)
    assert "has no model 'doubel' ready" in err.value.problem and err.value.fix.startswith("did you mean 'double'?")
    with pytest.raises(TritongenError) as err:
        infer_from_arrays(url_for(tiny_server, protocol), "zzz", inputs, protocol=protocol)
    assert "did you mean" not in err.value.fix  # nothing close: the fix alone


@pytest.mark.server
def test_statistics_of_unknown_model_is_a_clean_error(tiny_server):
    with pytest.raises(TritongenError, match="has no model 'nope' ready"):
        model_statistics(tiny_server.grpc_url, "nope")


@pytest.mark.parametrize(
    "url", ["127.0.0.1:73537", "127.0.0.1:0", "127.0.0.1:abc", "127.0.0.1:²", "127.0.0.1", ":8001"]
)
def test_a_url_is_host_and_a_port_from_1_to_65535(url):
    from tritongen.client import host_port_from_url

    with pytest.raises(TritongenError, match="is not host:port"):
        host_port_from_url(url)  # 73537 would wrap around to port 8001: another server's


def test_urls_people_write_are_accepted():
    from tritongen.client import host_port_from_url

    assert host_port_from_url("grpc://localhost:8001/") == "localhost:8001"
    assert host_port_from_url("http://[::1]:8000") == "[::1]:8000"
    # the scheme as protocol_for_url reads it (any case): "HTTP://..." was "not host:port with a port from 1 to 65535"
    assert host_port_from_url(" HTTP://127.0.0.1:8000/") == "127.0.0.1:8000"
    from tritongen.perf.spec import PerfSpec

    assert PerfSpec(model="m", url="Grpc://10.0.0.5:8001").resolved_url() == "10.0.0.5:8001"
    assert host_port_from_url("localhost:8000/triton") == "localhost:8000/triton"  # HTTP behind a proxy's path
    with pytest.raises(TritongenError, match="asks for TLS"):
        host_port_from_url("https://triton.example.com:443")  # would go in clear
    for given in ("http://127.0.0.1:8000/v2", "127.0.0.1:8000/v2/models/mlp"):  # Triton's own path: /v2/v2/...
        with pytest.raises(TritongenError) as err:
            host_port_from_url(given)
        assert "names a path of Triton's API" in err.value.problem and "--url 127.0.0.1:8000 " in err.value.fix
    assert host_port_from_url("localhost:8000/proxy/v2x") == "localhost:8000/proxy/v2x"


@contextlib.contextmanager
def _json_server(answer):
    """A real HTTP server on a free loopback port answering every GET and POST with ``answer(path)`` as JSON: what
    Triton never would. Yields its host:port."""
    import http.server
    import json
    import threading

    class NotTriton(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(answer(self.path)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotTriton)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "meta, config",
    [
        ({"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": ["abc"]}]}, {}),
        ({"name": "m", "inputs": [{"datatype": "FP32", "shape": [1]}]}, {}),
        ({"name": "m", "inputs": "abc"}, {}),
        ({"name": "m", "inputs": []}, {"max_batch_size": "x"}),
        ({"name": ["m"], "inputs": []}, {}),
    ],
)
def test_malformed_metadata_from_a_server_is_one_error(meta, config):
    with _json_server(lambda path: config if path.endswith("/config") else meta) as url:
        with pytest.raises(TritongenError, match="answered malformed metadata for model 'm'"):
            model_metadata(url, "m", "http", timeout_s=5)


@pytest.mark.parametrize(
    "index, names",
    [
        ([{"name": "double", "version": "1"}, {"name": "pnet"}, {"name": {"x": 1}}, "junk"], None),  # refused whole
        ([{"name": "double", "version": "1"}, {"name": "pnet"}, {"name": {"x" * 9: 1}}], ["double", "pnet"]),
        ([{"name": "m"}] * 100_001, []),  # past the bound every other index reader keeps: no suggestion
    ],
)
def test_the_served_names_for_a_did_you_mean_are_read_as_bounded_as_the_repository_index(index, names):
    """served_model_names parsed the index itself: no bound on its entries, a dict's text taken for a name."""
    from tritongen.client import served_model_names

    with _json_server(lambda path: index) as url:
        got = served_model_names(url, "http", timeout_s=5)
    assert got == (names or [])


def test_perf_reads_its_urls_as_every_reader_does_and_names_an_environments_bad_one(monkeypatch):
    """--metrics-url HTTP://h:8002/metrics kept its scheme ("nothing answered at http://HTTP://h:8002/metrics"); a bad
    $TRITONGEN_URL was blamed on --url."""
    from tritongen.perf.spec import PerfSpec

    assert PerfSpec(model="m", metrics_url="HTTP://h:8002/metrics/").resolved_metrics_url() == "h:8002"
    monkeypatch.setenv("TRITONGEN_URL", "localhost")
    with pytest.raises(TritongenError) as err:
        PerfSpec(model="m").resolved_url()
    assert err.value.problem.startswith("$TRITONGEN_URL localhost is not host:port")
    monkeypatch.setenv("TRITONGEN_GRPC_URL", "127.0.0.1:8101")
    assert PerfSpec(model="m").resolved_url() == "127.0.0.1:8101"


def test_a_rejected_request_points_at_the_metadata_of_the_server_it_went_to():
    from tritongen.client import _metadata_address

    assert _metadata_address("127.0.0.1:55177", "http", "m") == "http://127.0.0.1:55177/v2/models/m"
    assert _metadata_address("10.0.0.5:8001", "grpc", "m") == "http://10.0.0.5:8000/v2/models/m"
    # gRPC on a port of its own: the HTTP port is not 8000 (which may be another server's), so none is guessed
    assert _metadata_address("127.0.0.1:55178", "grpc", "m") == "/v2/models/m on the server's HTTP port"


@pytest.mark.server
@pytest.mark.parametrize("url_form", ["{}", "http://{}"])
def test_the_metrics_port_is_named_as_such_not_taken_for_the_http_api(tiny_server, url_form):
    # Triton's metrics port answers every path with a 200 (/v2/health/live too), so the liveness probe took it
    # for the HTTP API: the fix said "pass --url http://...:8002", which then failed with "Method Not Allowed"
    from tritongen.client import is_metrics_port

    metrics = tiny_server.metrics_url
    assert is_metrics_port(metrics) and not is_metrics_port(tiny_server.http_url)
    assert not is_metrics_port(tiny_server.grpc_url)
    with pytest.raises(TritongenError) as err:
        infer_from_arrays(url_form.format(metrics), "double", {"X": np.ones((1, 4), np.float32)})
    assert "is Triton's metrics port" in err.value.problem and "gRPC port" in err.value.fix


@pytest.mark.server
@pytest.mark.parametrize(
    "arrays, words",
    [
        ({"X": np.ones(4, np.float32)}, "has shape [4], model 'double' wants [-1, 4]"),
        ({"feats": np.ones((1, 4), np.float32)}, "missing X; unknown feats"),
        ({"X": np.ones((9, 4), np.float32)}, "holds a batch of 9, more than model 'double' takes"),
        ({"X": np.ones((1, 4), np.float64)}, "is FP64, model 'double' wants FP32"),
    ],
)
def test_infer_checks_the_arrays_against_the_served_model_before_sending(tiny_server, tmp_path, arrays, words):
    # the server's own refusals name neither the file nor the inputs the model wants ("batch-size must be <= 8")
    import tritongen

    path = tmp_path / "inputs.npz"
    np.savez(path, **arrays)
    with pytest.raises(TritongenError) as err:
        tritongen.infer("double", url=tiny_server.grpc_url, input_file=path)
    assert words in err.value.problem and str(path) in err.value.problem
    good = tritongen.infer("double", url=tiny_server.grpc_url, inputs={"X": np.ones((8, 4), np.float32)})
    assert good.outputs["Y"].shape == (8, 4)


class _Hostile:
    """A server on 127.0.0.1 (a thread) that answers every request with ``answer(send)``: what a broken or hostile
    server at --url may send."""

    def __init__(self, answer) -> None:
        import socket
        import threading

        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.recv(1 << 16)
                    self.answer(conn.sendall, self.stop)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def _endless(send, stop) -> None:
    send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    while not stop.is_set():
        send(b"x" * (1 << 16))


def _trickle(send, stop) -> None:
    send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
    while not stop.is_set():
        send(b"{")
        time.sleep(0.3)


def _gzip(send, stop) -> None:
    import gzip

    body = gzip.compress(b" " * (8 << 20))  # 8 MiB of spaces in a few KiB
    send(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def _declared_huge(send, stop) -> None:
    send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (3 << 30))
    while not stop.is_set():
        send(b"x" * (1 << 16))
        time.sleep(0.5)  # 3 GiB this way would take 7 hours: refused at the head, not after reading 1 MiB


def _endless_head(send, stop) -> None:
    send(b"HTTP/1.1 200 OK\r\n")
    i = 0
    while not stop.is_set():
        send(b"X-%d: %s\r\n" % (i, b"a" * 100))
        i += 1


def _one_endless_header(send, stop) -> None:
    send(b"HTTP/1.1 200 OK\r\nX-A: ")
    while not stop.is_set():
        send(b"a" * (1 << 16))


def _continues(send, stop) -> None:
    while not stop.is_set():
        send(b"HTTP/1.1 100 Continue\r\n\r\n" * 1000)


def _big_refusal(send, stop) -> None:
    send(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    send(b'{"error": "' + b"A" * (2 << 20) + b'"}')


def _long_refusal(send, stop) -> None:
    body = b'{"error": "' + b"B" * 500_000 + b'"}'
    send(b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    send(body)


@pytest.mark.parametrize(
    "answer, words",
    [
        # an attack session's fake server: headers without end took 2.8 GB in 37 s; a stream of "100 Continue"
        # held infer for good (its reads never yielded to gevent, so no timeout fired); a 50 MB refusal was
        # printed whole
        (_endless_head, r"not an HTTP answer Triton sends: its answer's head is over 64 KiB"),
        (_one_endless_header, r"not an HTTP answer Triton sends: its answer's head is over 64 KiB"),
        (_continues, r"it sent over 8 interim answers \(\"100 Continue\"\) in a row"),
        (_big_refusal, r"refused the request \(HTTP 400\) with an answer over 1 MiB"),
        (_long_refusal, r"BBBB\.\.\. \(500,000 characters\)"),
        (
            _declared_huge,
            r"the server's answer is larger than 1 MiB \(gRPC's limit on a message; it declares 3,221,225,472 bytes\)",
        ),
        (_endless, "the server's answer is larger than 1 MiB"),  # it was read whole: 19 GB before the kill
        (_trickle, "timed out after 1.5 s"),  # a byte every 0.3 s held a request for hours (each read has a timeout)
        (_gzip, "compressed answer that was not asked for"),  # tritonclient would inflate it, a bomb included
    ],
    ids=[
        "endless-head",
        "endless-header",
        "continues",
        "big-refusal",
        "long-refusal",
        "declared",
        "endless",
        "trickle",
        "gzip",
    ],
)
def test_an_http_answer_is_read_within_a_size_and_a_time(monkeypatch, answer, words):
    import tritongen.client as client

    monkeypatch.setattr(client, "MAX_ANSWER_BYTES", 1 << 20)
    server = _Hostile(answer)
    try:
        started = time.monotonic()
        with pytest.raises(TritongenError, match=words):
            client.infer_from_arrays(server.url, "m", {"x": np.zeros((1, 4), np.float32)}, "http", timeout_s=1.5)
        assert time.monotonic() - started < 10
    finally:
        server.close()


def test_metadata_that_names_another_model_is_refused():
    """perf and tune read the build's samples of the model the metadata names: a server naming
    /secret/private made them read and send that folder's samples."""
    from tritongen.client import _metadata_from_answers

    meta = {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}], "outputs": []}
    assert _metadata_from_answers(meta, {"max_batch_size": 8}, "m")["name"] == "m"
    with pytest.raises(ValueError, match="it names the model '/secret/private'"):
        _metadata_from_answers({**meta, "name": "/secret/private"}, {}, "m")


def test_output_names_and_values_a_server_sends_are_printed_escaped():
    from tritongen.infer import InferResult

    result = InferResult({"\x1b]0;T\x07y": np.array(["\x1b[2Jv"], dtype=object)}, None)
    assert "\x1b" not in result.text() and "\\x1b]0;T\\x07y" in result.text()


@pytest.mark.parametrize("stats", [{"model_stats": [{"inference_count": "abc"}]}, {"model_stats": [[1]]}])
def test_malformed_statistics_are_one_error(stats):
    """Each was a traceback (ValueError, AttributeError) out of perf."""
    import json

    from tritongen.client import model_statistics

    body = json.dumps(stats).encode()

    def answer(send, stop) -> None:
        send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    server = _Hostile(answer)
    try:
        with pytest.raises(TritongenError, match="answered malformed statistics for model 'm'"):
            model_statistics(server.url, "m", "http", timeout_s=5)
    finally:
        server.close()


def test_a_version_policy_that_is_none_is_one_error_before_tune_loads_anything():
    from tritongen.perf.tune_configs import served_policy

    class Server:
        def __init__(self, policy):
            self.policy = policy

        def model_config(self, model):
            return {"version_policy": self.policy}

    assert served_policy(Server({"specific": {"versions": [1]}}), "m") == {"specific": {"versions": [1]}}
    with pytest.raises(TritongenError, match="holds a version policy that is none"):
        served_policy(Server({"bogus": 1}), "m")


def test_one_npy_asks_the_server_for_the_models_metadata_once(tiny_server, tmp_path, monkeypatch):
    """The file is read first (a missing one needs no server); the metadata that names the array and checks it is
    asked once (it was asked twice)."""
    import tritongen
    import tritongen.client as client

    calls = []
    asked = client.model_metadata
    monkeypatch.setattr(client, "model_metadata", lambda *a, **k: calls.append(a) or asked(*a, **k))
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    result = tritongen.infer("double", url=tiny_server.grpc_url, input_file=tmp_path / "x.npy")
    assert result.outputs["Y"].shape == (2, 4) and len(calls) == 1
    with pytest.raises(TritongenError, match="does not exist"):
        tritongen.infer("double", url="127.0.0.1:1", input_file=tmp_path / "missing.npy")


def test_expected_outputs_without_inputs_are_refused_before_anything_is_sent(tmp_path):
    from tritongen.infer import InferSpec, infer_model

    np.savez(tmp_path / "want.npz", Y=np.zeros((1, 4), np.float32))
    with pytest.raises(TritongenError, match="--expected holds the outputs of --input-file's inputs"):
        infer_model(InferSpec(name="double", expected=tmp_path / "want.npz", url="127.0.0.1:9"))
    with pytest.raises(TritongenError, match="--atol/--rtol set the tolerances of --expected, which is not given"):
        InferSpec(name="double", check=True, atol=100.0)
    with pytest.raises(TritongenError, match="a tolerance is negative"):
        InferSpec(name="double", expected=tmp_path / "want.npz", atol=-1.0)
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(TritongenError, match="empty.npz holds no arrays"):
        infer_model(InferSpec(name="double", input_file=tmp_path / "want.npz", expected=tmp_path / "empty.npz"))
    with pytest.raises(TritongenError, match="--expected is not compared with --sequence"):
        infer_model(InferSpec(name="vad", sequence=True, input_file=tmp_path / "a.npy", expected=tmp_path / "want.npz"))


@pytest.mark.parametrize("precision, noted", [("int8", True), ("fp32", False)])
def test_a_variant_that_misses_expected_outputs_at_fp32_tolerances_is_told_of_the_guards_bar(precision, noted):
    """An INT8 model compared with --expected at the default 1e-4/1e-3 read MISMATCH and nothing said why."""
    from tritongen.infer import InferResult
    from tritongen.parity import ParityReport, compare_arrays

    got, want = np.array([1.0, 2.0], np.float32), np.array([1.01, 2.0], np.float32)
    report = ParityReport(1e-4, 1e-3, (compare_arrays("served", "y", got, want, 1e-4, 1e-3),), "served", "expected")
    text = InferResult({"y": got}, report, precision=precision).text()
    assert "MISMATCH" in text
    assert ("note: this is the build's int8 variant, compared with --atol/--rtol" in text) is noted


def test_outputs_left_out_of_expected_are_named_not_passed_over():
    """An --expected file without one of the model's outputs read MATCH with that output's row simply missing."""
    from tritongen.infer import InferResult
    from tritongen.parity import ParityReport, compare_arrays

    got = np.array([1.0, 2.0], np.float32)
    report = ParityReport(1e-4, 1e-3, (compare_arrays("served", "prob", got, got, 1e-4, 1e-3),), "served", "expected")
    text = InferResult({"prob": got, "box": got}, report, uncompared=("box",)).text()
    assert "MATCH" in text and "not compared (not in --expected): box; the verdict is of the outputs above" in text
    assert "not compared" not in InferResult({"prob": got}, report).text()


def test_the_built_precision_is_read_from_the_served_versions_manifest(tmp_path):
    from tritongen.infer import _built_precision
    from tritongen.manifest import new_manifest, write_manifest

    model_dir = tmp_path / "m"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "2").mkdir()
    write_manifest(model_dir, 1, new_manifest(1, {}, precision={"precision": "int8"}))
    write_manifest(model_dir, 2, new_manifest(2, {}, precision={"precision": "fp32"}))
    assert _built_precision(model_dir, 1) == "int8"
    assert _built_precision(model_dir) == "fp32"  # the newest version's
    assert _built_precision(model_dir, 3) == "fp32"  # no manifest says: nothing to add


@pytest.mark.parametrize(
    "protocol, status, words",
    [
        ("grpc", "StatusCode.UNAVAILABLE", "version 3 is not at ready state"),  # loaded once, unloaded since
        ("http", "400", "version 3 is not at ready state"),
        ("grpc", "StatusCode.NOT_FOUND", "version 3 is not found"),  # built, never loaded
        ("http", "404", "version 3 is not found"),
    ],
)
def test_a_built_version_the_server_has_not_loaded_is_named_as_such(monkeypatch, protocol, status, words):
    """infer --model-version 3 of a version built but not loaded read 'refused the request ... send the admin
    header': the wrong diagnosis and a fix that does not help."""
    import importlib

    from tritonclient.utils import InferenceServerException

    client = importlib.import_module("tritongen.client")
    monkeypatch.setattr(client, "server_live", lambda *a, **k: True)
    monkeypatch.setattr(client, "is_metrics_port", lambda *a, **k: False)
    monkeypatch.setattr(client, "model_metadata", lambda *a, **k: {"versions": ["1"]})
    error = InferenceServerException(f"Request for unknown model: 'cls0' {words}", status=status)
    err = client.classify_error(error, "127.0.0.1:1", protocol, "cls0", 5.0)
    assert err.problem == "version 3 of model 'cls0' is not loaded on the server at 127.0.0.1:1 (loaded: 1)"
    assert "tritongen rollout REPO cls0 --to-version 3" in err.fix and "admin header" not in err.fix


def _page(body: bytes):
    def answer(send, stop) -> None:
        send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    return answer


def _slow_head(send, stop) -> None:
    send(b"HTTP/1.1 200 OK\r\n")
    while not stop.is_set():
        send(b"X")
        time.sleep(0.2)


def _many_headers(send, stop) -> None:
    send(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(200)) + b"\r\n")


GAUGES = b"# TYPE nv_cpu_utilization gauge\nnv_cpu_utilization 0.5\n"


@pytest.mark.parametrize(
    "answer, expected",
    [
        (_page(GAUGES), {"nv_cpu_utilization": 0.5}),
        # an attack session: a head sent a byte a second held perf for good (each read had its own timeout);
        # 200 headers or a bad status line ended perf with a traceback after the whole measurement
        (_slow_head, {}),
        (_many_headers, {}),
        # two samples of 1e308 summed to infinity, written into a results.json perf's own reader refused
        (_page(GAUGES + b'nv_cpu_utilization{a="b"} 1e308\nnv_cpu_utilization{a="c"} 1e308\n'), {}),
        (_page(GAUGES + b"nv_gpu_utilization 1e300\n"), {"nv_cpu_utilization": 0.5}),
        # a page of more samples than any server's (2 million took 38 s and 1.3 GB to parse)
        (_page(GAUGES + b"".join(b'nv_cpu_utilization{a="%d"} 0\n' % i for i in range(200_001))), {}),
    ],
    ids=["gauges", "slow-head", "many-headers", "sum-to-infinity", "past-the-ceiling", "too-many-samples"],
)
def test_a_metrics_page_is_read_within_a_time_and_its_figures_within_bounds(answer, expected):
    from tritongen.client import metrics_from_url

    server = _Hostile(answer)
    try:
        started = time.monotonic()
        assert metrics_from_url(server.url, ["nv_cpu_utilization", "nv_gpu_utilization"], timeout_s=1.5) == expected
        assert time.monotonic() - started < 60  # the slow head held it for good
    finally:
        server.close()


def test_a_metrics_port_that_answers_a_byte_at_a_time_is_not_taken_for_one():
    """infer's error classification asks whether --url is the metrics port: a slow page held it for good."""
    from tritongen.client import is_metrics_port

    def answer(send, stop) -> None:
        send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n# HELP nv_")
        while not stop.is_set():
            send(b"X")
            time.sleep(0.2)

    server = _Hostile(answer)
    try:
        assert is_metrics_port(server.url, timeout_s=1.0) is False
    finally:
        server.close()
    server = _Hostile(_page(b"# HELP nv_inference_count x\n" + GAUGES))
    try:
        assert is_metrics_port(server.url, timeout_s=1.0) is True
    finally:
        server.close()


def _json_answer(value):
    import json

    return _page(json.dumps(value).encode())


@pytest.mark.parametrize(
    "index, ready, words",
    [
        ([{"name": "m", "version": "1", "state": "READY"}], [1], None),
        # a version "²" passes str.isdigit() and int() refuses it; one of 4,000 digits named a rollout report folder
        # the OS refused, and the half-written rollout record then blocked every later run
        (
            [{"name": "m", "version": v, "state": "READY"} for v in ("²", "9" * 4000, "2", "9223372036854775808")],
            [2],
            None,
        ),
        ([["m", "1"]], None, "answered its repository index with something other than a list of models"),
        ("m", None, "answered its repository index with something other than a list of models"),
    ],
    ids=["plain", "versions-out-of-range", "entries-not-objects", "a-string"],
)
def test_a_repository_index_is_held_to_what_triton_sends(index, ready, words):
    from tritongen.client import Triton

    server = _Hostile(_json_answer(index))
    try:
        with Triton(server.url, "http", timeout_s=5) as triton:
            if words is None:
                assert triton.ready_versions("m") == ready
            else:
                with pytest.raises(TritongenError, match=words):
                    triton.ready_versions("m")
    finally:
        server.close()


@pytest.mark.parametrize(
    "stats, words",
    [
        ({"model_stats": [{"version": "1", "inference_count": "abc"}]}, r"counts \('abc' is not a count\)"),
        ({"model_stats": [{"version": "1", "inference_stats": [1]}]}, r"counts \(list where an object"),
        ({"model_stats": ["x"]}, "something other than Triton's model_stats"),
        ([1], "something other than Triton's model_stats"),
    ],
)
def test_version_statistics_are_held_to_what_triton_sends(stats, words):
    """Each was a traceback out of rollout's gate (ValueError, AttributeError), after the candidate was loaded."""
    from tritongen.client import Triton

    server = _Hostile(_json_answer(stats))
    try:
        with Triton(server.url, "http", timeout_s=5) as triton:
            with pytest.raises(TritongenError, match=words):
                triton.version_statistics("m")
    finally:
        server.close()


def test_an_http_client_whose_construction_was_interrupted_closes_quietly():
    """Ctrl-C while tritonclient's HTTP client connected (serve stopped while it boots): its __del__ read a
    '_closed' its __init__ never set, and Python printed that traceback on stderr."""
    import gc
    import sys

    import tritonclient.http

    from tritongen.client import _bounded_http_client

    cls = _bounded_http_client(tritonclient.http)
    half_built = cls.__new__(cls)  # as if __init__ was interrupted before tritonclient's own ended
    half_built.close()  # raised AttributeError: 'BoundedClient' object has no attribute '_closed'
    seen = []
    old_hook, sys.unraisablehook = sys.unraisablehook, seen.append
    try:
        del half_built
        gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert seen == []
