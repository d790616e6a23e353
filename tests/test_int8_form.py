"""INT8 building blocks on tiny hand-made ONNX graphs: scale migration, FLOP share, the fusable Q/DQ form, lint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tritongen.cpus import u8s8_saturates
from tritongen.lint import lint_from_onnx
from tritongen.precision.calibration import calibration_data_from_arrays
from tritongen.precision.flops import flop_share, loss_per_flop, weight_gemm_flops
from tritongen.precision.int8 import int8_onnx_from_onnx
from tritongen.precision.smoothquant import smoothed_onnx_from_onnx
from tritongen.precision.tensor_ranges import range_choices

D, F = 16, 32  # model width, FFN width


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONGEN_CACHE_DIR", str(tmp_path / "cache"))


def _init(name: str, array: np.ndarray):
    return numpy_helper.from_array(array.astype(np.float32), name)


def _block(rng: np.random.Generator) -> onnx.ModelProto:
    """Post-LN block: LayerNorm -> Q, K, V MatMuls, residual Add reading the LayerNorm output, FFN with erf-GELU."""
    w = lambda *shape: rng.standard_normal(shape) / np.sqrt(shape[0])  # noqa: E731
    gamma = np.ones(D)
    gamma[3] = 40.0  # an outlier channel in the LayerNorm output, as in BERT-style models
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], name="ln", axis=-1),
        helper.make_node("MatMul", ["ln", "wq"], ["q"], name="q"),
        helper.make_node("MatMul", ["ln", "wk"], ["k"], name="k"),
        helper.make_node("MatMul", ["ln", "wv"], ["v"], name="v"),
        helper.make_node("Add", ["q", "k"], ["qk"], name="qk"),
        helper.make_node("Add", ["qk", "v"], ["att"], name="att"),
        helper.make_node("Add", ["att", "ln"], ["res"], name="residual"),
        helper.make_node("MatMul", ["res", "wu"], ["up"], name="up"),
        helper.make_node("Div", ["up", "sqrt2"], ["g0"], name="gelu_div"),
        helper.make_node("Erf", ["g0"], ["g1"], name="gelu_erf"),
        helper.make_node("Add", ["g1", "one"], ["g2"], name="gelu_add"),
        helper.make_node("Mul", ["up", "g2"], ["g3"], name="gelu_mul"),
        helper.make_node("Mul", ["g3", "half"], ["gelu"], name="gelu_half"),
        helper.make_node("MatMul", ["gelu", "wd"], ["down"], name="down"),
        helper.make_node("Add", ["down", "res"], ["y"], name="out"),
    ]
    inits = [
        _init("gamma", gamma),
        _init("beta", rng.standard_normal(D) * 0.1),
        _init("wq", w(D, D)),
        _init("wk", w(D, D)),
        _init("wv", w(D, D)),
        _init("wu", w(D, F)),
        _init("wd", w(F, D)),
        _init("sqrt2", np.array(np.sqrt(2.0))),
        _init("one", np.array(1.0)),
        _init("half", np.array(0.5)),
    ]
    return _sequence_model(nodes, inits, "block")


def _sequence_model(nodes: list, inits: list, name: str) -> onnx.ModelProto:
    """An opset-17 model of ``nodes`` from ``x`` to ``y``, both ``[b, 8, D]``."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 8, D])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 8, D])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _run(path: Path, feed: dict) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


def _batches(rng: np.random.Generator, count: int) -> list[dict]:
    return [{"x": rng.standard_normal((4, 8, D)).astype(np.float32)} for _ in range(count)]


