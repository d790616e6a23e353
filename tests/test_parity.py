"""The parity gate (tritongen.parity): infinities, and answers Triton's batcher can split and gather."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import tritongen
from tritongen.errors import TritongenError
from tritongen.parity import INF_MISMATCH, compare_arrays


def test_the_same_infinity_on_both_sides_passes_and_any_other_pairing_fails():
    want = np.array([[1.0, -np.inf, np.inf]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value encountered in subtract" reaches the terminal
        same = compare_arrays("batch 1", "y", want + np.array([[1e-7, 0, 0]], np.float32), want, 1e-4, 1e-3)
        assert same.ok and same.max_abs_err < 1e-6, same
        for got in ([[1.0, np.inf, np.inf]], [[1.0, -np.inf, 3.0]], [[np.inf, -np.inf, np.inf]]):
            other = compare_arrays("batch 1", "y", np.array(got, np.float32), want, 10.0, 10.0)
            assert not other.ok and other.note == INF_MISMATCH, (got, other)


class MaskedLogits(torch.nn.Module):
    """Masked logits, as attention and top-k code writes them: -inf where the mask is off."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(x).masked_fill(x[:, :1] > 0, float("-inf"))


class TimeMajorLSTM(torch.nn.Module):
    """nn.LSTM's default batch_first=False: [batch, time, features] is read as [time, batch, ...]."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return out[-1]


class SoftmaxOverBatch(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.softmax(self.fc(x), dim=0)


def test_an_output_holding_minus_infinity_builds(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 4)
    result = tritongen.build(MaskedLogits().eval(), example_inputs=[x], name="masked", repo=tmp_path / "r")
    assert result.parity.ok, result.parity.table()


def test_an_output_whose_first_dimension_is_not_the_batch_is_refused(tmp_path):
    """A traced time-major LSTM with a variable time axis: ONNX Runtime and PyTorch agree on every case, and each
    answers [time, features] whatever the batch: the build wrote dims [3] and the served answers mixed requests."""
    path = tmp_path / "tm.pt"
    torch.jit.save(torch.jit.trace(TimeMajorLSTM().eval(), torch.randn(2, 6, 4)), str(path))
    with pytest.raises(TritongenError) as err:
        tritongen.build(path, inputs=["x:FP32:-1,4"], name="tm", repo=tmp_path / "r")
    assert "output 'output' has 64 rows [64, 3] for a batch of 1:" in err.value.message, err.value.message
    assert "batch_first=True" in err.value.fix and "x:FP32:-1,-1,4" in err.value.fix
    assert not (tmp_path / "r" / "tm").exists()


def test_a_model_mixing_the_items_of_a_batch_is_refused(tmp_path):
    with pytest.raises(TritongenError) as err:
        tritongen.build(SoftmaxOverBatch().eval(), example_inputs=[torch.randn(2, 4)], name="mix", repo=tmp_path)
    assert "of the first item differs when it runs with 7 others (batch 8) from its answer alone by" in str(err.value)
    assert not (tmp_path / "mix").exists()
    # unbatched, it is one answer for the whole input: built
    built = tritongen.build(
        SoftmaxOverBatch().eval(), example_inputs=[torch.randn(2, 4)], name="mix", repo=tmp_path, max_batch_size=0
    )
    assert built.parity.ok


def test_a_dynamically_quantized_onnx_graph_batches_as_it_did(tmp_path):
    """ONNX Runtime's quantize_dynamic takes one activation scale per batch, so an item's answer moves a little
    with its neighbours (about 1e-2): a model people serve batched, which the first form of the check refused."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).eval()
    torch.onnx.export(
        net, (torch.randn(2, 64),), str(tmp_path / "mlp.onnx"), input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False,
    )  # fmt: skip
    quantize_dynamic(str(tmp_path / "mlp.onnx"), str(tmp_path / "mlp_int8.onnx"), weight_type=QuantType.QInt8)
    from tritongen.cpus import u8s8_saturates

    try:
        result = tritongen.build(tmp_path / "mlp_int8.onnx", name="mlpq", repo=tmp_path / "r")
    except TritongenError as exc:
        # on an x86 CPU without VNNI the INT8 kernels saturate, and the per-batch scale moved an item by 9% (an
        # AVX2-only EPYC): refused, saying why and what quantizes with one scale
        assert u8s8_saturates(), exc
        assert "a dynamically quantized graph takes one activation scale per batch; this CPU has no VNNI" in str(exc)
        assert "int8" in exc.fix and "FILE" in exc.fix and "or build it unbatched" in exc.fix
        return
    assert result.parity.ok and (tmp_path / "r" / "mlpq" / "1").is_dir()


def test_an_onnx_graph_with_an_output_sized_by_its_content_is_told_about_the_graph(tmp_path):
    """The fix names the graph, not PyTorch's batch_first (an ONNX file has no forward())."""

    class NonZero(torch.nn.Module):
        def forward(self, x):
            return torch.nonzero(x > 0)

    torch.onnx.export(
        NonZero(), (torch.randn(2, 4),), str(tmp_path / "nz.onnx"), input_names=["x"], output_names=["idx"],
        dynamic_axes={"x": {0: "batch"}, "idx": {0: "n"}}, dynamo=False,
    )  # fmt: skip
    with pytest.raises(TritongenError) as err:
        tritongen.build(tmp_path / "nz.onnx", name="nz", repo=tmp_path / "r")
    assert "output 'idx' has" in err.value.message and "its first dimension is not the batch" in err.value.message
    assert err.value.fix.startswith("export the graph with the batch first in every output")


def test_text_complex_and_expected_nan_outputs_compare_without_a_traceback():
    """infer --expected: a STRING output that differed was a ValueError (converted to float); a complex one lost
    its imaginary part and matched; NaN the user expects never matched ("PyTorch output holds NaN")."""
    served = np.array([b"yes", b"no"], dtype=object)
    assert compare_arrays("served", "s", served, np.array(["yes", "no"]), 1e-4, 1e-3).ok  # str expected for bytes
    other = compare_arrays("served", "s", served, np.array([b"yes", b"maybe"]), 1e-4, 1e-3)
    assert not other.ok and other.max_abs_err == float("inf")
    assert not compare_arrays("served", "c", np.array([1 + 1j]), np.array([1 + 2j]), 1e-4, 1e-3).ok
    nan = np.array([1.0, np.nan])
    assert compare_arrays("served", "y", nan, nan.copy(), 1e-4, 1e-3, equal_nan=True).ok
    assert not compare_arrays("served", "y", np.array([1.0, 2.0]), nan, 1e-4, 1e-3, equal_nan=True).ok
    assert compare_arrays("served", "y", nan, nan.copy(), 1e-4, 1e-3).note == "PyTorch output holds NaN"
