"""A torch.export archive builds without --input: its inputs, batch axis, bounds and fixed arguments are read from
its program (tritongen/export_input.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import run_cli
from tritongen.errors import TritongenError
from tritongen.spec import build_spec_from_options

Dim = torch.export.Dim


class Masked(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.proj(x * mask.float()).sum(1)


class Scaled(torch.nn.Module):
    def forward(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return x * n


class Nested(torch.nn.Module):
    def forward(self, x: torch.Tensor, d: dict) -> torch.Tensor:
        return x + d["a"]


class Cumsum(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.cumsum(1)


def _save(tmp_path, name, model, args, shapes=None):
    path = tmp_path / name
    torch.export.save(torch.export.export(model.eval(), args, dynamic_shapes=shapes), str(path))
    return path


def _masked(tmp_path, dynamic=True):
    args = (torch.randn(2, 3, 4), torch.ones(2, 3, 4, dtype=torch.int64))
    batch, seq = Dim("batch"), Dim("seq")
    shapes = {"x": {0: batch, 1: seq}, "mask": {0: batch, 1: seq}} if dynamic else None
    return _save(tmp_path, "masked.pt2" if dynamic else "static.pt2", Masked(), args, shapes)


def _io(spec):
    return [(t.name, t.dtype, t.dims) for t in spec.inputs]


def test_inputs_dtypes_and_the_batch_axis_come_from_the_program(tmp_path):
    spec = build_spec_from_options(_masked(tmp_path))
    assert _io(spec) == [("x", "FP32", (-1, 4)), ("mask", "INT64", (-1, 4))]
    assert spec.max_batch_size == 8 and spec.inputs_from == "program"
    assert spec.dim_ranges == ()  # unbounded in the program: the default range applies
    assert build_spec_from_options(_masked(tmp_path), max_batch_size=32).max_batch_size == 32
    unbatched = build_spec_from_options(_masked(tmp_path), max_batch_size=0)
    assert _io(unbatched)[0] == ("x", "FP32", (-1, -1, 4)) and unbatched.max_batch_size == 0


def test_declared_inputs_win_over_the_program(tmp_path):
    spec = build_spec_from_options(_masked(tmp_path), inputs=["x:FP32:3,4", "mask:INT64:3,4"])
    assert spec.inputs_from == "flags" and spec.inputs[0].dims == (3, 4)


def test_a_program_exported_without_a_dynamic_batch_is_built_unbatched(tmp_path):
    static = _masked(tmp_path, dynamic=False)
    spec = build_spec_from_options(static)
    assert _io(spec) == [("x", "FP32", (2, 3, 4)), ("mask", "INT64", (2, 3, 4))] and spec.max_batch_size == 0
    with pytest.raises(TritongenError) as err:
        build_spec_from_options(static, max_batch_size=4)
    assert "fixes its first dimension at 2" in err.value.message
    assert "Dim('batch')" in err.value.fix and "--max-batch-size 0" in err.value.fix


def test_the_programs_bounds_become_the_batch_size_and_dim_ranges(tmp_path):
    shapes = {"x": {0: Dim("b", min=1, max=4), 1: Dim("s", min=1, max=16)}}
    bounded = _save(tmp_path, "bounded.pt2", Cumsum(), (torch.randn(2, 8),), shapes)
    spec = build_spec_from_options(bounded)
    assert _io(spec) == [("x", "FP32", (-1,))] and spec.max_batch_size == 4
    assert [r.text for r in spec.dim_ranges] == ["x:0:1:16:16"]
    with pytest.raises(TritongenError, match="above the exported program's largest batch, 4"):
        build_spec_from_options(bounded, max_batch_size=8)
    given = build_spec_from_options(bounded, dim_ranges=["x:0:2:4:8"])
    assert [r.text for r in given.dim_ranges] == ["x:0:2:4:8"]


def test_a_program_that_needs_batches_of_two_is_refused(tmp_path):
    path = _save(tmp_path, "two.pt2", Cumsum(), (torch.randn(3, 8),), {"x": {0: Dim("b", min=2)}})
    with pytest.raises(TritongenError) as err:
        build_spec_from_options(path)
    assert "batches of at least 2" in err.value.message and "min=1" in err.value.fix


def test_nested_arguments_ask_for_declared_inputs(tmp_path):
    path = _save(tmp_path, "nested.pt2", Nested(), (torch.randn(2, 3), {"a": torch.randn(2, 3)}))
    with pytest.raises(TritongenError) as err:
        build_spec_from_options(path)
    assert "nested" in err.value.message and "--input" in err.value.fix


def test_build_reads_the_inputs_and_passes_the_gate(tmp_path, capsys):
    path = _masked(tmp_path)
    code, out, err = run_cli(["build", str(path), "--repo", str(tmp_path / "repo"), "--target", "onnxruntime"], capsys)
    assert code == 0, err
    assert "inputs read from the exported program: x FP32[-1, 4], mask INT64[-1, 4] (batched" in err
    assert "batch 8" in out and "input  mask" in out
    config = (tmp_path / "repo" / "masked" / "config.pbtxt").read_text()
    assert "TYPE_INT64" in config and "max_batch_size: 8" in config
    import onnx

    graph = onnx.load(str(tmp_path / "repo" / "masked" / "1" / "model.onnx"), load_external_data=False).graph
    dims = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*graph.input, *graph.output]
    }
    assert dims["x"][0] == dims["mask"][0] == dims["output"][0] == "batch"  # not the exporter's s31
    assert dims["x"][1] == dims["mask"][1] != "batch" and dims["x"][2] == 4  # the shared sequence symbol kept


def test_a_number_the_program_fixed_is_passed_for_the_client(tmp_path, capsys):
    """torch.export keeps ``n=3`` among the program's inputs and its module still takes it: the build passes it."""
    path = _save(tmp_path, "scaled.pt2", Scaled(), (torch.randn(2, 3), 3))
    repo = tmp_path / "repo"
    code, out, err = run_cli(["build", str(path), "--repo", str(repo), "--target", "onnxruntime"], capsys)
    assert code == 0, err
    assert "forward() arguments fixed in the exported program: n=3" in err
    import onnxruntime as ort

    session = ort.InferenceSession(str(repo / "scaled" / "1" / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["x"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x * 3)
    code, _, err = run_cli(["build", str(path), "--repo", str(repo), "--force", "--const", "n=4"], capsys)
    assert code != 0 and "Traceback" not in err
    assert "fixed its number arguments at export (n=3)" in err and "drop --const" in err
