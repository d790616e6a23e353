"""``tritongen build model.onnx`` (issue 16, item 6): ONNX files written by ``torch.onnx.export`` here, I/O read from
the graph, the original file in ONNX Runtime as the parity reference, external data and opsets checked, and one
served end to end with ``infer --check``."""

from __future__ import annotations

import gc
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tests import factories
from tests.test_bad_input import _assert_one_clean_line, _run
from tritongen.errors import TritongenError
from tritongen.load import detect_format
from tritongen.onnx_input import is_onnx_file, onnx_model_from_file


def _export(
    model: torch.nn.Module, args: tuple, path: Path, names: list[str], outputs: list[str], axes: dict | None
) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            args,
            str(path),
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            dynamo=False,
            opset_version=17,
        )
    return path


def _conv_onnx(folder: Path, batch_axis: bool = True) -> Path:
    axes = {"image": {0: "batch"}, "logits": {0: "batch"}} if batch_axis else None
    return _export(
        factories.make_small_conv(), factories.small_conv_inputs(), folder / "conv.onnx", ["image"], ["logits"], axes
    )


def _with_external_data(src: Path, folder: Path) -> Path:
    model = onnx.load(str(src))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "conv.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="conv.weights",
        size_threshold=0,
    )
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx_files")
    (root / "fixed").mkdir()
    conv = _conv_onnx(root)
    seq = _export(
        factories.make_dynamic_seq(),
        factories.dynamic_seq_inputs(),
        root / "seq.onnx",
        ["x"],
        ["mean"],
        {"x": {0: "batch", 1: "length"}, "mean": {0: "batch"}},
    )
    return {
        "root": root,
        "conv": conv,
        "seq": seq,
        "external": _with_external_data(conv, root / "external"),
        "fixed": _conv_onnx(root / "fixed", batch_axis=False),
    }


def _manifest(repo: Path, name: str) -> dict:
    return json.loads((repo / name / "1" / "tritongen" / "manifest.json").read_text())


def test_onnx_is_detected_from_its_content(files, tmp_path):
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(files["conv"].read_bytes())
    assert detect_format(renamed).kind == "onnx"
    assert not is_onnx_file(b"\x08\x01")  # too short to say
    assert not is_onnx_file(b"PK\x03\x04....")
    weights = factories.save_model(factories.make_tiny_linear(), tmp_path / "w.pt", "state_dict")
    assert not is_onnx_file(weights.read_bytes()[:16])


def test_onnx_file_builds_with_io_from_the_graph(files, tmp_path):
    code, out, err = _run(["build", str(files["conv"]), "--repo", str(tmp_path)])
    assert code == 0, err
    assert "(version 1, local target, from the ONNX file)" in out
    assert "parity gate: ONNX Runtime vs the original ONNX file" in err
    manifest = _manifest(tmp_path, "conv")
    assert manifest["source"]["form"] == "onnx" and manifest["parity"]["ok"]
    assert manifest["spec"]["max_batch_size"] == 8 and manifest["spec"]["inputs_from"] == "onnx"
    assert manifest["spec"]["inputs"] == [{"name": "image", "dtype": "FP32", "dims": [3, 32, 32]}]
    assert [(t["name"], t["dims"]) for t in manifest["spec"]["outputs"]] == [("logits", [10])]
    reference = np.load(tmp_path / "conv" / "1" / "tritongen" / "reference_outputs.npz")["logits"]
    samples = np.load(tmp_path / "conv" / "1" / "tritongen" / "samples.npz")["image"]
    with torch.no_grad():  # the reference the build saved is the model's own answer
        np.testing.assert_allclose(reference, factories.make_small_conv()(torch.from_numpy(samples)).numpy(), atol=1e-5)


def test_dynamic_dims_of_the_graph_stay_dynamic_and_are_checked_at_their_range(files, tmp_path):
    code, out, err = _run(["build", str(files["seq"]), "--repo", str(tmp_path), "--dim-range", "x:0:3:10:40"])
    assert code == 0, err
    manifest = _manifest(tmp_path, "seq")
    assert manifest["spec"]["inputs"] == [{"name": "x", "dtype": "FP32", "dims": [-1, 8]}]
    assert {r["case"] for r in manifest["parity"]["results"]} == {
        "batch 1",
        "batch 1, min dims",
        "batch 1, max dims",
        "batch 8",
    }


