"""Export + parity with real torch and real ONNX Runtime on three model shapes and both exporters."""

from pathlib import Path

import onnx
import pytest
import torch

from tests import factories
from tritongen.errors import TritongenError
from tritongen.export import onnx_from_module, torch_outputs_from_module
from tritongen.load import module_from_file
from tritongen.parity import parity_from_onnx
from tritongen.samples import sample_set_from_spec
from tritongen.spec import build_spec_from_options

CASES = {
    # id: (factory, example inputs, save form, --input args, --output names, expected output dims)
    "conv-dynamo": (
        factories.make_small_conv,
        factories.small_conv_inputs,
        "state_dict",
        ["x:FP32:3,32,32"],
        ["logits"],
        [(10,)],
    ),
    "conv-torchscript": (
        factories.make_small_conv,
        factories.small_conv_inputs,
        "torchscript-trace",
        ["x:FP32:3,32,32"],
        [],
        [(10,)],
    ),
    "two-in-two-out": (
        factories.make_two_in_two_out,
        factories.two_in_two_out_inputs,
        "torch.export",
        ["a:FP32:4", "b:FP32:4"],
        ["sum", "product"],
        [(4,), (4,)],
    ),
    "dynamic-seq-dynamo": (
        factories.make_dynamic_seq,
        factories.dynamic_seq_inputs,
        "pickled_module",
        ["x:FP32:-1,8"],
        [],
        [(8,)],
    ),
    "dynamic-seq-torchscript": (
        factories.make_dynamic_seq,
        factories.dynamic_seq_inputs,
        "torchscript-trace",
        ["x:FP32:-1,8"],
        [],
        [(8,)],
    ),
}


def _export(tmp_path: Path, case: str, max_batch_size: int = 4, form: str | None = None, opset: int | None = None):
    make, inputs, case_form, input_args, outputs, _ = CASES[case]
    form = form or case_form
    path = factories.save_model(make(), tmp_path / "model.pt", form, inputs())
    factory = "tests.factories:" + make.__name__ if form == "state_dict" else None
    spec = build_spec_from_options(
        path,
        inputs=input_args,
        outputs=outputs,
        max_batch_size=max_batch_size,
        model_factory=factory,
        allow_pickle=form == "pickled_module",
        opset=opset,
    )
    loaded = module_from_file(path, factory, allow_pickle=form == "pickled_module")
    samples = sample_set_from_spec(spec)
    result = onnx_from_module(loaded, spec, samples.export, tmp_path / "out", tmp_path / "raw")
    return spec.with_outputs(result.outputs), loaded, samples, result


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_is_dynamic_and_matches_pytorch(tmp_path, case):
    spec, loaded, samples, result = _export(tmp_path, case)
    assert result.exporter == ("torchscript" if "torchscript" in case else "dynamo")
    assert result.opset >= 17
    assert [t.dims for t in result.outputs] == CASES[case][5]
    if CASES[case][4]:
        assert [t.name for t in result.outputs] == CASES[case][4]
    model = onnx.load(str(result.onnx_path), load_external_data=False)
    onnx.checker.check_model(str(result.onnx_path))
    for graph_input, tensor in zip(model.graph.input, spec.inputs):
        dims = graph_input.type.tensor_type.shape.dim
        assert not dims[0].HasField("dim_value"), "batch axis must be dynamic"
        for axis in tensor.dynamic_axes:
            assert not dims[axis + 1].HasField("dim_value"), f"dim {axis} of {tensor.name} must be dynamic"
    reference = {label: torch_outputs_from_module(loaded.module, spec, arrays) for label, arrays in samples.parity}
    report = parity_from_onnx(result.onnx_path, reference, samples.parity, spec)
    assert report.ok, report.table()
    ranged = {"batch 1, min dims", "batch 1, max dims"} if any(t.dynamic_axes for t in spec.inputs) else set()
    assert {r.case for r in report.results} == {"batch 1", "batch 4"} | ranged
    assert all(r.max_abs_err < 1e-4 for r in report.results)