def test_scale_migration_keeps_the_fp32_function(tmp_path):
    rng = np.random.default_rng(0)
    src = _save(_block(rng), tmp_path / "src" / "model.onnx")
    out, groups = smoothed_onnx_from_onnx(src, tmp_path / "smooth" / "model.onnx", _batches(rng, 4))
    assert {(g.kind, g.matmuls) for g in groups} == {("layernorm", ("q", "k", "v")), ("gelu", ("down",))}
    assert all(g.scale_max > 1.5 for g in groups)  # scales really moved (the outlier channel)
    smoothed = onnx.load(str(out))
    weights = {i.name: numpy_helper.to_array(i) for i in smoothed.graph.initializer}
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(src)).graph.initializer}
    assert not np.allclose(weights["wq"], original["wq"]) and not np.allclose(weights["gamma"], original["gamma"])
    assert np.allclose(weights["wu"], original["wu"])  # "up" reads the residual sum, not a LayerNorm or GELU
    feed = {"x": rng.standard_normal((3, 8, D)).astype(np.float32)}
    want, got = _run(src, feed), _run(out, feed)
    assert np.max(np.abs(got - want)) <= 1e-5 * max(1.0, float(np.max(np.abs(want))))


def test_scale_migration_keeps_the_fp32_function_where_layernorms_share_their_weights(tmp_path):
    """The dynamo exporter gives identical LayerNorm weights one initializer: the migration copied it for each
    LayerNorm but wrote its scales into a detached copy, so the MatMuls were rescaled and the LayerNorms not (a tiny
    BERT read cosine 0.93 against FP32 before any quantization)."""
    rng = np.random.default_rng(3)
    gamma = np.ones(D)
    gamma[5] = 30.0  # an outlier channel: the migration moves real scales
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln_a"], name="ln_a", axis=-1),
        helper.make_node("MatMul", ["ln_a", "wa"], ["a"], name="a"),
        helper.make_node("LayerNormalization", ["a", "gamma", "beta"], ["ln_b"], name="ln_b", axis=-1),
        helper.make_node("MatMul", ["ln_b", "wb"], ["y"], name="b"),
    ]
    inits = [
        _init("gamma", gamma),
        _init("beta", rng.standard_normal(D) * 0.1),
        _init("wa", rng.standard_normal((D, D)) / 4),
        _init("wb", rng.standard_normal((D, D)) / 4),
    ]
    src = _save(_sequence_model(nodes, inits, "shared"), tmp_path / "src" / "m.onnx")
    out, groups = smoothed_onnx_from_onnx(src, tmp_path / "smooth" / "model.onnx", _batches(rng, 4))
    assert {g.matmuls for g in groups} == {("a",), ("b",)} and all(g.scale_max > 1.5 for g in groups)
    feed = {"x": rng.standard_normal((3, 8, D)).astype(np.float32)}
    want, got = _run(src, feed), _run(out, feed)
    assert np.max(np.abs(got - want)) <= 1e-4 * max(1.0, float(np.max(np.abs(want))))


def test_int8_form_is_one_fused_pair_per_matmul_and_the_residual_reads_float(tmp_path):
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    src = _save(_block(rng), tmp_path / "src" / "model.onnx")
    data = calibration_data_from_arrays(_batches(rng, 8), _batches(rng, 2))
    result = int8_onnx_from_onnx(src, tmp_path / "int8", data)
    model = onnx.load(str(result.onnx_path))
    producers = {o: n for n in model.graph.node for o in n.output}
    dq_readers = [
        n for n in model.graph.node for i in n.input if i in producers and producers[i].op_type == "DequantizeLinear"
    ]
    assert sorted(n.name for n in dq_readers if n.op_type == "MatMul") == sorted(["q", "k", "v", "up", "down"] * 2)
    assert {n.op_type for n in dq_readers} == {"MatMul"}  # the residual Add and the unsmoothing Mul read float
    assert result.qdq_form is not None and result.qdq_form.duplicated == 2 and result.qdq_form.rewired >= 1
    act_scales = [
        numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == producers[n.input[0]].input[1]))
        for n in dq_readers
        if n.name in ("q", "k", "v")
    ]
    assert len({float(s) for s in act_scales}) == 3 and np.ptp(act_scales) / act_scales[0] < 1e-5  # nudged by ulps
    zero_points = [numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and not any(z.any() for z in zero_points)
    # ONNX Runtime's optimiser turns every weight MatMul into an integer kernel
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the "hardware specific optimizations" notice
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(result.onnx_path), options, providers=["CPUExecutionProvider"])
    fused = [n for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node if n.op_type == "MatMulIntegerToFloat"]
    assert len(fused) == 5
    assert not [f for f in lint_from_onnx(result.onnx_path).findings if f.code.startswith("qdq")]
    feed = data.eval[0]
    want, got = _run(src, feed), _run(result.onnx_path, feed)
    cos = np.sum(want * got) / np.linalg.norm(want) / np.linalg.norm(got)
    assert cos > 0.99


