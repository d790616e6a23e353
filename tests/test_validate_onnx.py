"""The ONNX Runtime backend's load-time checks of a config against its graph, run offline: on Triton's own QA models
(the configs Triton completed from them are accepted) and on those configs broken one way at a time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.factories import declared_nodes, declared_opsets, onnx_declaring
from tests.test_cli import tritongen
from tritongen.validate import config_from_text, validate_repository
from tritongen.validate_onnx import _tensor_problems, graph_io_from_onnx, onnx_io_problems

ONNX_CASES = (
    (Path(__file__).resolve().parent.parent.parent / "shared" / "testdata" / "triton_l0_model_config")
    / "autofill_noplatform_success"
    / "onnx"
)
CASES_WITH_MODELS = sorted(p.parent.parent for p in ONNX_CASES.glob("*/1/model.onnx")) if ONNX_CASES.exists() else []


def case(name: str):
    """Triton's completed config of a QA case (mutable) and the graph it was completed from."""
    folder = ONNX_CASES / name
    if not folder.exists():
        pytest.skip(f"Triton's QA cases are not beside the repository ({ONNX_CASES})")
    return config_from_text((folder / "expected").read_text()), graph_io_from_onnx(folder / "1" / "model.onnx")


@pytest.mark.parametrize("folder", CASES_WITH_MODELS, ids=lambda p: p.name)
def test_the_config_triton_completed_from_its_graph_fits_the_graph(folder):
    config = config_from_text((folder / "expected").read_text())
    assert onnx_io_problems(config, config.name, graph_io_from_onnx(folder / "1" / "model.onnx"), "1/model.onnx") == []


def test_the_qa_cases_have_models():
    assert len(CASES_WITH_MODELS) >= 3, CASES_WITH_MODELS


def type_value(name: str) -> int:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.DataType.Value(name)


def only(problems: list[str], *needles: str) -> None:
    assert len(problems) == 1 and all(n in problems[0] for n in needles), (needles, problems)


def test_a_data_type_the_graph_does_not_have_is_refused_as_the_backend_would():
    config, graph = case("empty_config")
    config.input[0].data_type = type_value("TYPE_FP16")
    only(
        onnx_io_problems(config, "m", graph, "1/model.onnx"),
        "unable to load model 'm', configuration expects datatype TYPE_FP16 for input 'INPUT0', model provides "
        "TYPE_INT32",
        "set data_type: TYPE_INT32",
    )


def test_an_output_data_type_is_checked_too():
    config, graph = case("empty_config")
    config.output[1].data_type = config.input[0].data_type  # INT32 where the graph gives INT8
    only(
        onnx_io_problems(config, "m", graph, "w"), "datatype TYPE_INT32 for output 'OUTPUT1', model provides TYPE_INT8"
    )


def test_a_fixed_graph_dim_must_equal_the_configs():
    config, graph = case("empty_config")
    config.input[1].dims[0] = 15
    only(
        onnx_io_problems(config, "m", graph, "w"),
        "model 'm', tensor 'INPUT1': the model expects 2 dimensions (shape [-1,16]) but the model configuration "
        "specifies 2 dimensions (an initial batch dimension because max_batch_size > 0 followed by the explicit "
        "tensor shape, making complete shape [-1,15])",
    )


def test_a_variable_config_dim_does_not_fit_a_fixed_graph_dim():
    config, graph = case("empty_config")
    config.input[0].dims[0] = -1
    only(onnx_io_problems(config, "m", graph, "w"), "tensor 'INPUT0': the model expects 2 dimensions (shape [-1,16])")


def test_a_variable_graph_dim_takes_any_config_dim_and_a_fixed_one_only_its_own(tmp_path):
    """For an output the backend compares exactly, but with the dims ONNX Runtime's shape inference filled in, which
    are not in the file: a dim declared variable may be inferred to the config's, so only fixed dims are judged."""
    config = config_from_text(
        'name: "v"\nbackend: "onnxruntime"\nmax_batch_size: 4\n'
        'input [{ name: "x" data_type: TYPE_FP32 dims: [ -1 ] }]\n'
        'output [{ name: "y" data_type: TYPE_FP32 dims: [ -1 ] }]\n'
    )
    (tmp_path / "model.onnx").write_bytes(onnx_declaring(config))  # graph dims [batch, d1]: both variable
    graph = graph_io_from_onnx(tmp_path / "model.onnx")
    assert onnx_io_problems(config, "v", graph, "w") == []
    config.input[0].dims[0] = 7
    config.output[0].dims[0] = 7
    assert onnx_io_problems(config, "v", graph, "w") == []
    config.output[0].dims.append(3)  # but not another rank
    only(onnx_io_problems(config, "v", graph, "w"), "tensor 'y': the model expects 2 dimensions (shape [-1,-1])")
    fixed, _ = case("empty_config")  # OUTPUT0 declared [var, 16]
    fixed.output[0].dims[0] = -1
    only(onnx_io_problems(fixed, "m", case("empty_config")[1], "w"), "tensor 'OUTPUT0': the model expects 2 dim")


