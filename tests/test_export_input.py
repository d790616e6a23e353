"""A torch.export archive builds without --input: its inputs, batch axis, bounds and fixed arguments are read from
its program (tritongen/export_input.py)."""

from __future__ import annotations

import json

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


def test_a_program_that_needs_batches_of_three_is_refused_and_dim_dynamic_is_not(tmp_path):
    path = _save(tmp_path, "three.pt2", Cumsum(), (torch.randn(3, 8),), {"x": {0: Dim("b", min=3)}})
    with pytest.raises(TritongenError) as err:
        build_spec_from_options(path)
    assert "batches of at least 3" in err.value.message
    assert "batch = torch.export.Dim('batch', min=1); dynamic_shapes={'x': {0: batch}}" in err.value.fix
    # torch reports Dim.DYNAMIC (and Dim.AUTO) as 2..inf, its 0/1 specialization; batch 1 still runs
    dynamic = _save(tmp_path, "dynamic.pt2", Cumsum(), (torch.randn(3, 8),), {"x": {0: Dim.DYNAMIC}})
    assert build_spec_from_options(dynamic).max_batch_size == 8


def test_first_dimensions_that_are_no_batch_axis_stay_variable(tmp_path):
    class Cat(torch.nn.Module):
        def forward(self, x, y):
            return torch.cat([x, y], 0)

    class Total(torch.nn.Module):
        def forward(self, x):
            return x.sum(0)

    args = (torch.randn(2, 3), torch.randn(3, 3))
    cat = _save(tmp_path, "cat.pt2", Cat(), args, {"x": {0: Dim("n")}, "y": {0: Dim("m")}})
    spec = build_spec_from_options(cat)
    assert spec.max_batch_size == 0 and _io(spec) == [("x", "FP32", (-1, 3)), ("y", "FP32", (-1, 3))]
    assert "the inputs' first dimensions are different sizes in the program" in spec.inputs_note
    total = _save(tmp_path, "total.pt2", Total(), (torch.randn(2, 3),), {"x": {0: Dim("n")}})
    spec = build_spec_from_options(total)
    assert spec.max_batch_size == 0 and "does not follow the inputs' first dimension" in spec.inputs_note
    with pytest.raises(TritongenError, match="--max-batch-size 8: output .* does not follow"):
        build_spec_from_options(total, max_batch_size=8)


def test_inputs_anywhere_in_the_arguments_are_read_and_a_shared_size_shares_its_range(tmp_path):
    """Keyword, dict and list arguments are inputs too (named as torch.export names them), and a --dim-range given
    for one of two dimensions the program holds equal applies to the other."""

    class Text(torch.nn.Module):
        def forward(self, *, input_ids, attention_mask):
            return (input_ids * attention_mask).sum(1, keepdim=True).float()

    ids = torch.ones(2, 7, dtype=torch.int64)
    batch, seq = Dim("batch"), Dim("seq")
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    path = tmp_path / "text.pt2"
    torch.export.save(
        torch.export.export(Text(), (), kwargs={"input_ids": ids, "attention_mask": ids}, dynamic_shapes=shapes),
        str(path),
    )
    spec = build_spec_from_options(path, dim_ranges=["input_ids:0:1:16:32"])
    assert _io(spec) == [("input_ids", "INT64", (-1,)), ("attention_mask", "INT64", (-1,))]
    assert sorted(r.text for r in spec.dim_ranges) == ["attention_mask:0:1:16:32", "input_ids:0:1:16:32"]
    nested = _save(tmp_path, "nested.pt2", Nested(), (torch.randn(2, 3), {"a": torch.randn(2, 3)}))
    assert [t.name for t in build_spec_from_options(nested).inputs] == ["x", "d_a"]


def test_the_programs_upper_bound_is_kept_unless_max_dim_is_given(tmp_path):
    path = _save(tmp_path, "seq.pt2", Cumsum(), (torch.randn(2, 150),), {"x": {1: Dim("s", min=100, max=200)}})
    assert [r.text for r in build_spec_from_options(path, max_batch_size=0).dim_ranges] == ["x:1:100:100:200"]
    capped = build_spec_from_options(path, max_batch_size=0, max_dynamic_dim=128)
    assert [r.text for r in capped.dim_ranges] == ["x:1:100:100:128"]


