"""Issue 14: rollout/rollback with ``--header`` against a server whose model-repository protocol is restricted,
over gRPC and over HTTP, through the real CLI entry point on a real Triton (explicit model control).

The server is started with ``--grpc-restricted-protocol`` / ``--http-restricted-api`` for ``model-repository``
and the other admin APIs (``ServeSpec(restricted=True)``: the repository index, load and unload that a
rollout uses): without the key the command fails with one
``error:`` line and the live version keeps serving; with ``--header`` it rolls out and back.
"""

from __future__ import annotations

import pytest

from tests.conftest import free_ports
from tests.test_bad_input import _run

pytestmark = [pytest.mark.server, pytest.mark.slow]

torch = pytest.importorskip("torch")

NAME = "small"


@pytest.fixture(scope="module")
def world(tmp_path_factory, server_install):
    import tritongen
    from tritongen.server import ServeSpec, server_from_repository

    root = tmp_path_factory.mktemp("rollout_protocols")
    repo = root / "repo"
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    example = {"x": torch.randn(2, 4)}
    tritongen.build(net, example_inputs=example, name=NAME, repo=repo)
    http, grpc, metrics = free_ports(3)
    spec = ServeSpec(
        repo=repo,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        model_control="explicit",
        restricted=True,  # --grpc-restricted-protocol / --http-restricted-api with a fresh token
    )
    server = server_from_repository(spec)
    try:
        tritongen.build(net, example_inputs=example, name=NAME, repo=repo, new_version=True)
        yield {"repo": repo, "root": root, "server": server}
    finally:
        server.stop(timeout_s=30)


def _ready(world) -> list[int]:
    from tritongen.client import Triton

    with Triton(world["server"].grpc_url, "grpc", headers=world["server"].admin_headers("grpc")) as triton:
        return triton.ready_versions(NAME)


def _command(world, action: str, protocol: str, headers: list[str], *extra: str) -> tuple[int, str, str]:
    url = world["server"].grpc_url if protocol == "grpc" else world["server"].http_url
    argv = [action, str(world["repo"]), NAME, "--url", url, "--protocol", protocol, *extra]
    for header in headers:
        argv += ["--header", header]
    return _run(argv)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_restricted_server_refuses_a_rollout_without_its_header_and_takes_one_with_it(world, protocol):
    ((key, value),) = world["server"].admin_headers(protocol).items()
    header = f"{key}={value}"
    out_dir = str(world["root"] / f"report-{protocol}")
    gate = ("--to-version", "2", "--out", out_dir, "--max-p99-ratio", "1000")  # latency: not this test's point
    record = world["repo"] / NAME / "tritongen-rollout.json"
    before = record.read_bytes() if record.exists() else None
    key_file = world["server"].workdir.parent / "admin-key"  # where tritongen's commands on this machine find it
    key_file.rename(key_file.with_name("away"))  # as for a server another user started: no key to find
    try:
        for headers in ([], [f"{key}=wrong"]):
            code, out, err = _command(world, "rollout", protocol, headers, *gate)
            lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
            assert code == 1 and len(lines) == 1 and "Traceback" not in err, (code, out, err)
            assert "refused the request" in lines[0] and "restricted" in lines[0] and "--header" in lines[0], lines[0]
            assert _ready(world) == [1]
            assert (record.read_bytes() if record.exists() else None) == before
    finally:
        key_file.with_name("away").rename(key_file)
    code, out, err = _command(world, "rollout", protocol, [header], *gate)
    assert code == 0, err
    assert "verdict: promote" in out and f"'{NAME}' version 2 now answers every request" in out
    assert _ready(world) == [2]
    code, out, err = _command(world, "rollback", protocol, [])  # no header: the key is found beside the server
    assert code == 0, err
    assert f"rollback: '{NAME}' version 1 now answers every request" in out
    assert _ready(world) == [1]


def test_a_header_that_is_not_name_value_is_refused(world):
    for bad in ("novalue", "=x", "a b=c"):
        code, out, err = _command(world, "rollback", "grpc", [bad], "--to-version", "1")
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert code == 1 and len(lines) == 1 and "is not NAME=VALUE" in lines[0], (bad, err)