def test_a_batching_config_needs_a_variable_first_graph_dim():
    config, graph = case("no_config_no_batch")  # graph dims [16]: no batch dim
    config.max_batch_size = 4
    problems = onnx_io_problems(config, "m", graph, "w")
    assert len(problems) == 4, problems
    assert (
        "tensor 'INPUT0': for the model to support batching the shape should have at least 1 dimension and the "
        "first dimension must be -1; but shape expected by the model is [16]" in problems[0]
    )


def test_a_config_without_batching_on_a_batched_graph_is_refused():
    config, graph = case("empty_config")
    config.max_batch_size = 0
    problems = onnx_io_problems(config, "m", graph, "w")
    assert (
        "the model expects 2 dimensions (shape [-1,16]) but the model configuration specifies 1 dimensions "
        "(shape [16])" in problems[0]
    ), problems


@pytest.mark.parametrize(
    ("role", "index", "renamed", "message"),
    [
        ("input", 1, "INPUT9", "unexpected inference input 'INPUT9', allowed inputs are: INPUT0, INPUT1"),
        ("output", 0, "OUT", "unexpected inference output 'OUT', allowed outputs are: OUTPUT0, OUTPUT1"),
    ],
)
def test_a_tensor_the_graph_lacks_is_named_with_the_ones_it_has(role, index, renamed, message):
    config, graph = case("empty_config")
    getattr(config, role)[index].name = renamed
    only(onnx_io_problems(config, "m", graph, "w"), message)


def test_a_graph_input_missing_from_the_config_is_counted_and_named():
    config, graph = case("empty_config")
    del config.input[1]
    only(
        onnx_io_problems(config, "m", graph, "1/model.onnx"),
        "configuration expects 1 inputs, model provides 2 (1/model.onnx: INPUT0, INPUT1): add INPUT1",
    )


def test_an_optional_input_on_a_batching_model_is_refused():
    config, graph = case("empty_config")
    config.input[1].optional = True
    problems = onnx_io_problems(config, "m", graph, "w")
    assert any("optional input 'INPUT1' is not supported for models that support batching" in p for p in problems)


SEQUENCE = (
    'name: "s"\nbackend: "onnxruntime"\nmax_batch_size: 4\n'
    'input [{ name: "x" data_type: TYPE_FP32 dims: [ 3 ] }]\n'
    'output [{ name: "y" data_type: TYPE_FP32 dims: [ 3 ] }]\n'
    'sequence_batching { control_input [{ name: "START" control [{ kind: CONTROL_SEQUENCE_START '
    "int32_false_true: [ 0, 1 ] }] }] }\n"
)


def sequence_graph(tmp_path: Path, start_type: str, start_dims: str):
    """The sequence model's graph: ``x`` and a START input declared like ``start_type``/``start_dims``."""
    declared = config_from_text(
        SEQUENCE.split("sequence_batching")[0].replace(
            "input [", f'input [{{ name: "START" data_type: {start_type} dims: [ {start_dims} ] }}, '
        )
    )
    (tmp_path / "model.onnx").write_bytes(onnx_declaring(declared))
    return graph_io_from_onnx(tmp_path / "model.onnx")


def test_a_sequence_control_is_a_graph_input_of_dims_1_and_the_controls_type(tmp_path):
    config = config_from_text(SEQUENCE)
    assert onnx_io_problems(config, "s", sequence_graph(tmp_path, "TYPE_INT32", "1"), "w") == []
    only(
        onnx_io_problems(config, "s", sequence_graph(tmp_path, "TYPE_FP32", "1"), "w"),
        "sequence control 'START', the model expects data-type TYPE_FP32 but the model configuration specifies "
        "data-type TYPE_INT32",
    )
    only(
        onnx_io_problems(config, "s", sequence_graph(tmp_path, "TYPE_INT32", "2"), "w"),
        "sequence control 'START' in model has dims [2] but dims [1] is expected",
    )


def test_a_sequence_control_the_graph_lacks_is_refused(tmp_path):
    config = config_from_text(SEQUENCE)
    (tmp_path / "model.onnx").write_bytes(onnx_declaring(config))  # x only
    problems = onnx_io_problems(config, "s", graph_io_from_onnx(tmp_path / "model.onnx"), "w")
    assert "configuration specified sequence control 'START', but model does not provide that input" in problems


def repository_with(tmp_path: Path, config_text: str, model: bytes) -> Path:
    folder = tmp_path / "repo" / "m"
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(config_text)
    (folder / "1" / "model.onnx").write_bytes(model)
    return tmp_path / "repo"


def test_validate_refuses_an_fp16_config_over_an_fp32_graph(tmp_path):
    """The hole this closes: a config edited to FP16 over an FP32 export passed `validate`; Triton refuses it."""
    text = (
        'name: "m"\nbackend: "onnxruntime"\nmax_batch_size: 8\n'
        'input [{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }]\n'
        'output [{ name: "y" data_type: TYPE_FP32 dims: [ 3 ] }]\n'
    )
    repo = repository_with(tmp_path, text, onnx_declaring(config_from_text(text)))
    assert validate_repository(repo).ok
    (repo / "m" / "config.pbtxt").write_text(text.replace("TYPE_FP32", "TYPE_FP16"))
    proc = tritongen("validate", str(repo))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert (
        "configuration expects datatype TYPE_FP16 for input 'x', model provides TYPE_FP32" in proc.stdout + proc.stderr
    )