def test_inputs_triton_cannot_take_are_refused_in_one_line(tmp_path):
    class Scale(torch.nn.Module):
        def forward(self, x, s):
            return x * s

    scalar = _save(tmp_path, "scalar.pt2", Scale(), (torch.randn(2, 3), torch.tensor(2.0)))
    with pytest.raises(TritongenError) as err:
        build_spec_from_options(scalar)
    assert "input 's' of the exported program in scalar.pt2 is a 0-d (scalar) tensor" in err.value.message
    bf16 = _save(tmp_path, "bf16.pt2", Cumsum(), (torch.randn(2, 3, dtype=torch.bfloat16),))
    with pytest.raises(TritongenError) as err:
        build_spec_from_options(bf16)
    assert "is a bfloat16 tensor" in err.value.message and "float32" in err.value.fix


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
    manifest = json.loads((repo / "scaled" / "1" / "tritongen" / "manifest.json").read_text())
    assert manifest["export"]["program_consts"] == {"n": 3}
    code, _, err = run_cli(["build", str(path), "--repo", str(repo), "--force", "--const", "n=4"], capsys)
    assert code != 0 and "Traceback" not in err
    assert "fixed its number arguments at export (n=3)" in err and "drop --const" in err
    code, _, err = run_cli(["build", str(path), "--repo", str(repo), "--force", "--exporter", "torchscript"], capsys)
    assert code != 0 and "--exporter torchscript cannot export a torch.export program" in err, err


def test_keyword_dict_and_fixed_arguments_go_back_where_the_program_takes_them(tmp_path, capsys):
    class Mixed(torch.nn.Module):
        def forward(self, x, d, mode: str, *, scale: float = 1.0, bias=None):
            y = x + d["a"] * d["b"]
            return (y.sum(-1, keepdim=True) if mode == "sum" else y) * scale + bias

    args = (torch.randn(2, 3), {"a": torch.randn(2, 3), "b": torch.randn(2, 3)}, "sum")
    kwargs = {"scale": 0.5, "bias": torch.randn(2, 1)}
    batch = Dim("batch")
    shapes = {"x": {0: batch}, "d": {"a": {0: batch}, "b": {0: batch}}, "mode": None, "scale": None, "bias": {0: batch}}
    model = Mixed().eval()
    path = tmp_path / "mixed.pt2"
    torch.export.save(torch.export.export(model, args, kwargs=kwargs, dynamic_shapes=shapes), str(path))
    repo = tmp_path / "repo"
    code, out, err = run_cli(["build", str(path), "--repo", str(repo), "--target", "onnxruntime"], capsys)
    assert code == 0, err
    assert "forward() arguments fixed in the exported program: mode='sum', scale=0.5" in err
    import onnxruntime as ort

    session = ort.InferenceSession(str(repo / "mixed" / "1" / "model.onnx"))
    names = [i.name for i in session.get_inputs()]
    assert names == ["x", "d_a", "d_b", "bias"]
    feed = {
        n: np.random.default_rng(i).standard_normal((4, 1 if n == "bias" else 3)).astype(np.float32)
        for i, n in enumerate(names)
    }
    want = model(
        torch.from_numpy(feed["x"]),
        {"a": torch.from_numpy(feed["d_a"]), "b": torch.from_numpy(feed["d_b"])},
        "sum",
        scale=0.5,
        bias=torch.from_numpy(feed["bias"]),
    )
    np.testing.assert_allclose(session.run(None, feed)[0], want.numpy(), rtol=1e-5, atol=1e-5)


def test_the_api_builds_an_exported_program_in_memory(tmp_path):
    import tritongen

    program = torch.export.export(Masked().eval(), (torch.randn(2, 3, 4), torch.ones(2, 3, 4, dtype=torch.int64)))
    result = tritongen.build(program, repo=tmp_path / "repo", target="onnxruntime")
    assert result.model_dir.name == "model" and result.parity.ok and result.spec.inputs_from == "program"
    assert [t.name for t in result.spec.inputs] == ["x", "mask"] and result.spec.max_batch_size == 0  # static
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["source"]["path"] == "<in-memory ExportedProgram>"
    with pytest.raises(TritongenError, match="example_inputs given with an ExportedProgram"):
        tritongen.build(program, example_inputs={"x": np.zeros((1, 3, 4))}, repo=tmp_path / "other")