def test_weights_are_external_data_beside_the_model(tmp_path):
    _, _, _, result = _export(tmp_path, "conv-dynamo")
    assert result.data_path is not None and result.data_path.parent == result.onnx_path.parent
    model = onnx.load(str(result.onnx_path), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    # the data file holds each weight once: nothing but what the graph references (a second save appended a copy)
    referenced = sum(int({e.key: e.value for e in t.external_data}.get("length", 0)) for t in model.graph.initializer)
    assert result.data_path.stat().st_size == referenced


def test_unbatched_export_keeps_static_shapes(tmp_path):
    # (a torch.export archive keeps the batch size it was exported with, so load this one from a state_dict)
    spec, loaded, samples, result = _export(tmp_path, "two-in-two-out", max_batch_size=0, form="state_dict")
    model = onnx.load(str(result.onnx_path), load_external_data=False)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [4]
    assert [t.dims for t in result.outputs] == [(4,), (4,)]


class DataDependent(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # control flow on values: torch.export cannot capture it
            return x * 2
        return x - 1


class MakesNaN(torch.nn.Module):
    def forward(self, x):
        return torch.log(x - 1e9)


def test_export_failure_is_a_clean_error(tmp_path):
    path = factories.save_model(DataDependent(), tmp_path / "m.pt", "pickled_module")
    spec = build_spec_from_options(path, inputs=["x:FP32:4"], allow_pickle=True)
    loaded = module_from_file(path, allow_pickle=True)
    with pytest.raises(TritongenError, match="ONNX export failed \\(dynamo exporter\\)"):
        onnx_from_module(loaded, spec, sample_set_from_spec(spec).export, tmp_path / "o", tmp_path / "r")


def test_nan_outputs_fail_the_parity_gate(tmp_path):
    path = factories.save_model(MakesNaN(), tmp_path / "m.pt", "pickled_module")
    spec = build_spec_from_options(path, inputs=["x:FP32:4"], allow_pickle=True)
    loaded = module_from_file(path, allow_pickle=True)
    samples = sample_set_from_spec(spec)
    result = onnx_from_module(loaded, spec, samples.export, tmp_path / "o", tmp_path / "r")
    spec = spec.with_outputs(result.outputs)
    reference = {label: torch_outputs_from_module(loaded.module, spec, arrays) for label, arrays in samples.parity}
    report = parity_from_onnx(result.onnx_path, reference, samples.parity, spec)
    assert not report.ok
    assert "PyTorch output holds NaN" in report.table()


def test_wrong_number_of_output_names(tmp_path):
    path = factories.save_model(
        factories.make_two_in_two_out(), tmp_path / "m.pt", "torch.export", factories.two_in_two_out_inputs()
    )
    spec = build_spec_from_options(path, inputs=["a:FP32:4", "b:FP32:4"], outputs=["only_one"])
    loaded = module_from_file(path)
    with pytest.raises(TritongenError, match="returns 2 output\\(s\\) but 1 --output"):
        onnx_from_module(loaded, spec, sample_set_from_spec(spec).export, tmp_path / "o", tmp_path / "r")


def test_inputs_that_do_not_fit_the_model(tmp_path):
    path = factories.save_model(
        factories.make_small_conv(), tmp_path / "m.pt", "torchscript-trace", factories.small_conv_inputs()
    )
    spec = build_spec_from_options(path, inputs=["x:FP32:3,7"])
    loaded = module_from_file(path)
    with pytest.raises(TritongenError, match="the model failed on inputs x\\[2, 3, 7\\]"):
        onnx_from_module(loaded, spec, sample_set_from_spec(spec).export, tmp_path / "o", tmp_path / "r")


@pytest.mark.parametrize("case, opset", [("conv-torchscript", 19), ("conv-torchscript", 20), ("conv-dynamo", 21)])
def test_the_graph_is_written_at_the_opset_asked_for(tmp_path, case, opset):
    """No silent change: each exporter writes the opset asked for, up to the newest it writes."""
    _, _, _, result = _export(tmp_path, case, opset=opset)
    model = onnx.load(str(result.onnx_path), load_external_data=False)
    assert result.opset == opset
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [opset]


def test_a_torchscript_module_asked_for_an_opset_only_dynamo_writes_is_refused(tmp_path):
    with pytest.raises(TritongenError, match="TorchScript exporter .* writes opset 20 at most; --opset is 21"):
        _export(tmp_path, "conv-torchscript", opset=21)


class DictOut(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"double": x * 2, "half": x / 2}


def test_a_scripted_dict_output_names_the_forms_that_work(tmp_path):
    """ "try another --opset" cannot help the TorchScript exporter write a dict: the fix names a tuple or
    torch.export."""
    import tritongen

    path = tmp_path / "dict.pt"
    torch.jit.save(torch.jit.script(DictOut()), str(path))
    with pytest.raises(TritongenError) as err:
        tritongen.build(path, inputs=["x:FP32:4"], name="d", repo=tmp_path / "r")
    assert "operator prim::DictConstruct has no ONNX translation" in err.value.problem
    assert "return a tuple of tensors from forward()" in err.value.fix and "another --opset" not in err.value.fix


class NeedsLongLengths(torch.nn.Module):
    """Refuses the values the build generates for an integer input (0 or 1), as pack_padded_sequence refuses 0."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if bool((lengths < 2).any()):
            raise ValueError("Length of all samples has to be greater than 0, but found an element <= 0")
        return x[:, : int(lengths.max())]


class IndexPastDefaultSize(torch.nn.Module):
    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return (x[:, 100] + ids.float()).unsqueeze(1)


@pytest.mark.parametrize(
    "model, words, advice, not_advice",
    [
        (NeedsLongLengths, "greater than 0", "generated integer inputs are 0 or 1", "dim_range"),
        # "out of bounds" is a size's words too: with an integer input beside, the advice stays --dim-range
        (IndexPastDefaultSize, "out of bounds", "dim_range", "generated integer"),
    ],
)
def test_a_model_failing_on_the_generated_samples_gets_the_advice_for_its_cause(
    tmp_path, model, words, advice, not_advice
):
    import tritongen

    path = factories.save_model(model(), tmp_path / "m.pt", "pickled_module")
    with pytest.raises(TritongenError) as err:
        tritongen.build(path, inputs=["x:FP32:-1", "n:INT64:"], name="n", repo=tmp_path / "r", allow_pickle=True)
    assert words in err.value.problem
    assert advice in err.value.fix and not_advice not in err.value.fix, err.value.fix


class _LastHidden(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 8, 1, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[1][0][-1]


def test_a_variable_length_lstm_builds_twice_in_one_process(tmp_path):
    """torch's dispatch cache kept the LSTM kernel of the first dynamo export: the second build in one notebook
    (FP32 then FP16, or a second model) failed with "the model fixes dimension 0 of input 'x' to 16"."""
    import numpy as np

    import tritongen
    from tritongen.parity import onnx_session

    for name in ("first", "second"):
        torch.manual_seed(0)
        result = tritongen.build(
            _LastHidden(),
            example_inputs={"x": torch.rand(2, 16, 4)},
            name=name,
            repo=tmp_path,
            dim_ranges=["x:0:4:16:64"],
        )
        assert result.exporter == "dynamo"
    session = onnx_session(tmp_path / "second" / "1" / "model.onnx")
    x = np.random.default_rng(0).random((3, 40, 4), dtype=np.float32)  # a length the example never had
    torch.manual_seed(0)
    want = _LastHidden()(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(session.run(None, {"x": x})[0], want, atol=1e-5)


class _FixedSize(torch.nn.Module):
    """Takes 48x48 images only: its linear layer is sized for them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4 * 46 * 46, 2)

    def forward(self, x):
        return self.head(self.conv(x).flatten(1))


@pytest.mark.parametrize(
    "exporter, words",
    [
        # the eager model failed at the range's MIN: the fix blamed example_inputs
        ("torchscript", "dimension 1 of 'x' is 32 here, the MIN of dim_ranges x:1:32:48:64: give a range of sizes"),
        # the exporter found the size fixed: the fix said to declare it, which the range contradicts
        ("dynamo", "the model takes only 48 there: drop dim_ranges x:1:32:48:64 and declare that dimension as 48"),
    ],
)
def test_a_dim_range_the_model_does_not_take_is_named_in_the_fix(tmp_path, exporter, words):
    import tritongen

    with pytest.raises(TritongenError) as err:
        tritongen.build(
            _FixedSize(), example_inputs={"x": torch.rand(2, 3, 48, 48)}, name="m", repo=tmp_path,
            dim_ranges=["x:1:32:48:64"], exporter=exporter,
        )  # fmt: skip
    assert err.value.fix.startswith(words), err.value.fix
    assert not (tmp_path / "m").exists()


def test_the_cleaned_graph_names_every_node_once(tmp_path):
    """Found by an attacker: an ONNX file's three unnamed Gemms were one "layer" to the precision guard (1/1 weighted
    ops in INT8, a per-layer fallback that could never work, blank layer names in its report)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tritongen.export import cleaned_onnx_from_onnx

    inits, nodes, last = [], [], "x"
    for i in range(3):
        inits.append(numpy_helper.from_array(np.eye(4, dtype=np.float32) * (i + 1), f"W{i}"))
        out = "y" if i == 2 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [last, f"W{i}"], [out], name="" if i < 2 else "Gemm_0"))
        last = out
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    _, cleaned = cleaned_onnx_from_onnx(model, tmp_path / "out")
    names = [n.name for n in cleaned.graph.node]
    assert len(names) == 3 and all(names) and len(set(names)) == 3, names
    assert "Gemm_0" in names  # a name the file gave is kept
    assert onnx.load(str(tmp_path / "out" / "model.onnx")).graph.node[0].name == names[0]