def test_a_model_file_that_is_not_onnx_is_one_problem(tmp_path):
    text = (
        'name: "m"\nbackend: "onnxruntime"\nmax_batch_size: 8\ninput [{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }]\n'
    )
    text += 'output [{ name: "y" data_type: TYPE_FP32 dims: [ 3 ] }]\n'
    repo = repository_with(tmp_path, text, b"\x08\x07garbage that is not a protobuf \xff\xff")
    problems = list(validate_repository(repo).problems_by_model["m"])
    assert len(problems) == 1, problems
    assert (
        "1/model.onnx of model 'm' is not a model the ONNX Runtime backend can load (not an ONNX model" in problems[0]
    )


def test_a_fifo_in_place_of_the_model_is_refused_without_hanging(tmp_path):
    import os

    text = (
        'name: "m"\nbackend: "onnxruntime"\nmax_batch_size: 8\ninput [{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }]\n'
    )
    text += 'output [{ name: "y" data_type: TYPE_FP32 dims: [ 3 ] }]\n'
    repo = repository_with(tmp_path, text, b"")
    (repo / "m" / "1" / "model.onnx").unlink()
    os.mkfifo(repo / "m" / "1" / "model.onnx")  # a plain open() would wait for a writer forever
    problems = " ".join(validate_repository(repo).problems_by_model["m"])
    assert "(the file cannot be read (it is not a regular file" in problems, problems


def test_the_qa_model_copied_into_a_repository_validates(tmp_path):
    if not (ONNX_CASES / "empty_config").exists():
        pytest.skip("Triton's QA cases are not beside the repository")
    text = (ONNX_CASES / "empty_config" / "expected").read_text().replace('"empty_config"', '"m"')
    repo = repository_with(tmp_path, text, b"")
    shutil.copy(ONNX_CASES / "empty_config" / "1" / "model.onnx", repo / "m" / "1" / "model.onnx")
    report = validate_repository(repo, gpu_count=1)
    assert report.ok, report.summary()
    (repo / "m" / "config.pbtxt").write_text(text.replace("dims: 16", "dims: 8", 1))
    assert "shape [-1,8]" in " ".join(validate_repository(repo, gpu_count=1).problems_by_model["m"])


@pytest.mark.parametrize("folder", CASES_WITH_MODELS, ids=lambda p: p.name)
def test_a_config_without_inputs_or_outputs_is_completed_from_the_graph_as_triton_did(folder):
    """Triton's QA: the config given (or none) and the config Triton completed from the model (``expected``)."""
    from tritongen.validate_onnx import auto_completed

    given = folder / "config.pbtxt"
    config = config_from_text(given.read_text() if given.exists() else "")
    expected = config_from_text((folder / "expected").read_text())
    done, refused = auto_completed(config, folder.name, graph_io_from_onnx(folder / "1" / "model.onnx"))
    assert refused == ""
    assert done.max_batch_size == expected.max_batch_size
    for ours, theirs in ((done.input, expected.input), (done.output, expected.output)):
        assert sorted((t.name, t.data_type, list(t.dims)) for t in ours) == sorted(
            (t.name, t.data_type, list(t.dims)) for t in theirs
        )
    assert onnx_io_problems(config, folder.name, graph_io_from_onnx(folder / "1" / "model.onnx"), "w") == []


def test_a_batching_config_without_inputs_over_a_graph_that_cannot_batch_is_refused():
    config, graph = case("no_config_no_batch")
    config.max_batch_size = 8
    del config.input[:]
    only(
        onnx_io_problems(config, "m", graph, "w"),
        "autofill failed for model 'm': model does not support batching while non-zero max_batch_size is specified",
    )


def test_a_config_with_only_outputs_gets_the_graphs_inputs(tmp_path):
    config, graph = case("empty_config")
    del config.input[:]
    assert onnx_io_problems(config, "m", graph, "w") == []
    config.output[0].data_type = type_value("TYPE_BOOL")  # the given outputs are still checked
    only(onnx_io_problems(config, "m", graph, "w"), "for output 'OUTPUT0', model provides TYPE_INT8")


def graph_file(tmp_path: Path, inputs, outputs, initializers=(), ir_version: int | None = None) -> Path:
    """A model.onnx declaring ``inputs``/``outputs`` (onnx ValueInfoProtos) and ``initializers`` (TensorProtos)."""
    from onnx import helper

    graph = helper.make_graph(declared_nodes(outputs), "g", list(inputs), list(outputs), list(initializers))
    model = helper.make_model(graph, opset_imports=declared_opsets())
    if ir_version is not None:
        model.ir_version = ir_version
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def value(name: str, elem_type: int | None = 1, dims=None):
    from onnx import helper

    if elem_type is None:  # declared with neither type nor shape
        return helper.make_empty_tensor_value_info(name)
    return helper.make_tensor_value_info(name, elem_type, dims)


PLAIN = (
    'name: "p"\nbackend: "onnxruntime"\nmax_batch_size: 0\n'
    'input [{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }]\n'
    'output [{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }]\n'
)