def test_const_is_refused_for_every_exported_program(tmp_path, capsys):
    path = _save(tmp_path, "nested.pt2", Nested(), (torch.randn(2, 3), {"a": torch.randn(2, 3)}))
    code, _, err = run_cli(["build", str(path), "--repo", str(tmp_path / "repo"), "--const", "k=1"], capsys)
    assert code != 0 and "--const given for a torch.export archive" in err and "drop --const" in err, err


def test_a_scalar_per_item_is_checked_in_the_shape_the_model_computes():
    """Served as [batch, 1] (Triton's empty reshape), a [batch] output was judged row by row by the precision
    check: each row's cosine is +-1, so answers of the right sign passed whatever their size."""
    from tritongen.infer import _in_reference_shapes
    from tritongen.precision.accuracy import accuracy_from_outputs

    want = {"score": np.array([0.5, 1.0, 2.0, 4.0], np.float32)}
    served = {"score": np.array([[5.0], [5.0], [5.0], [5.0]], np.float32)}
    compared = _in_reference_shapes(served, want)
    assert compared["score"].shape == (4,)
    report = accuracy_from_outputs(["score"], [[compared["score"]]], [[want["score"]]], 0.99, None)
    assert not report.ok


class Indexed(torch.nn.Module):
    """x [batch, 4] scaled by an embedding row chosen by t [batch] (a class label, a timestep: one per item)."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(10, 4)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * self.table(t)


def _indexed(tmp_path):
    batch = Dim("batch", max=64)
    args = (torch.randn(3, 4), torch.tensor([1, 2, 3]))
    return _save(tmp_path, "indexed.pt2", Indexed(), args, ({0: batch}, {0: batch}))


def test_an_input_of_one_value_per_item_is_a_scalar_per_item(tmp_path):
    """t [batch] has no dims after the batch axis: dims [1] to clients with Triton's empty reshape, [batch] to the
    program (a build failed before: "model input 't' must specify 'dims'")."""
    spec = build_spec_from_options(_indexed(tmp_path), repo=tmp_path / "repo")
    (x, t) = spec.inputs
    assert (x.dims, x.scalar) == ((4,), False) and (t.dims, t.scalar, t.shape) == ((1,), True, ())


@pytest.mark.server
def test_a_scalar_per_item_input_is_served_and_checked_end_to_end(tmp_path, capsys, server_install):
    """Served: the saved samples ([batch], as the model reads them) go as [batch, 1]; infer --check passes; a [batch]
    .npy from the user is sent as [batch, 1] too; perf's requests carry the served shape."""
    from tritongen.client import infer_from_arrays, model_metadata
    from tritongen.perf.inputs import request_set_for_model
    from tritongen.server import ServeSpec, server_from_repository

    repo = tmp_path / "repo"
    code, out, err = run_cli(["build", str(_indexed(tmp_path)), "--repo", str(repo)], capsys)
    assert code == 0, err
    assert "input  t                        INT64  [1] (a scalar per item: the model's [batch])" in out
    assert "t INT64[] (a scalar per item)" in err
    np.save(tmp_path / "t.npy", np.array([1, 2, 3]))
    with server_from_repository(ServeSpec(repo=repo)) as server:
        code, out, err = run_cli(["infer", "indexed", "--repo", str(repo), "--url", server.grpc_url, "--check"], capsys)
        assert code == 0 and "MATCH" in out, (out, err)
        x = np.ones((3, 4), np.float32)
        np.savez(tmp_path / "given.npz", x=x, t=np.array([1, 2, 3]))
        code, out, err = run_cli(
            ["infer", "indexed", "--url", server.grpc_url, "--input-file", str(tmp_path / "given.npz")], capsys
        )
        assert code == 0 and "output: float32 [3, 4]" in out, (out, err)
        metadata = model_metadata(server.grpc_url, "indexed", "grpc", 10)
        requests = request_set_for_model(metadata, repo)
        assert {r["t"].shape for r in requests.requests} == {(1, 1)}
        answer = infer_from_arrays(server.grpc_url, "indexed", {"x": x, "t": np.array([[1], [2], [3]])})
        program = torch.export.load(str(tmp_path / "indexed.pt2")).module()
        with torch.no_grad():
            want = program(torch.from_numpy(x), torch.tensor([1, 2, 3])).numpy()
        np.testing.assert_allclose(answer["output"], want, rtol=1e-5, atol=1e-6)