def test_external_data_is_read_and_written_beside_the_model(files, tmp_path):
    code, out, err = _run(["build", str(files["external"]), "--repo", str(tmp_path), "--name", "ext"])
    assert code == 0, err
    manifest = _manifest(tmp_path, "ext")
    assert {"1/model.onnx", "1/model.onnx.data"} <= set(manifest["files"])
    assert manifest["parity"]["ok"]


def test_an_onnx_file_swapped_after_its_checks_is_not_what_is_built(files, tmp_path, monkeypatch):
    """The checks and ONNX Runtime read the ONNX file (and its external data) from where it was, and the build's
    cleaning read it once more: a file (or its data) swapped between the two was written into the repository."""
    import tritongen

    source = _with_external_data(files["conv"], tmp_path / "model")
    other = _export(
        factories.make_small_conv(seed=7),
        factories.small_conv_inputs(),
        tmp_path / "other.onnx",
        ["image"],
        ["logits"],
        {"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    swapped = _with_external_data(other, tmp_path / "swap")
    said = []

    def progress(line: str) -> None:
        said.append(line)
        if "cleaning the ONNX graph" in line:  # after the load and its checks, before the graph is read again
            for name in ("conv.onnx", "conv.weights"):
                (source.parent / name).write_bytes((swapped.parent / name).read_bytes())

    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))  # where the private copy goes
    tritongen.build(source, repo=tmp_path / "repo", name="conv", progress=progress)
    assert any("cleaning the ONNX graph" in line for line in said)
    gc.collect()
    assert not list(private.iterdir())  # the copy went with the build
    served = onnx.load(str(tmp_path / "repo" / "conv" / "1" / "model.onnx"))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in served.graph.initializer}
    first = onnx.load(str(files["conv"]))
    for t in first.graph.initializer:  # the file as checked, not the one swapped in
        if t.name in weights:
            np.testing.assert_array_equal(weights[t.name], onnx.numpy_helper.to_array(t))
    assert set(weights) & {t.name for t in first.graph.initializer}


def test_a_graph_without_batch_axis_builds_unbatched_or_says_why_not(files, tmp_path):
    code, out, err = _run(["build", str(files["fixed"]), "--repo", str(tmp_path)])
    assert code == 0, err
    manifest = _manifest(tmp_path, "conv")
    assert manifest["spec"]["max_batch_size"] == 0
    assert manifest["spec"]["inputs"] == [{"name": "image", "dtype": "FP32", "dims": [2, 3, 32, 32]}]
    code, out, err = _run(["build", str(files["fixed"]), "--repo", str(tmp_path / "b"), "--max-batch-size", "4"])
    _assert_one_clean_line(
        "fixed batch", code, out, err, ("tensor 'image' has a fixed first dimension", "--max-batch-size 0")
    )


def test_precision_variant_is_guarded_against_the_original_file(files, tmp_path):
    code, out, err = _run(
        ["build", str(files["conv"]), "--repo", str(tmp_path), "--target", "onnxruntime", "--precision", "fp16"]
    )
    assert code == 0, err
    manifest = _manifest(tmp_path, "conv")
    assert manifest["precision"]["precision"] == "fp16" and manifest["precision"]["ok"]


def _rewritten(files: dict[str, Path], name: str, change) -> Path:
    """A copy of the external-data model with ``change(model)`` applied to its graph (data left where it is)."""
    folder = files["external"].parent
    model = onnx.load(str(files["external"]), load_external_data=False)
    change(model)
    path = folder / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def _set_location(value: str, offset: str | None = None):
    def change(model):
        entries = model.graph.initializer[0].external_data
        for entry in entries:
            if entry.key == "location":
                entry.value = value
            if entry.key == "offset" and offset is not None:
                entry.value = offset
        if offset is not None and not any(e.key == "offset" for e in entries):
            entries.add(key="offset", value=offset)

    return change


def _set_opset(version: int):
    def change(model):
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = version

    return change


def _custom_op(model):
    model.graph.node[0].domain = "com.example"
    model.opset_import.add(domain="com.example", version=1)