def test_an_output_whose_type_and_shape_are_left_to_inference_is_not_refused(tmp_path):
    graph = graph_io_from_onnx(graph_file(tmp_path, [value("x", 1, [4])], [value("y", None)]))
    assert onnx_io_problems(config_from_text(PLAIN), "p", graph, "w") == []
    # a config without outputs: whether the model batches depends on the inferred shape, so it is not judged
    no_outputs = config_from_text(PLAIN.replace("max_batch_size: 0", "max_batch_size: 8").split("output")[0])
    assert onnx_io_problems(no_outputs, "p", graph, "w") == []


def inferring_graph(
    tmp_path: Path,
    output_dims,
    *,
    weight_rows: int = 64,
    shape_is_input: bool = False,
    stale_hidden: bool = False,
    folded_shape: bool = False,
    name: str = "model",
) -> Path:
    """x [batch, 64] -> MatMul with a weight of 64 x 32 FP32 (8 KiB: given to inference as a declared input, not
    its values) -> h -> Reshape to [0, 4, 8] by a small constant shape -> y, declared with ``output_dims`` (None:
    neither type nor shape). Shape inference computes y as [batch, 4, 8] FP32. ``shape_is_input``: the shape is
    also a graph input (IR 8: a request may replace it, so nothing is computed from it); ``stale_hidden``: a
    value_info declares h [batch, 16] (inference finds [batch, 32]); ``folded_shape``: the shape is the sum of two
    constants (ONNX Runtime's constant folding makes it one; shape inference without values knows only its length)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((weight_rows, 32), np.float32), "w")
    shape = numpy_helper.from_array(np.array([0, 4, 8], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Reshape", ["h", "shape"], ["y"])]
    extra = []
    if folded_shape:
        nodes.insert(0, helper.make_node("Add", ["shape_a", "zeros"], ["shape"]))
        shape.name = "shape_a"
        extra.append(numpy_helper.from_array(np.zeros(3, np.int64), "zeros"))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])]
    if shape_is_input:
        inputs.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [3]))
    y = helper.make_empty_tensor_value_info("y") if output_dims is None else value("y", 1, output_dims)
    stale = [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", 16])] if stale_hidden else []
    graph = helper.make_graph(nodes, "g", inputs, [y], [weight, shape, *extra], value_info=stale)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    return path


BATCHED = (
    'name: "b"\nbackend: "onnxruntime"\nmax_batch_size: 8\n'
    'input [{ name: "x" data_type: TYPE_FP32 dims: [ 64 ] }]\n'
    'output [{ name: "y" data_type: TYPE_FP32 dims: [ 4, 8 ] }]\n'
)


@pytest.mark.parametrize("declared", [None, ["batch", "a", "b"]], ids=["undeclared", "declared-variable"])
def test_an_output_dim_the_graph_computes_refuses_another_fixed_dim(tmp_path, declared):
    """ONNX Runtime completes a graph output's type and dims by shape inference before the backend compares them
    with the config's; validate runs ONNX's shape inference (the weights' values left out) likewise. A dim only
    inference supplies refuses another fixed dim, and takes a variable one (another ONNX Runtime may infer less)."""
    graph = graph_io_from_onnx(inferring_graph(tmp_path, declared))
    assert graph.outputs["y"].type_name == "TYPE_FP32" and graph.outputs["y"].computed == (-1, 4, 8)
    config = config_from_text(BATCHED)
    assert onnx_io_problems(config, "b", graph, "w") == []
    config.output[0].dims[0] = 16
    only(
        onnx_io_problems(config, "b", graph, "w"),
        "output 'y': the graph computes shape [-1,4,8] (ONNX shape inference; -1: not known) but the model "
        "configuration specifies [-1,16,8]: set its dims to [4,8]",
    )
    config.output[0].dims[0] = -1
    assert onnx_io_problems(config, "b", graph, "w") == []
    config = config_from_text(BATCHED)
    config.output[0].data_type = type_value("TYPE_FP16")
    only(onnx_io_problems(config, "b", graph, "w"), "for output 'y', model provides TYPE_FP32")


def ort_outputs_dims(path: Path, batched: bool, optimized: bool = True) -> list[list[int] | None]:
    """Each output's dims as ONNX Runtime reports them for ``path`` (what the backend compares a config with): -1
    for a symbolic or unknown dim, without the batch dim; None when it reports no shape. ``optimized``: every graph
    optimization on (ONNX Runtime's and Triton's default), else none."""
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    found: list[list[int] | None] = []
    for output in ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).get_outputs():
        dims = [d if isinstance(d, int) else -1 for d in output.shape]
        found.append((dims[1:] if batched else dims) if dims else None)
    return found


def ort_output_dims(path: Path, batched: bool, optimized: bool = True) -> list[int] | None:
    return ort_outputs_dims(path, batched, optimized)[0]


@pytest.mark.parametrize(
    ("declared", "options"),
    [
        (None, {}),
        (["batch", "a", "b"], {}),
        (["batch", "a", "b"], {"shape_is_input": True}),  # ORT computes nothing from an overridable initializer
        (None, {"shape_is_input": True}),
        (["batch", 4, 16], {}),  # declared 16, computed 8: ORT leaves the dim unknown
        (["batch", 4], {}),  # declared rank 2, computed rank 3: ORT keeps no shape
        (["batch", "n", "m"], {"stale_hidden": True}),  # a value_info inference disagrees with
        (["batch", 4], {"folded_shape": True}),  # rank conflict; ORT's folding resolves y again as [batch, 4, 8]
        (None, {"folded_shape": True}),
    ],
    ids=[
        "undeclared",
        "variable",
        "overridable",
        "overridable-undeclared",
        "conflict",
        "rank",
        "stale-value-info",
        "rank-folded",
        "undeclared-folded",
    ],
)
@pytest.mark.parametrize("optimized", [True, False], ids=["optimized", "unoptimized"])
def test_a_config_of_the_output_dims_onnx_runtime_reports_is_never_refused(tmp_path, declared, options, optimized):
    """The oracle is ONNX Runtime itself: whatever output shape its session reports (with every graph optimization,
    Triton's default, or none), the config that states it (a variable dim where ONNX Runtime knows none) passes
    validate."""
    path = inferring_graph(tmp_path, declared, **options)
    dims = ort_output_dims(path, batched=True, optimized=optimized)
    config = config_from_text(BATCHED)
    del config.output[0].dims[:]
    config.output[0].dims.extend(dims if dims is not None else [1])
    assert onnx_io_problems(config, "b", graph_io_from_onnx(path), "w") == []


def test_an_output_whose_declared_rank_inference_contradicts_refuses_only_what_onnx_runtime_never_reports(tmp_path):
    """Declared [batch, 4], computed [batch, 4, 8]: ONNX Runtime (1.19.2, Triton 2.51's, and 1.32 alike) reports no
    shape for it (a scalar to the backend) without graph optimizations, and the computed shape once they rewrite the
    graph; the declared shape stands for outputs computed from it. A config fitting none of these is refused."""
    path = inferring_graph(tmp_path, ["batch", 4])
    assert ort_output_dims(path, batched=True, optimized=False) is None
    graph = graph_io_from_onnx(path)
    assert graph.outputs["y"].dims == () and graph.outputs["y"].conflict == ((-1, 4), (-1, 4, 8))
    config = config_from_text(BATCHED)
    for dims in ([1], [4, 8], [4]):
        del config.output[0].dims[:]
        config.output[0].dims.extend(dims)
        assert onnx_io_problems(config, "b", graph, "w") == [], dims
    for dims in ([5, 8], [-1, 8]):  # the backend compares outputs exactly: a variable dim is not 4
        del config.output[0].dims[:]
        config.output[0].dims.extend(dims)
        only(
            onnx_io_problems(config, "b", graph, "w"),
            "model 'b', output 'y': the graph declares it as [-1,4] but computes [-1,4,8] (ONNX shape inference; -1: "
            f"not known), and the model configuration specifies [-1,{dims[0]},8], which ONNX Runtime reports for "
            "neither: declare the output in the ONNX file with the shape it computes, and set its dims to [4,8]",
        )


def test_outputs_after_a_rank_conflict_are_judged_as_onnx_runtime_reports_them(tmp_path):
    """y1 = Reshape(x) declared [6, 4] but computed [2, 3, 4]; y2 = Identity(y1) declared [6, 4]: ONNX Runtime keeps
    y2 as declared (y1 has no shape for its inference to pass on), at every optimization level."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = numpy_helper.from_array(__import__("numpy").array([2, 3, 4], "int64"), "s")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y1"]), helper.make_node("Identity", ["y1"], ["y2"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 12])],
        [value("y1", 1, [6, 4]), value("y2", 1, [6, 4])],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "chained.onnx"
    onnx.save(model, path)
    text = (
        'name: "c"\nbackend: "onnxruntime"\nmax_batch_size: 0\n'
        'input [{ name: "x" data_type: TYPE_FP32 dims: [ 2, 12 ] }]\n'
        'output [{ name: "y1" data_type: TYPE_FP32 dims: [ 1 ] }, { name: "y2" data_type: TYPE_FP32 dims: [ 1 ] }]\n'
    )
    found = graph_io_from_onnx(path)
    for optimized in (True, False):
        config = config_from_text(text)
        for output, dims in zip(config.output, ort_outputs_dims(path, batched=False, optimized=optimized)):
            del output.dims[:]
            output.dims.extend(dims if dims is not None else [1])
        assert onnx_io_problems(config, "c", found, "w") == [], optimized


