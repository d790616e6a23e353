"""Shared fixtures: a tiny Python-backend model repository and one real tritonserver serving it per session."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

# Y = X * 2 + 1, computed once over every request of a dynamic batch.
DOUBLE_CONFIG = """\
name: "double"
backend: "python"
max_batch_size: 8
input [{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }]
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [{ kind: KIND_CPU count: 1 }]
"""

DOUBLE_MODEL = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, "X").as_numpy() for r in requests]
        ys = np.concatenate(xs) * 2 + 1  # the whole batch in one go
        splits = np.cumsum([len(x) for x in xs])[:-1]
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", y.astype(np.float32))]) for y in np.split(ys, splits)]
"""

# Strings in and out; reports which Python, numpy and onnxruntime the stub runs, to prove it uses this venv.
ENV_CONFIG = """\
name: "env_probe"
backend: "python"
max_batch_size: 0
input [{ name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] }]
output [
  { name: "UPPER" data_type: TYPE_STRING dims: [ -1 ] },
  { name: "INFO" data_type: TYPE_STRING dims: [ 4 ] }
]
instance_group [{ kind: KIND_CPU count: 1 }]
"""

ENV_MODEL = """\
import sys

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        info = np.array([sys.version.encode(), np.__file__.encode(), onnxruntime.__version__.encode(),
                         onnxruntime.__file__.encode()], dtype=object)
        responses = []
        for r in requests:
            text = pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy()
            upper = np.array([t.decode().upper().encode() for t in text.reshape(-1)], dtype=object).reshape(text.shape)
            tensors = [pb_utils.Tensor("UPPER", upper), pb_utils.Tensor("INFO", info)]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
"""

BROKEN_MODEL = """\
import numpy as np
import tritongen_no_such_module  # noqa: F401


class TritonPythonModel:
    def execute(self, requests):
        return []
"""


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``tritongen ARGS`` in this process: (exit code, stdout, stderr)."""
    from tritongen.cli import main as cli_main

    try:
        cli_main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def write_model(repo: Path, name: str, config: str, model_py: str) -> Path:
    """Write ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/model.py``."""
    folder = repo / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config)
    (folder / "1" / "model.py").write_text(textwrap.dedent(model_py))
    return folder


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that are free on ``host`` right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class LoopbackServer:
    """An asyncio server on a free port of 127.0.0.1 for ``async with``; subclasses define
    ``handle(reader, writer)``."""

    async def __aenter__(self):
        import asyncio

        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


# 50 ms per execution whatever the batch. The batcher fires as soon as 8 requests are there, or after 20 ms: a
# client slowed down by a busy machine (re-sending 8 requests takes it longer) still fills one batch. So up to 8
# requests in flight are answered in 50-70 ms, and more wait for a second execution (>= 100 ms). A 95 ms p99
# bound is therefore broken between concurrency 8 and 16, with >= 25 ms of room below it for scheduling noise
# (which only ever adds latency) and none needed above it.
SLEEPY_CONFIG = """\
name: "sleepy"
backend: "python"
max_batch_size: 8
input [{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }]
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [{ kind: KIND_CPU count: 1 }]
"""


# The same model without the batcher: each request is its own execution, so a closed loop's latency is set by the
# queue of requests ahead of it, not by when a batch fills (the rollout gate's and the live autoscaling test's).
SLEEPY_UNBATCHED_CONFIG = """\
name: "sleepy"
backend: "python"
max_batch_size: 8
input [{ name: "X" data_type: TYPE_FP32 dims: [ 4 ] }]
output [{ name: "Y" data_type: TYPE_FP32 dims: [ 4 ] }]
instance_group [{ kind: KIND_CPU count: 1 }]
"""


def sleepy_model(sleep_s: float) -> str:
    """A Python-backend model.py that answers every execution after ``sleep_s`` (latency by design, not timing)."""
    return f"""\
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep({sleep_s!r})
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X").as_numpy())])
                for r in requests]
"""


SLEEPY_MODEL = sleepy_model(0.05)


@pytest.fixture(scope="session")
def server_install():
    """The tritonserver these tests boot; skips when none is installed."""
    from tritongen.errors import TritongenError
    from tritongen.server import find_server_binary

    try:
        return find_server_binary()
    except TritongenError as e:
        pytest.skip(f"no tritonserver: {e}")


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("tiny") / "repo"
    write_model(repo, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    write_model(repo, "env_probe", ENV_CONFIG, ENV_MODEL)
    return repo


@pytest.fixture(scope="session")
def tiny_server(server_install, tiny_repository):
    """One server for the session, on free ports of 127.0.0.1 (never the defaults, which others may hold)."""
    from tritongen.server import ServeSpec, server_from_repository

    http, grpc, metrics = free_ports(3)
    spec = ServeSpec(repo=tiny_repository, http_port=http, grpc_port=grpc, metrics_port=metrics, ready_timeout_s=120)
    server = server_from_repository(spec)
    yield server
    server.stop(timeout_s=20)