ATTACKS = [
    (
        "external data outside the folder",
        lambda f: _rewritten(f, "up", _set_location("../../conv.onnx")),
        ("keeps its data in '../../conv.onnx'", "not a file name beside the model"),
    ),
    (
        "external data at an absolute path",
        lambda f: _rewritten(f, "abs", _set_location("/etc/passwd")),
        ("'/etc/passwd'", "not a file name beside the model"),
    ),
    (
        "external data file missing",
        lambda f: _rewritten(f, "gone", _set_location("nope.bin")),
        ("'nope.bin', which does not exist",),
    ),
    (
        "external data beyond the end of its file",
        lambda f: _rewritten(f, "far", _set_location("conv.weights", "99999999")),
        ("beyond its", "truncated"),
    ),
    ("opset newer than onnx knows", lambda f: _rewritten(f, "new", _set_opset(999)), ("uses opset 999",)),
    ("opset older than ONNX Runtime runs", lambda f: _rewritten(f, "old", _set_opset(3)), ("uses opset 3",)),
    (
        "operator from a custom domain",
        lambda f: _rewritten(f, "custom", _custom_op),
        ("com.example::", "standard ONNX"),
    ),
    ("truncated ONNX file", lambda f: _truncated(f), ("cannot be read",)),
    (
        # was a failure of the generated config's validation naming a staging folder already removed
        "a 0-d (scalar) graph input",
        lambda f: _scalar_input(f),
        ("graph input 's' is a 0-d (scalar) tensor", "of shape [1]"),
    ),
    ("a graph input of unknown rank", lambda f: _unranked_input(f), ("graph input 's' has no shape",)),
    (
        # was "the exported ONNX model does not pass onnx.checker: ...: report this with the model; try --opset 17"
        "a graph the checker refuses",
        lambda f: _shapeless_output(f),
        ("shapeless.onnx does not pass onnx.checker: Field 'shape'", "check_model('shapeless.onnx', full_check"),
    ),
]