def _oracle_graph(tmp_path: Path, name: str, nodes, inputs, outputs, initializers=(), opsets=()) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), *opsets])
    model.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def _oracle_cases(tmp_path: Path) -> list[Path]:
    """Graphs whose outputs ONNX Runtime reports otherwise than they are declared: a graph input and an initializer
    passed through as outputs (reported as the input's declaration, the initializer's dims), and a contrib operator
    ONNX's own inference does not know, whose output ONNX Runtime resolves to a rank the declaration contradicts
    (reported with no shape: a scalar to the backend)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 12])
    shape = numpy_helper.from_array(np.array([2, 3, 4], np.int64), "s")
    ms = helper.make_opsetid("com.microsoft", 1)
    return [
        _oracle_graph(tmp_path, "passed_input", [], [value("x", 1, [2, 3])], [value("x", 1, [6])]),
        _oracle_graph(
            tmp_path,
            "passed_initializer",
            [helper.make_node("Identity", ["a"], ["z"])],
            [value("a", 1, [1])],
            [value("z", 1, [1]), value("c", 1, [6])],
            [numpy_helper.from_array(np.zeros((2, 3), np.float32), "c")],
        ),
        _oracle_graph(
            tmp_path,
            "contrib_then_reshape",
            [
                helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"),
                helper.make_node("Reshape", ["g", "s"], ["y"]),
            ],
            [x],
            [value("y", 1, [6, 4])],
            [shape],
            [ms],
        ),
    ]


@pytest.mark.parametrize("optimized", [True, False], ids=["optimized", "unoptimized"])
def test_outputs_onnx_runtime_reports_otherwise_than_declared_are_never_refused(tmp_path, optimized):
    for path in _oracle_cases(tmp_path):
        found = graph_io_from_onnx(path)
        ort_dims = ort_outputs_dims(path, batched=False, optimized=optimized)
        for name, dims in zip(found.outputs, ort_dims):
            text = (
                'name: "m"\nbackend: "onnxruntime"\nmax_batch_size: 0\n'
                f'output [{{ name: "{name}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, dims or [1]))} ] }}]\n'
            )
            config = config_from_text(text)
            problems = _tensor_problems(config, "m", config.output[0], found.outputs[name], "output")
            assert problems == [], (path.name, name, dims, found.outputs[name])


def test_the_graph_is_read_in_a_process_of_its_own_within_bounds(tmp_path, monkeypatch):
    """A chain of Unsqueeze nodes makes ranks 1, 2, ..., n: inference's memory grows with n squared (a file of
    0.7 MB would take gigabytes). The graph is read in a child process within an address-space limit; past it, the
    outputs are judged on their declarations, and this process never holds the ranks."""
    import resource

    import onnx
    from onnx import TensorProto, helper

    from tritongen import validate_onnx

    monkeypatch.setattr(validate_onnx, "_CHILD_MEMORY_BYTES", 1 << 30)
    count = 20_000
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    nodes = [helper.make_node("Unsqueeze", [f"t{i}", "axes"], [f"t{i + 1}"]) for i in range(count)]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info(f"t{count}", TensorProto.FLOAT, None)],
        [axes],
    )
    path = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tensor = graph_io_from_onnx(path).outputs[f"t{count}"]
    assert tensor.dims is None and tensor.computed is None
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib < 256 * 1024  # not here: in the child
    # a short chain is inferred as before, through the same child (its rank past 64 is dropped there)
    assert graph_io_from_onnx(inferring_graph(tmp_path, None)).outputs["y"].computed == (-1, 4, 8)


def test_a_graph_is_read_once_for_the_same_bytes_and_again_when_they_change(tmp_path, monkeypatch):
    from tritongen import validate_onnx

    calls = []
    real = validate_onnx._graph_io_in_child

    def counted(data: bytes, infer: bool):
        calls.append(infer)
        return real(data, infer)

    monkeypatch.setattr(validate_onnx, "_READ", {})
    monkeypatch.setattr(validate_onnx, "_graph_io_in_child", counted)
    path = inferring_graph(tmp_path, None)
    assert graph_io_from_onnx(path).outputs["y"].computed == (-1, 4, 8)
    assert graph_io_from_onnx(path).outputs["y"].computed == (-1, 4, 8)
    assert calls == [True]
    inferring_graph(tmp_path, None, stale_hidden=True)  # the same file rewritten: other bytes, read again
    assert graph_io_from_onnx(path).outputs["y"].computed is None  # strict inference refuses the stale value_info
    assert calls == [True, True]
    # a child that never finishes: once more without inference, then the reason; not kept, so asked again
    monkeypatch.setattr(validate_onnx, "_graph_io_in_child", lambda data, infer: calls.append(infer))
    other = inferring_graph(tmp_path, None, shape_is_input=True, name="other")
    for _ in range(2):
        with pytest.raises(ValueError, match=r"its graph cannot be read within \d+ MiB of memory and 60 s"):
            graph_io_from_onnx(other)
    assert calls[2:] == [True, False, True, False]


def test_without_an_interpreter_to_start_the_declarations_are_read_here(tmp_path, monkeypatch):
    import sys

    from tritongen import validate_onnx

    monkeypatch.setattr(validate_onnx, "_READ", {})
    monkeypatch.setattr(sys, "executable", "")
    found = graph_io_from_onnx(inferring_graph(tmp_path, ["batch", "a", "b"]))
    assert found.outputs["y"].dims == (-1, -1, -1) and found.outputs["y"].computed is None  # no inference
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="not an ONNX model"):
        graph_io_from_onnx(bad)


def test_a_file_that_is_no_onnx_model_is_named_so_by_the_child(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="not an ONNX model"):
        graph_io_from_onnx(path)


def test_shape_inference_gets_the_small_constants_and_only_the_declarations_of_weights(tmp_path):
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from tritongen.validate_onnx import _lightened

    model = onnx.load(inferring_graph(tmp_path, ["batch", 4, 8]))
    big = numpy_helper.from_array(np.ones((64, 64), np.float32), "big")
    model.graph.node.append(helper.make_node("Constant", [], ["k"], value=big))
    light = _lightened(model)
    assert [t.name for t in light.graph.initializer] == ["shape"] and "Constant" not in {
        n.op_type for n in light.graph.node
    }
    assert [(v.name, [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in light.graph.input][1:] == [
        ("w", [64, 32]),
        ("k", [64, 64]),
    ]
    assert not light.graph.output[0].type.tensor_type.HasField("shape")


def test_a_graph_inference_cannot_follow_is_judged_on_its_declarations_alone(tmp_path):
    # the weight has 65 rows against x's 64 columns: inference fails, and y stays as declared
    graph = graph_io_from_onnx(inferring_graph(tmp_path, ["batch", "a", "b"], weight_rows=65))
    assert graph.outputs["y"].dims == (-1, -1, -1) and graph.outputs["y"].computed is None
    config = config_from_text(BATCHED)
    config.output[0].dims[1] = 16
    assert onnx_io_problems(config, "b", graph, "w") == []
    assert graph_io_from_onnx(inferring_graph(tmp_path, None, weight_rows=65)).outputs["y"].dims is None


def test_a_graph_of_a_huge_rank_is_not_given_to_shape_inference(tmp_path):
    import onnx
    from onnx import helper

    path = inferring_graph(tmp_path, None)
    model = onnx.load(path)
    model.graph.value_info.append(helper.make_tensor_value_info("unused", 1, [1] * 65))
    path.write_bytes(model.SerializeToString())
    assert graph_io_from_onnx(path).outputs["y"].computed is None


def test_an_initializer_listed_as_an_input_may_be_sent_from_ir_4_on(tmp_path):
    from onnx import helper

    weight = helper.make_tensor("w", 1, [4], [0.0] * 4)
    inputs = [value("x", 1, [4]), value("w", 1, [4])]
    text = PLAIN.replace("input [", 'input [{ name: "w" data_type: TYPE_FP32 dims: [ 4 ] }, ')
    graph = graph_io_from_onnx(graph_file(tmp_path, inputs, [value("y", 1, [4])], [weight]))
    assert list(graph.inputs) == ["x"] and list(graph.overridable) == ["w"]
    # counted as the graph's inputs are (without it): one more config input than that is refused by the count
    assert onnx_io_problems(config_from_text(PLAIN), "p", graph, "w") == []
    assert "configuration expects 2 inputs, model provides 1" in " ".join(
        onnx_io_problems(config_from_text(text), "p", graph, "w")
    )
    old = graph_io_from_onnx(graph_file(tmp_path, inputs, [value("y", 1, [4])], [weight], ir_version=3))
    assert list(old.inputs) == ["x"] and not old.overridable  # before IR 4 an initializer cannot be overridden


def test_an_optional_input_is_an_initializer_the_graph_lets_requests_override(tmp_path):
    from onnx import helper

    mask = helper.make_tensor("m", 1, [4], [1.0] * 4)
    inputs = [value("x", 1, [4]), value("m", 1, [4])]
    text = PLAIN.replace("input [", 'input [{ name: "m" data_type: TYPE_FP32 dims: [ 4 ] optional: true }, ')
    graph = graph_io_from_onnx(graph_file(tmp_path, inputs, [value("y", 1, [4])], [mask]))
    assert onnx_io_problems(config_from_text(text), "p", graph, "w") == []  # not counted, and a request may send it
    batching = text.replace("max_batch_size: 0", "max_batch_size: 8")
    assert any(
        "optional input 'm' is not supported for models that support batching" in p
        for p in onnx_io_problems(config_from_text(batching), "p", graph, "w")
    )
    plain_graph = graph_io_from_onnx(graph_file(tmp_path, inputs, [value("y", 1, [4])]))  # m a real graph input
    assert onnx_io_problems(config_from_text(text), "p", plain_graph, "w") == [
        "unable to load model 'p', configuration expects 1 inputs, model provides 2 (w: x, m): make m required "
        "(only an initializer of the graph may be optional)"
    ]


def test_a_batch_outputs_dims_are_not_compared(tmp_path):
    graph = graph_io_from_onnx(graph_file(tmp_path, [value("x", 1, ["b", 4])], [value("y", 1, ["b", 4])]))
    text = PLAIN.replace("max_batch_size: 0", "max_batch_size: 8").replace(
        'output [{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }]',
        'output [{ name: "y" data_type: TYPE_FP32 dims: [ 9 ] }]',
    )
    assert onnx_io_problems(config_from_text(text), "p", graph, "w")  # an ordinary output: refused
    text += 'batch_output [{ target_name: "y" kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "x" }]\n'
    assert onnx_io_problems(config_from_text(text), "p", graph, "w") == []


def test_an_unnamed_data_type_number_and_bf16_are_problems_not_crashes(tmp_path):
    graph = graph_io_from_onnx(graph_file(tmp_path, [value("x", 1, [4])], [value("y", 1, [4])]))
    config = config_from_text(PLAIN)  # a config.pbtxt naming 99 is refused as it is read (config_from_text)
    config.input[0].data_type = 99  # one made in code, as the API may hand it
    unknown = onnx_io_problems(config, "p", graph, "w")
    assert unknown == ["unsupported datatype data type 99 for input 'x' for model 'p'"]
    bf16 = onnx_io_problems(config_from_text(PLAIN.replace("TYPE_FP32 dims", "TYPE_BF16 dims", 1)), "p", graph, "w")
    assert bf16 == ["unsupported datatype TYPE_BF16 for input 'x' for model 'p'"]  # Triton 2.51's backend


def test_tensor_names_from_the_model_file_are_escaped_in_messages(tmp_path):
    graph = graph_io_from_onnx(
        graph_file(tmp_path, [value("x", 1, [4]), value("\x1b[31mred", 1, [4])], [value("y", 1, [4])])
    )
    problems = onnx_io_problems(config_from_text(PLAIN), "p", graph, "w")
    assert problems and "\x1b" not in " ".join(problems) and "\\x1b[31mred" in problems[0], problems


def test_without_onnx_installed_no_graph_is_judged(tmp_path, monkeypatch):
    import sys

    validate_module = sys.modules["tritongen.validate"]  # the package's `validate` is the API function

    text = PLAIN.replace("TYPE_FP32 dims", "TYPE_FP16 dims", 1).replace('"p"', '"m"', 1)
    repo = repository_with(
        tmp_path, text, graph_file(tmp_path, [value("x", 1, [4])], [value("y", 1, [4])]).read_bytes()
    )
    assert not validate_repository(repo).ok
    monkeypatch.setattr(validate_module, "onnx_available", lambda: False)
    assert validate_repository(repo).ok


@pytest.mark.parametrize(
    "location, outside",
    [("model.onnx.data", False), ("weights/w.bin", False), ("../../../outside.bin", True), ("/etc/w.bin", True)],
)
def test_weights_kept_outside_the_version_folder_are_refused(tmp_path, location, outside):
    """ONNX Runtime opens a graph's external data at the ``location`` it names, relative to the model file: a path
    out of the version folder loaded a file no manifest or signature covers (validate, and so serve, passed it)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32), "W")
    raw = weight.raw_data
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, text in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        weight.external_data.add(key=key, value=text)
    node = helper.make_node("Add", ["x", "W"], ["y"])
    graph = helper.make_graph([node], "g", [value("x", 1, [4])], [value("y", 1, [4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    text = PLAIN.replace('name: "p"', 'name: "m"')
    repo = repository_with(tmp_path, text, model.SerializeToString())
    assert graph_io_from_onnx(repo / "m" / "1" / "model.onnx").external_locations == (location,)
    if not outside:  # where it stays beside the model, ONNX Runtime reads it from there
        import onnxruntime as ort

        (repo / "m" / "1" / location).parent.mkdir(parents=True, exist_ok=True)
        (repo / "m" / "1" / location).write_bytes(raw)
        session = ort.InferenceSession(str(repo / "m" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        (y,) = session.run(None, {"x": np.ones(4, dtype=np.float32)})
        assert y.tolist() == [1.0, 2.0, 3.0, 4.0]
    problems = [p for p in validate_repository(repo).lines() if "reads weights from" in p]
    assert bool(problems) is outside, problems
    if outside:
        assert (
            f"1/model.onnx of model 'm' reads weights from '{location}', a path out of its version folder"
            in (problems[0])
        )


def _external_weights_graph(locations: list[str]) -> bytes:
    """A graph adding one external weight per location (no data written: only the graph is read)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights, nodes, last = [], [], "x"
    for i, location in enumerate(locations):
        weight = numpy_helper.from_array(np.ones(4, dtype=np.float32), f"W{i}")
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, text in (("location", location), ("offset", "0"), ("length", "16")):
            weight.external_data.add(key=key, value=text)
        weights.append(weight)
        out = "y" if i == len(locations) - 1 else f"t{i}"
        nodes.append(helper.make_node("Add", [last, f"W{i}"], [out]))
        last = out
    graph = helper.make_graph(nodes, "g", [value("x", 1, [4])], [value("y", 1, [4])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_an_outside_path_after_64_others_and_in_a_gpu_only_graph_is_still_refused(tmp_path):
    """Found by an attacker: only the first 64 distinct locations were listed, so a 65th leading out of the folder
    passed; and the graphs cc_model_filenames names (what a GPU of that capability loads) were never read."""
    locations = [f"w{i}.bin" for i in range(64)] + ["../../../../tmp/evil.bin"]
    text = PLAIN.replace('name: "p"', 'name: "m"')
    repo = repository_with(tmp_path / "a", text, _external_weights_graph(locations))
    problems = [p for p in validate_repository(repo).lines() if "reads weights from" in p]
    assert problems and "'../../../../tmp/evil.bin'" in problems[0], problems
    repo = repository_with(tmp_path / "b", text + 'cc_model_filenames { key: "9.0" value: "gpu.onnx" }\n', b"")
    (repo / "m" / "1" / "model.onnx").write_bytes(_external_weights_graph(["model.onnx.data"]))
    (repo / "m" / "1" / "gpu.onnx").write_bytes(_external_weights_graph(["../../../../tmp/evil.bin"]))
    problems = [p for p in validate_repository(repo).lines() if "reads weights from" in p]
    assert problems and "1/gpu.onnx of model 'm' reads weights from '../../../../tmp/evil.bin'" in problems[0]