def _two_matmuls() -> onnx.ModelProto:
    """x[2, 8] -> MatMul [8, 16] -> MatMul [16, 4] -> a@a^T (activation x activation, not a weight GEMM)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
        helper.make_node("MatMul", ["h", "w2"], ["a"], name="second"),
        helper.make_node("Transpose", ["a"], ["at"], name="t"),
        helper.make_node("MatMul", ["a", "at"], ["y"], name="gram"),
    ]
    inits = [_init("w1", np.ones((8, 16))), _init("w2", np.ones((16, 4)))]
    graph = helper.make_graph(
        nodes,
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_flop_share_matches_the_hand_count():
    flops = weight_gemm_flops(_two_matmuls(), {"x": np.ones((2, 8), np.float32)})
    assert flops == {"first": 2 * 2 * 8 * 16, "second": 2 * 2 * 16 * 4}  # 512 and 256; "gram" is not counted
    share = flop_share(flops, kept=["second"])
    assert (share.int8_flops, share.total_flops, share.int8_nodes, share.total_nodes) == (512, 768, 1, 2)
    assert share.share == pytest.approx(2 / 3) and "66.7%" in share.text()
    assert share.to_dict()["kept_in_float"] == [{"node": "second", "flops": 256}]
    # fallback ranks by accuracy lost per FLOP kept in floating point: the small layer goes first here
    assert [n for n, _ in loss_per_flop([("first", 0.01), ("second", 0.006)], flops)] == ["second", "first"]


def test_recurrent_layers_count_as_weight_gemms_that_stay_in_float():
    """A 2-layer LSTM with a Linear head read "100% (1/1 weighted ops in INT8)": only the head was INT8."""
    from tritongen.precision.flops import recurrent_nodes

    steps, batch, inputs, hidden = 5, 2, 6, 8
    nodes = [
        helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="lstm", hidden_size=hidden),
        helper.make_node("Squeeze", ["y", "axis"], ["ys"], name="sq"),
        helper.make_node("MatMul", ["ys", "head"], ["out"], name="head"),
    ]
    inits = [
        _init("W", np.ones((1, 4 * hidden, inputs))),
        _init("R", np.ones((1, 4 * hidden, hidden))),
        _init("head", np.ones((hidden, 3))),
        numpy_helper.from_array(np.array([1], np.int64), "axis"),
    ]
    graph = helper.make_graph(
        nodes,
        "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, batch, inputs])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [steps, batch, 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    flops = weight_gemm_flops(model, {"x": np.ones((steps, batch, inputs), np.float32)})
    lstm = 2 * steps * batch * 4 * hidden * (inputs + hidden)  # every step, every gate, input and recurrent weights
    assert flops == {"lstm": lstm, "head": 2 * steps * batch * hidden * 3}
    assert recurrent_nodes(model) == ["lstm"]
    share = flop_share(flops, kept=recurrent_nodes(model))
    assert share.int8_nodes == 1 and share.total_nodes == 2 and share.share == pytest.approx(480 / (lstm + 480))


def test_range_choice_is_per_tensor():
    """Two tensors, one with rare huge outliers: only that one takes the percentile range."""
    nodes = [
        helper.make_node("Mul", ["x", "one"], ["plain"], name="p"),
        helper.make_node("Mul", ["z", "one"], ["spiky"], name="s"),
        helper.make_node("MatMul", ["plain", "w"], ["a"], name="ma"),
        helper.make_node("MatMul", ["spiky", "w"], ["b"], name="mb"),
    ]
    graph = helper.make_graph(
        nodes,
        "ranges",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [64, 64]) for n in ("x", "z")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [64, 4]) for n in ("a", "b")],
        [_init("one", np.array(1.0)), _init("w", np.ones((64, 4)))],
    )
    rng = np.random.default_rng(0)
    batches = []
    for i in range(8):
        z = rng.standard_normal((64, 64)).astype(np.float32)
        z[0, 0] = 200.0 if i in (2, 5) else z[0, 0]  # 2 of 32768 values: below the 0.01% the percentile drops
        batches.append({"x": rng.standard_normal((64, 64)).astype(np.float32), "z": z})
    choices = {c.tensor: c for c in range_choices(helper.make_model(graph), ["plain", "spiky"], batches)}
    assert choices["plain"].method == "minmax" and choices["spiky"].method == "percentile"
    assert choices["spiky"].absmax == 200.0 and 2.0 < choices["spiky"].range < 10.0


def test_lint_flags_misplaced_and_asymmetric_qdq(tmp_path):
    """quantize_static's own form: the residual Add reads the DequantizeLinear output; plus a zero point of 3."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["xq"], name="quant"),
        helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dequant"),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wzp"], ["wd"], name="w_dequant", axis=1),
        helper.make_node("MatMul", ["xd", "wd"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "xd"], ["y"], name="residual"),
        helper.make_node("MatMul", ["y", "w2"], ["z"], name="half_quantized"),
        helper.make_node("DequantizeLinear", ["w2q", "ws", "wzp"], ["w2"], name="w2_dequant", axis=1),
    ]
    inits = [
        _init("s", np.array(0.1)),
        numpy_helper.from_array(np.array(3, np.int8), "zp"),
        numpy_helper.from_array(np.ones((8, 8), np.int8), "wq"),
        numpy_helper.from_array(np.ones((8, 8), np.int8), "w2q"),
        _init("ws", np.full(8, 0.01)),
        numpy_helper.from_array(np.zeros(8, np.int8), "wzp"),
    ]
    graph = helper.make_graph(
        nodes,
        "misplaced",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 8])],
        inits,
    )
    path = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "bad.onnx")
    report = lint_from_onnx(path)
    codes = {(f.level, f.code) for f in report.findings}
    assert ("warning", "qdq-placement") in codes and ("error", "qdq-zero-point") in codes
    assert ("warning", "qdq-half") in codes and not report.ok
    placement = next(f for f in report.findings if f.code == "qdq-placement")
    assert "Add 'residual'" in placement.message
    assert "qdq-placement" in report.text()