def _shapeless_output(files: dict[str, Path]) -> Path:
    """A graph output declared with a type and no shape: ONNX Runtime runs it, onnx.checker (full) refuses it."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    path = files["root"] / "shapeless.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _unranked_input(files: dict[str, Path]) -> Path:
    return _scalar_input(files, shape=None, name="unranked")


def _scalar_input(files: dict[str, Path], shape=(), name: str = "scalar_in") -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["y"])],
        "scale",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, shape),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
    )
    path = files["root"] / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _truncated(files: dict[str, Path]) -> Path:
    path = files["root"] / "truncated.onnx"
    data = files["conv"].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


FLAG_CASES = [
    ("--output names that are not the graph's", ["--output", "scores"], ("are not the graph's outputs ['logits']",)),
    (
        "--input that does not fit the graph",
        ["--input", "image:FP32:3,64,64"],
        ("does not fit the graph's FP32 [3, 32, 32]",),
    ),
    ("--input with another name", ["--input", "x:FP32:3,32,32"], ("are not the graph's inputs ['image']",)),
    ("--const with an ONNX file", ["--const", "sr=1"], ("--const does not apply to an ONNX file",)),
    ("--exporter with an ONNX file", ["--exporter", "dynamo"], ("--exporter dynamo does not apply to an ONNX file",)),
    (
        # said "declare it -1 in --input", which an ONNX file's fixed dimension cannot take
        "--dim-range on a fixed dimension of the graph",
        ["--dim-range", "image:1:16:32:32"],
        ("dimension 1 of input 'image' is fixed at 32", "export the ONNX file again with that dimension dynamic"),
    ),
    (
        "--model-factory with an ONNX file",
        ["--model-factory", "tests.factories:make_small_conv"],
        ("an ONNX file that already contains the model",),
    ),
]


@pytest.mark.parametrize("case, make, words", ATTACKS, ids=[c[0] for c in ATTACKS])
def test_bad_onnx_files_get_one_line(files, tmp_path, monkeypatch, case, make, words):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["build", str(make(files))])
    _assert_one_clean_line(case, code, out, err, words)
    assert code == 1 and not list(tmp_path.iterdir())


@pytest.mark.parametrize("case, extra, words", FLAG_CASES, ids=[c[0] for c in FLAG_CASES])
def test_flags_that_do_not_fit_an_onnx_file_get_one_line(files, tmp_path, monkeypatch, case, extra, words):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["build", str(files["conv"]), *extra])
    _assert_one_clean_line(case, code, out, err, words)
    assert code == 1 and not list(tmp_path.iterdir())


def test_external_data_is_not_read_before_it_is_checked(files):
    with pytest.raises(TritongenError, match="not a file name beside the model"):
        onnx_model_from_file(_rewritten(files, "up2", _set_location("../conv.onnx")))


@pytest.mark.server
def test_onnx_file_serves_and_passes_infer_check(files, tmp_path):
    from tritongen.infer import InferSpec, infer_model
    from tritongen.server import ServeSpec, server_from_repository

    repo = tmp_path / "repo"
    code, out, err = _run(["build", str(files["external"]), "--repo", str(repo), "--name", "conv_onnx"])
    assert code == 0, err
    with server_from_repository(ServeSpec(repo=repo)) as server:
        result = infer_model(InferSpec(name="conv_onnx", repo=repo, url=server.grpc_url, check=True))
        assert result.check is not None and result.check.ok, result.check.table()
        code, out, err = _run(["infer", "conv_onnx", "--repo", str(repo), "--url", server.grpc_url, "--check"])
        assert code == 0, err
        # the reference an ONNX file's build saved is the original graph's outputs, not PyTorch's
        assert "check against the original ONNX file's outputs saved by the build:" in out, out
        assert "(tolerance: |served - original| <= " in out and "PyTorch" not in out, out


def test_a_graph_input_of_one_value_per_item_is_a_scalar_per_item(tmp_path):
    """A [batch] graph input (an index per item) is served as dims [1] with Triton's empty reshape: the reference
    run fed it [batch, 1] before ("Invalid rank for input: t Got: 2 Expected: 1")."""
    from tests.test_build import _IndexedScale

    path = _export(
        _IndexedScale().eval(),
        (torch.randn(2, 4), torch.tensor([1, 2])),
        tmp_path / "indexed.onnx",
        ["x", "t"],
        ["y"],
        {"x": {0: "batch"}, "t": {0: "batch"}, "y": {0: "batch"}},
    )
    code, out, err = _run(["build", str(path), "--repo", str(tmp_path / "repo"), "--target", "onnxruntime"])
    assert code == 0, err
    assert _manifest(tmp_path / "repo", "indexed")["spec"]["inputs"][1] == {
        "name": "t",
        "dtype": "INT64",
        "dims": [1],
        "scalar": True,
    }
    code, out, err = _run(
        ["build", str(path), "--repo", str(tmp_path / "r2"), "--input", "x:FP32:4", "--input", "t:INT64:1"]
    )
    words = ("--input t:INT64:1 does not fit the graph's INT64 [batch] (a scalar per item: --input t:INT64:)",)
    _assert_one_clean_line("t:INT64:1", code, out, err, words)


def test_a_graph_that_fails_on_the_samples_is_one_line_without_onnx_runtimes_own_log(tmp_path, capfd):
    """ONNX Runtime logged its error (coloured, on the process's stderr) before the error line, and the fix named
    forward(), which an ONNX file has not."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [3, 5])  # fits no batch of 4 wide rows
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "g", [x], [y], [shape])
    path = tmp_path / "reshape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    code, out, err = _run(["build", str(path), "--repo", str(tmp_path / "repo")])
    words = ("the model failed on inputs x[", "the graph's inputs were read from the file: pass --sample-inputs")
    _assert_one_clean_line("a failing graph", code, out, err, words)
    assert "forward()" not in err
    assert "onnxruntime" not in capfd.readouterr().err  # what ONNX Runtime itself wrote to the process's stderr


