"""tritongen.server.blas: the Python-backend stubs start with OPENBLAS_NUM_THREADS=1 unless told otherwise."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, free_ports, write_model
from tritongen.cli import cli
from tritongen.errors import TritongenError
from tritongen.server import ServeSpec, server_from_repository
from tritongen.server.blas import USER_CHOICE_VARIABLES, blas_environ


def test_one_thread_is_set_when_the_environment_does_not_choose():
    env = {"PATH": "/bin", "LD_PRELOAD": "/l/libjemalloc.so.2"}
    out, line = blas_environ(env, 1)
    assert out == {**env, "OPENBLAS_NUM_THREADS": "1"} and line == "OPENBLAS_NUM_THREADS=1"
    assert "OPENBLAS_NUM_THREADS" not in env  # not changed in place
    assert blas_environ(env, 4)[0]["OPENBLAS_NUM_THREADS"] == "4"
    out, line = blas_environ(env, 0)
    assert out == env and "numpy's default" in line


@pytest.mark.parametrize("name", USER_CHOICE_VARIABLES)
def test_the_users_own_choice_is_kept(name):
    env = {"PATH": "/bin", name: "3"}
    out, line = blas_environ(env, 1)
    assert out == env and line == f"{name}=3 (from the environment)"
    assert blas_environ({name: ""}, 1)[0]["OPENBLAS_NUM_THREADS"] == "1"  # an empty value chooses nothing


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_a_count_that_is_not_a_whole_number_from_0_is_one_clear_error(tmp_path, bad):
    with pytest.raises(TritongenError, match="stub BLAS threads") as e:
        ServeSpec(repo=tmp_path, stub_blas_threads=bad)
    assert "--stub-blas-threads" in e.value.fix


def test_the_cli_flag_refuses_a_negative_count(tmp_path):
    result = CliRunner().invoke(cli, ["serve", str(tmp_path), "--stub-blas-threads", "-1"])
    assert result.exit_code != 0 and "--stub-blas-threads" in result.output


def _stub_environ(server_pid: int) -> dict[str, str]:
    stubs = [p for p in psutil.Process(server_pid).children(recursive=True) if "triton_python_backend_stub" in p.name()]
    assert stubs, "no Python-backend stub is running"
    raw = Path(f"/proc/{stubs[0].pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


@pytest.mark.server
@pytest.mark.parametrize(("user_value", "threads", "expected"), [(None, 1, "1"), ("3", 1, "3"), (None, 0, None)])
def test_the_real_stub_runs_with_the_blas_threads_reported(
    tmp_path, server_install, monkeypatch, user_value, threads, expected
):
    for name in USER_CHOICE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if user_value is not None:
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", user_value)
    write_model(tmp_path, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    http, grpc, metrics = free_ports(3)
    spec = ServeSpec(repo=tmp_path, http_port=http, grpc_port=grpc, metrics_port=metrics, stub_blas_threads=threads)
    with server_from_repository(spec) as server:
        stub_env = _stub_environ(server.pid)
        assert stub_env.get("OPENBLAS_NUM_THREADS") == expected
        if expected is None:
            assert server.stub_blas.startswith("numpy's default")
        else:
            assert server.stub_blas.startswith(f"OPENBLAS_NUM_THREADS={expected}")