def test_a_percentile_choice_sets_that_tensors_scale_and_excluded_ops_stay_float(tmp_path):
    from tritongen.precision.tensor_ranges import RangeChoice

    rng = np.random.default_rng(2)
    src = _save(_block(rng), tmp_path / "src" / "model.onnx")
    data = calibration_data_from_arrays(_batches(rng, 8), _batches(rng, 2))
    ranges = [RangeChoice("res", "percentile", 10.0, 2.0), RangeChoice("gelu_smoothed", "percentile", 10.0, 2.0)]
    result = int8_onnx_from_onnx(src, tmp_path / "int8", data, "auto", exclude_nodes=["down"], ranges=ranges)
    assert result.quantized_nodes == ("q", "k", "v", "up")
    model = onnx.load(str(result.onnx_path))
    scales = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q_scale = {n.input[0]: float(scales[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert q_scale["res"] == pytest.approx(2.0 / 127) and "gelu_smoothed" not in q_scale


def test_statistics_of_a_model_too_big_to_serialise_go_through_a_file(monkeypatch):
    from tritongen.precision import probe

    model, batches = _block(np.random.default_rng(3)), _batches(np.random.default_rng(4), 2)
    inline = probe.channel_absmax(model, ["ln", "gelu"], batches)
    monkeypatch.setattr(probe, "INLINE_LIMIT_BYTES", 0)  # as if the model were over protobuf's 2 GiB
    via_file = probe.channel_absmax(model, ["ln", "gelu"], batches)
    assert all(np.array_equal(inline[k], via_file[k]) for k in ("ln", "gelu")) and inline["gelu"].shape == (F,)


def _conv_net(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv -> PRelu -> MaxPool -> Conv -> PRelu -> Flatten -> Gemm: ONet's pattern, small."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1"),
        helper.make_node("PRelu", ["c1", "a1"], ["p1"], name="prelu1"),
        helper.make_node("MaxPool", ["p1"], ["m1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["m1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("PRelu", ["c2", "a2"], ["p2"], name="prelu2"),
        helper.make_node("Flatten", ["p2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="dense", transB=1),
    ]
    inits = [
        _init("w1", rng.standard_normal((8, 3, 3, 3)) / 5),
        _init("b1", rng.standard_normal(8) * 0.1),
        _init("a1", np.full((8, 1, 1), 0.25)),
        _init("w2", rng.standard_normal((16, 8, 3, 3)) / 8),
        _init("b2", rng.standard_normal(16) * 0.1),
        _init("a2", np.full((16, 1, 1), 0.25)),
        _init("w3", rng.standard_normal((4, 16 * 5 * 5)) / 20),
        _init("b3", rng.standard_normal(4) * 0.1),
    ]
    graph = helper.make_graph(
        nodes,
        "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _optimized_ops(path: Path, tmp_path: Path) -> set[str]:
    """The op types of the graph ONNX Runtime's CPU session really runs (after its optimiser)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the "hardware specific optimizations" notice
    options.optimized_model_filepath = str(tmp_path / f"{path.parent.name}-optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(options.optimized_model_filepath, load_external_data=False).graph.node}


def test_cpu_form_convolves_in_integers_and_the_tensorrt_form_passes_the_lint(tmp_path):
    rng = np.random.default_rng(3)
    src = _save(_conv_net(rng), tmp_path / "src" / "model.onnx")
    image = lambda: {"x": rng.standard_normal((8, 3, 16, 16)).astype(np.float32)}  # noqa: E731
    data = calibration_data_from_arrays([image() for _ in range(8)], [image()])
    cpu = int8_onnx_from_onnx(src, tmp_path / "cpu", data, form="cpu")
    trt = int8_onnx_from_onnx(src, tmp_path / "trt", data, form="tensorrt")
    assert (cpu.form, trt.form) == ("cpu", "tensorrt")
    cpu_ops, trt_ops = _optimized_ops(cpu.onnx_path, tmp_path), _optimized_ops(trt.onnx_path, tmp_path)
    assert "QLinearConv" in cpu_ops and "Conv" not in cpu_ops and "QGemm" in cpu_ops
    assert "QLinearConv" not in trt_ops and "Conv" in trt_ops  # inputs only: ORT dequantizes and convolves in float
    lint = lint_from_onnx(trt.onnx_path)
    assert lint.ok and not [f for f in lint.findings if f.code.startswith("qdq-")]
    cpu_model = onnx.load(str(cpu.onnx_path))
    conv_outputs = {n.output[0] for n in cpu_model.graph.node if n.op_type == "Conv"}
    assert {n.input[0] for n in cpu_model.graph.node if n.op_type == "QuantizeLinear"} >= conv_outputs
    feed = image()
    want = _run(src, feed)
    errors = {
        form: np.max(np.abs(_run(r.onnx_path, feed) - want)) / np.max(np.abs(want))
        for form, r in (("cpu", cpu), ("tensorrt", trt))
    }
    assert errors["tensorrt"] < 0.05  # ORT dequantizes its inputs and convolves in float: no integer kernel
    # the CPU form's integer kernels: exact sums where the CPU has VNNI; an x86 CPU without it adds two products in
    # 16 bits, which saturate (12% here on an AVX2-only EPYC): what the build's note and manifest say
    assert errors["cpu"] < (0.25 if u8s8_saturates() else 0.05)


def test_the_cpus_whose_int8_kernels_saturate_are_x86_without_vnni():
    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    vnni = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n"
    assert u8s8_saturates(avx2, "x86_64") and not u8s8_saturates(vnni, "x86_64")
    assert not u8s8_saturates(avx2.replace("avx2", "avx2 avx_vnni"), "x86_64")  # Alder Lake's AVX-VNNI
    assert u8s8_saturates(avx2, "aarch64") is False  # ARM's dot products add in 32 bits
    assert u8s8_saturates("processor\t: 0\n", "x86_64") is None  # x86, kind unknown: the note says so
    from tritongen.build import int8_cpu_note

    assert "could not tell whether this CPU has VNNI" in int8_cpu_note(None)
    assert "VNNI" not in int8_cpu_note(False).split(";")[0] and "no VNNI" in int8_cpu_note(True)


def test_cpu_form_keeps_the_tensorrt_form_for_a_graph_without_conv(tmp_path):
    rng = np.random.default_rng(4)
    src = _save(_block(rng), tmp_path / "src" / "model.onnx")
    data = calibration_data_from_arrays(_batches(rng, 8), _batches(rng, 2))
    result = int8_onnx_from_onnx(src, tmp_path / "int8", data, form="cpu")
    assert result.form == "tensorrt"
    zero_points = [numpy_helper.to_array(i) for i in onnx.load(str(result.onnx_path)).graph.initializer]
    assert not any(a.dtype == np.uint8 for a in zero_points)


def test_a_migration_that_changes_the_fp32_function_is_left_out(tmp_path, monkeypatch, caplog):
    """Insurance against the next weight-sharing pattern: the migrated graph is checked against the original on a
    calibration batch, and one that answers otherwise is not used."""
    import tritongen.precision.smoothquant as smoothquant

    rng = np.random.default_rng(4)
    src = _save(_block(rng), tmp_path / "src" / "model.onnx")
    migrate = smoothquant.smooth_model

    def broken(model, batches, *args):
        model, groups = migrate(model, batches, *args)
        gamma = next(i for i in model.graph.initializer if i.name == "gamma")
        gamma.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(gamma) * 2, "gamma"))  # the LayerNorm off
        return model, groups

    monkeypatch.setattr(smoothquant, "smooth_model", broken)
    with caplog.at_level("WARNING"):
        out, groups = smoothed_onnx_from_onnx(src, tmp_path / "smooth" / "model.onnx", _batches(rng, 4))
    assert out == src and groups == () and "scale migration left out: output 'y' moved by" in caplog.text


def test_outputs_with_the_same_inf_or_nan_in_the_same_places_do_not_leave_a_correct_migration_out(tmp_path):
    """inf - inf is NaN: a second output holding -inf (a masked score) made every migration read 'moved by nan'."""
    rng = np.random.default_rng(5)
    model = _block(rng)
    model.graph.node.append(helper.make_node("Add", ["y", "mask"], ["masked"], name="masked"))
    mask = np.zeros(D)
    mask[2], mask[7] = -np.inf, np.nan
    model.graph.initializer.append(_init("mask", mask))
    model.graph.output.append(helper.make_tensor_value_info("masked", TensorProto.FLOAT, ["b", 8, D]))
    src = _save(model, tmp_path / "src" / "model.onnx")
    out, groups = smoothed_onnx_from_onnx(src, tmp_path / "smooth" / "model.onnx", _batches(rng, 4))
    assert out != src and groups  # migrated: the non-finite values sit where they sat
