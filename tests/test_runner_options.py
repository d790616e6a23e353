"""The generated ONNX Runtime runners' session options: intra-op spinning off unless the config asks for it."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tritongen.templates import template_dir

SPINNING = "session.intra_op.allow_spinning"


def _runner(name: str, monkeypatch):
    fake = types.ModuleType("triton_python_backend_utils")
    fake.triton_string_to_numpy = lambda t: {"TYPE_FP32": np.float32}[t]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    spec = importlib.util.spec_from_file_location(f"runner_{name}", template_dir() / "python" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TritonPythonModel()


def _repo(tmp_path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["output"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "1").mkdir()
    onnx.save(model, str(tmp_path / "1" / "model.onnx"))
    return tmp_path


def _initialized(tmp_path: Path, monkeypatch, parameters: dict[str, str]):
    """The ONNX runner initialized as Triton would, on an Identity model, with these config parameters."""
    config = {
        "max_batch_size": 8,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
        "output": [{"name": "output", "data_type": "TYPE_FP32", "dims": [4]}],
        "parameters": {k: {"string_value": v} for k, v in parameters.items()},
    }
    model = _runner("onnx_runner.py", monkeypatch)
    model.initialize(
        {"model_config": json.dumps(config), "model_repository": str(_repo(tmp_path)), "model_version": "1"}
    )
    return model


@pytest.mark.parametrize(
    ("parameters", "expected"), [({}, "0"), ({"intra_op_spinning": "1"}, "1"), ({"intra_op_spinning": "yes"}, "0")]
)
def test_onnx_runner_turns_spinning_off_unless_the_config_asks(tmp_path, monkeypatch, parameters, expected):
    model = _initialized(tmp_path, monkeypatch, parameters)
    assert model.session.get_session_options().get_session_config_entry(SPINNING) == expected
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(model._run({"x": x})[0], x)  # the session still runs


@pytest.mark.parametrize(
    ("allowed", "parameters", "expected"),
    [
        ({0}, {}, 1),  # pinned to one CPU of many: a pool of one
        ({0, 1, 2}, {}, 3),
        ("all", {}, 0),  # every CPU: ONNX Runtime's own choice (0)
        ({0}, {"intra_op_thread_count": "4"}, 4),  # the config's count wins
    ],
)
def test_onnx_runner_sizes_its_pool_by_the_cpus_it_may_use(tmp_path, monkeypatch, allowed, parameters, expected):
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)) if allowed == "all" else allowed)
    model = _initialized(tmp_path, monkeypatch, parameters)
    assert model.session.get_session_options().intra_op_num_threads == expected