class TwoFramesPerStep(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(2, dim=1) + y


def _two_frames(tmp_path):
    batch, steps = Dim("batch"), Dim("steps", min=2, max=64)
    args = (torch.randn(2, 5), torch.randn(2, 10))
    return _save(tmp_path, "frames.pt2", TwoFramesPerStep(), args, ({0: batch, 1: steps}, {0: batch, 1: 2 * steps}))


def test_a_dimension_the_program_computes_from_another_takes_its_sizes_from_that_ones_range(tmp_path):
    """y's length is 2*x's (a derived Dim): its own default range 32/64/128 made the gate fail on the program's guard
    ("2 * x.size()[1] == y.size()[1]"); it follows x's range, and a range given for it names x's to give."""
    from tritongen.dim_ranges import ranges_from_spec

    path = _two_frames(tmp_path)
    spec = build_spec_from_options(path, repo=tmp_path / "repo")
    assert [t.text for t in spec.tied_dims] == ["y[0] = 2*x[0]"]
    assert {(r.input, r.min, r.opt, r.max) for r in ranges_from_spec(spec)} == {("x", 2, 64, 64), ("y", 4, 128, 128)}
    given = build_spec_from_options(path, repo=tmp_path / "repo", dim_ranges=["x:0:3:8:16"])
    assert {(r.input, r.min, r.opt, r.max) for r in ranges_from_spec(given)} == {("x", 3, 8, 16), ("y", 6, 16, 32)}
    with pytest.raises(
        TritongenError,
        match=r"dimension 0 of 'y' is computed from dimension 0 of 'x' in the program \(y\[0\] = 2\*x\[0\]\)",
    ):
        build_spec_from_options(path, repo=tmp_path / "repo", dim_ranges=["y:0:4:8:16"])


def test_a_program_with_a_derived_dimension_builds_and_passes_the_gate(tmp_path, capsys):
    code, out, err = run_cli(["build", str(_two_frames(tmp_path)), "--repo", str(tmp_path / "repo")], capsys)
    assert code == 0, err
    assert "tied y[0] = 2*x[0]" in err and "y[0] 4/128/128" in err
    assert "batch 1, min dims" in out


_SAVE_OUTPUT_TYPES = """
import sys, dataclasses, torch
from transformers.modeling_outputs import BaseModelOutput

class HF(torch.nn.Module):
    def forward(self, x):
        return BaseModelOutput(last_hidden_state=x * 2)

@dataclasses.dataclass
class Own:
    y: torch.Tensor

torch.export.register_dataclass(Own, serialized_type_name="mypkg.Own")

class Mine(torch.nn.Module):
    def forward(self, x):
        return Own(y=x + 1)

for model, name in ((HF(), "hf.pt2"), (Mine(), "own.pt2")):
    ep = torch.export.export(model, (torch.randn(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, sys.argv[1] + "/" + name)
"""


def test_a_program_returning_a_hugging_face_output_loads_in_a_fresh_process(tmp_path):
    """torch.export.load needs the output type registered with pytree: a Hugging Face ModelOutput is, once
    transformers.modeling_outputs is imported; the build said "save it again with the torch version installed here",
    which could not help. Another registered type is named, with what tritongen reads instead."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", _SAVE_OUTPUT_TYPES, str(tmp_path)], check=True, capture_output=True)
    cli = [sys.executable, "-m", "tritongen", "build"]
    done = subprocess.run(
        [*cli, str(tmp_path / "hf.pt2"), "--repo", str(tmp_path / "r")], capture_output=True, text=True
    )
    assert done.returncode == 0 and "output last_hidden_state" in done.stdout, done.stderr
    done = subprocess.run(
        [*cli, str(tmp_path / "own.pt2"), "--repo", str(tmp_path / "r")], capture_output=True, text=True
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "the program returns a mypkg.Own, a type registered with torch's pytree where it was exported" in done.stderr


def test_samples_give_a_program_data_and_leave_its_inputs_its_own(tmp_path):
    """--sample-inputs on a .pt2 inferred the inputs from the arrays: every dimension fixed at the samples' size, the
    program's dynamic sequence lost (the model then took only that length)."""
    samples = tmp_path / "s.npz"
    np.savez(samples, x=np.ones((2, 3, 4), np.float32), mask=np.ones((2, 3, 4), np.int64))
    spec = build_spec_from_options(_masked(tmp_path), repo=tmp_path / "repo", sample_inputs=samples)
    assert spec.inputs_from == "program" and _io(spec) == [("x", "FP32", (-1, 4)), ("mask", "INT64", (-1, 4))]


class LengthMasked(torch.nn.Module):
    """A softmax over the first n[b] positions of each row: n = 0 leaves a row of nothing."""

    def forward(self, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        keep = torch.arange(x.shape[1]).unsqueeze(0) < n.unsqueeze(1)
        return torch.softmax(x.masked_fill(~keep, float("-inf")), dim=-1)


def test_nan_from_generated_integers_names_them_not_the_tolerances(tmp_path, capsys):
    """Generated integers are 0 or 1: a length of 0 empties a row and the softmax over it is NaN. Where NaN came from
    one side only the build said "raise --atol/--rtol", which cannot help; both messages name the samples."""
    batch = Dim("batch")
    path = _save(
        tmp_path, "len.pt2", LengthMasked(), (torch.randn(2, 6), torch.tensor([3, 6])), ({0: batch}, {0: batch})
    )
    code, out, err = run_cli(["build", str(path), "--repo", str(tmp_path / "repo")], capsys)
    (line,) = [x for x in err.splitlines() if x.startswith("error: ")]
    assert code == 1 and "output 'output' holds NaN on the build's samples" in line, err
    assert "generated integer inputs are 0 or 1" in line and "--atol" not in line
    samples = tmp_path / "s.npz"
    np.savez(samples, x=np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32), n=np.arange(1, 9) % 6 + 1)
    code, out, err = run_cli(
        ["build", str(path), "--repo", str(tmp_path / "repo"), "--sample-inputs", str(samples)], capsys
    )
    assert code == 0, err


def test_nan_on_one_side_only_is_named_so():
    """The program answered numbers where ONNX Runtime answered NaN (a fused attention path): named as such."""
    from types import SimpleNamespace

    from tritongen.build import _parity_error
    from tritongen.parity import OutputParity, ParityReport

    report = ParityReport(1e-4, 1e-3, (OutputParity("batch 8", "output", (8, 6), 0.0, 0.0, False, "NaN mismatch"),))
    spec = SimpleNamespace(inputs_from="program", sample_inputs=None, inputs=(SimpleNamespace(dtype="INT64"),))
    error = _parity_error(report, SimpleNamespace(fallback=None, exporter="dynamo"), spec)
    assert "hold NaN where PyTorch's do not, or the other way round (output at batch 8)" in error.problem
    assert "generated integer inputs are 0 or 1" in error.fix


def test_the_hint_to_batch_a_program_names_every_input_with_one_dim(tmp_path):
    """torch.export wants an entry for every argument: the hint named x alone for forward(x, t), which torch refused."""
    path = _save(tmp_path, "fixed.pt2", Indexed(), (torch.randn(2, 4), torch.tensor([1, 2])))
    with pytest.raises(TritongenError) as err:
        build_spec_from_options(path, max_batch_size=8)
    assert "batch = torch.export.Dim('batch'); dynamic_shapes={'x': {0: batch}, 't': {0: batch}}" in err.value.fix


def test_a_range_outside_the_programs_bounds_is_refused_before_the_export(tmp_path):
    """The program takes the steps from 2 to 64: MAX 300 failed after the export on its guard, with a fix about tied
    dimensions that did not apply."""
    with pytest.raises(TritongenError) as err:
        build_spec_from_options(_two_frames(tmp_path), dim_ranges=["x:0:2:8:300"])
    assert err.value.problem == "--dim-range x:0:2:8:300: the program takes dimension 0 of 'x' from 2 to 64"
    assert err.value.fix == "give sizes within that, e.g. --dim-range x:0:2:8:64"