def _constant_bomb(path: Path, shape: list[int], copies: int = 1, via_concat: bool = False, rank: int = 0) -> Path:
    """A tiny graph computing, from constants alone, ``copies`` float tensors of ``shape`` (summed into the output):
    a 300-byte file of this form with a shape of 10**10 took all memory in constant folding."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, sums = [], [], ["x"]
    for i in range(copies):
        if via_concat:  # the shape computed by a node: found only by shape inference's data propagation
            inits.append(numpy_helper.from_array(np.array(shape[:1], dtype=np.int64), f"part{i}"))
            parts = [f"part{i}"] * len(shape)
            nodes.append(helper.make_node("Concat", parts, [f"shape{i}"], axis=0))
        else:
            inits.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), f"shape{i}"))
        value = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
        nodes.append(helper.make_node("ConstantOfShape", [f"shape{i}"], [f"big{i}"], value=value))
        nodes.append(helper.make_node("ReduceSum", [f"big{i}"], [f"sum{i}"], keepdims=0))
        sums.append(f"sum{i}")
    nodes.append(helper.make_node("Sum", sums, ["y"]))
    graph = helper.make_graph(
        nodes,
        "bomb",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=inits,
    )
    if rank:  # a declared rank shape inference is not given (a crafted rank of millions took gigabytes)
        graph.value_info.append(helper.make_tensor_value_info("sum0", TensorProto.FLOAT, [1] * rank))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "case, shape, copies, via_concat, rank, words",
    [
        ("one tensor too large", [8192, 8192], 1, False, 0, ("big0 (ConstantOfShape) of shape [8192,8192]", "128 MiB")),
        ("a shape computed by a Concat", [8192, 8192], 1, True, 0, ("big0 (ConstantOfShape) of shape [8192,8192]",)),
        ("too many folded constants", [1 << 23], 3, False, 0, ("computes 0.1 GB of tensors from its constants",)),
        ("a graph shape inference cannot size", [4], 1, False, 65, ("shape inference cannot follow",)),
    ],
)
def test_a_graph_computing_huge_constants_is_refused_before_onnx_runtime_folds_them(
    tmp_path, monkeypatch, case, shape, copies, via_concat, rank, words
):
    """The bounds are made small here (128 MiB for one tensor, 64 MiB folded) so that a regression allocates
    megabytes, not the gigabytes the real bounds (4 GiB, 2 GiB) stand for."""
    from tritongen import onnx_input

    monkeypatch.setattr(onnx_input, "MAX_STATIC_TENSOR_BYTES", 128 << 20)
    monkeypatch.setattr(onnx_input, "MAX_FOLDED_BYTES", 64 << 20)
    model = _constant_bomb(tmp_path / "bomb.onnx", shape, copies, via_concat, rank)
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["build", str(model), "--repo", "out/models/repo"])
    _assert_one_clean_line(case, code, out, err, words)
    assert code == 1 and not (tmp_path / "out").exists()  # nor the parents the build made for the repository
    small = _constant_bomb(tmp_path / "small.onnx", [256, 256], copies, via_concat)
    assert _run(["build", str(small), "--repo", "repo"])[0] == 0  # the same graph at a sane size builds


def _external(name: str, dtype: int, dims: list[int]):
    """An initializer whose data is external (no file needed: only the graph is read for sizes)."""
    from onnx import TensorProto

    tensor = TensorProto(name=name, data_type=dtype, dims=dims, data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", "1")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


@pytest.mark.parametrize("kind", ["int8 weights dequantized", "linear layers transposed"])
def test_a_large_models_own_weights_set_the_scale_of_what_it_may_compute(tmp_path, kind):
    """A review found real models refused: a DequantizeLinear of 655M INT8 weights computes 2.6 GB from constants
    (4x its bytes), 36 transposed 4096x4096 weights 2.4 GB (as many bytes as they hold); the bounds are the larger
    of theirs and 4x the model's own weights."""
    from onnx import TensorProto, helper, numpy_helper

    from tritongen.onnx_input import check_static_sizes

    if kind.startswith("int8"):
        inits = [
            _external("W", TensorProto.INT8, [40000, 16384]),
            numpy_helper.from_array(np.array(0.01, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
        ]
        nodes = [
            helper.make_node("DequantizeLinear", ["W", "s", "z"], ["Wf"]),
            helper.make_node("Gather", ["Wf", "x"], ["y"]),
        ]
        x = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", 8])
    else:
        inits = [_external(f"W{i}", TensorProto.FLOAT, [4096, 4096]) for i in range(36)]
        nodes, previous = [], "x"
        for i in range(36):
            nodes += [
                helper.make_node("Transpose", [f"W{i}"], [f"T{i}"], perm=[1, 0]),
                helper.make_node("MatMul", [previous, f"T{i}"], [f"h{i}"]),
            ]
            previous = f"h{i}"
        nodes.append(helper.make_node("Identity", [previous], ["y"]))
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4096])
    graph = helper.make_graph(nodes, "big", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    check_static_sizes(path)  # no refusal
