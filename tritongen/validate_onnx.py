"""The ONNX Runtime backend's load-time checks of a config against the ``model.onnx`` it loads, run offline.

When an instance loads, the backend (onnxruntime_backend's ``ValidateInputs``/``ValidateOutputs``) refuses a
config whose inputs or outputs the graph does not have or whose data types differ, whose dims do not fit the
graph's (a fixed graph dim must equal the config's, a variable one accepts any; a batching model's first graph dim
must be variable), a sequence control that is not a graph input of dims [1] and of the control's type, an optional
input on a batching model, and a count of graph inputs (initializers excluded) other than the config's inputs,
sequence controls, states and batch inputs. A config without inputs or outputs is completed from the graph first.

Only the graph is read, never its weights' external data. ONNX Runtime completes a graph's outputs by shape
inference before the backend compares them, so ONNX's shape inference runs here too (on the graph without its
weights' values); where it cannot follow (an operator it does not know, a graph it finds inconsistent), an
output's variable or undeclared dims and type are not judged: a config this passes may still be refused at load,
but one Triton accepts is not refused here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import read_problem, regular_bytes
from .names import one_line

DEFAULT_MAX_BATCH_SIZE = 4  # tritonserver --backend-config=default-max-batch-size, Triton's default
MAX_ONNX_FILE_BYTES = (2 << 30) - 1  # protobuf's limit: a larger model keeps its weights as external data
_SMALL_INITIALIZER_BYTES = 4096  # an initializer up to this size goes into shape inference with its values

# ONNX TensorProto element types -> Triton's config names (the backend's ConvertFromOnnxDataType).
_TRITON_FROM_ONNX = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
}  # BF16 came to the backend after Triton 2.51 (it refuses TYPE_BF16 as an unsupported datatype)
_SUPPORTED_TYPES = frozenset(_TRITON_FROM_ONNX.values())
_BATCH_WORDS = (
    "an initial batch dimension because max_batch_size > 0 followed by the explicit tensor shape, making complete shape"
)


@dataclass(frozen=True)
class GraphTensor:
    """One graph input or output as the backend sees it."""

    type_name: str  # Triton's name (TYPE_FP32), ONNX element type N when Triton has none, '' when not declared
    dims: tuple[int, ...] | None  # -1 for a variable dim; None when the graph declares no shape


@dataclass(frozen=True)
class GraphIO:
    inputs: Mapping[str, GraphTensor]  # graph inputs that are not initializers: a request must send them
    overridable: Mapping[str, GraphTensor]  # initializers listed as inputs (IR >= 4): a request may send them
    outputs: Mapping[str, GraphTensor]


def _tensor(value: Any) -> GraphTensor:
    tensor = value.type.tensor_type
    type_name = _TRITON_FROM_ONNX.get(tensor.elem_type, f"ONNX element type {tensor.elem_type}")
    if not tensor.elem_type:
        type_name = ""
    if not tensor.HasField("shape"):
        return GraphTensor(type_name, None)
    return GraphTensor(type_name, tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim))


def _without_weights(model: Any) -> Any:
    """A copy of ``model`` for shape inference: its nodes and declarations, the small initializers (the constant
    shapes a Reshape or an Expand reads), and every larger or external one as a graph input of its type and dims
    (a weight's values decide no shape), so inference never copies the weights."""
    from onnx import ModelProto, TensorProto, helper

    light = ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    declared = {v.name for v in graph.input}
    for tensor in model.graph.initializer:
        if tensor.data_location != TensorProto.EXTERNAL and tensor.ByteSize() <= _SMALL_INITIALIZER_BYTES:
            graph.initializer.append(tensor)
        elif tensor.name not in declared:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    for sparse in model.graph.sparse_initializer:
        if sparse.values.name not in declared:
            graph.input.append(
                helper.make_tensor_value_info(sparse.values.name, sparse.values.data_type, list(sparse.dims))
            )
    return light


def _inferred_outputs(model: Any) -> dict[str, GraphTensor]:
    """The graph's outputs as ONNX's shape inference completes them (what ONNX Runtime does before the backend
    reads them: a declared variable dim becomes the inferred value, an undeclared type and shape the inferred
    ones; a conflict keeps the declaration). {} where inference fails."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(_without_weights(model), strict_mode=False, data_prop=False)
    except Exception:  # noqa: BLE001 -- a graph inference cannot follow: only the declarations are judged
        return {}
    return {v.name: _tensor(v) for v in inferred.graph.output}


def _completed(declared: GraphTensor, inferred: GraphTensor | None) -> GraphTensor:
    """``declared`` with what inference adds: its type where none is declared, its dims where none are, and each
    fixed dim where the declaration's is variable (same rank only)."""
    if inferred is None:
        return declared
    type_name = declared.type_name or inferred.type_name
    if declared.dims is None:
        return GraphTensor(type_name, inferred.dims)
    if inferred.dims is None or len(inferred.dims) != len(declared.dims):
        return GraphTensor(type_name, declared.dims)
    return GraphTensor(type_name, tuple(d if d != -1 else i for d, i in zip(declared.dims, inferred.dims)))


def _graph_io(path: Path) -> GraphIO:
    import onnx

    # one bounded read of a regular file (a FIFO or a device in its place would hang or never end a plain open)
    model = onnx.load_model_from_string(regular_bytes(path, MAX_ONNX_FILE_BYTES))
    initializers = {t.name for t in model.graph.initializer} | {t.values.name for t in model.graph.sparse_initializer}
    inputs = {v.name: _tensor(v) for v in model.graph.input if v.name not in initializers}
    overridable = (
        {v.name: _tensor(v) for v in model.graph.input if v.name in initializers} if model.ir_version >= 4 else {}
    )
    inferred = _inferred_outputs(model)
    outputs = {v.name: _completed(_tensor(v), inferred.get(v.name)) for v in model.graph.output}
    return GraphIO(inputs, overridable, outputs)


def onnx_available() -> bool:
    """Whether the ``onnx`` package is installed (the ``convert`` extra): without it no graph is read or judged."""
    import importlib.util

    return importlib.util.find_spec("onnx") is not None


def graph_io_from_onnx(path: Path) -> GraphIO:
    """The graph's inputs and outputs. Raises ``ValueError`` on a file that is not an ONNX model."""
    path = Path(path)
    if path.is_dir():  # the backend's folder form: model.onnx/model.onnx beside its external data
        path = path / "model.onnx"
    try:
        graph = _graph_io(path)
    except OSError as exc:
        raise ValueError(f"the file {read_problem(exc)}") from None
    except Exception as exc:  # noqa: BLE001 -- whatever protobuf raises on bytes that are not a model
        raise ValueError(f"not an ONNX model: {str(exc)[:200] or type(exc).__name__}") from None
    if not graph.outputs:
        raise ValueError("not an ONNX model: it holds no graph with outputs")
    return graph


def _names(names: Iterable[str]) -> str:
    """Tensor names read from a model file, for a message: escaped, so that no control character reaches a terminal."""
    return ", ".join(one_line(n) for n in names)


def _shape(dims: tuple[int, ...] | list[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _dims_problem(name: str, tensor: str, graph: tuple[int, ...], dims: list[int], batched: bool) -> str:
    """The backends' ``CompareDimsSupported`` (as for inputs: a variable graph dim takes any), as one message or ''.

    For outputs the backend compares exactly, against the dims ONNX Runtime inferred: ``graph`` holds ONNX's
    inferred dims, and a dim still variable there (ONNX Runtime may know more) is not judged."""
    if batched and (not graph or graph[0] != -1):
        return (
            f"model '{name}', tensor '{tensor}': for the model to support batching the shape should have at least 1 "
            f"dimension and the first dimension must be -1; but shape expected by the model is {_shape(graph)}"
        )
    full = [-1, *dims] if batched else list(dims)
    fits = len(graph) == len(full) and all(g == d for g, d in zip(graph, full) if g != -1)
    if fits:
        return ""
    given = f"{_BATCH_WORDS} {_shape(full)}" if batched else f"shape {_shape(full)}"
    return (
        f"model '{name}', tensor '{tensor}': the model expects {len(graph)} dimensions (shape {_shape(graph)}) but the "
        f"model configuration specifies {len(full)} dimensions ({given})"
    )


def _type_name(value: int) -> str:
    try:
        return str(_config_pb2().DataType.Name(value))
    except ValueError:  # a number the enum does not name (the text format accepts one)
        return f"data type {value}"


def _tensor_problems(
    config: Any, name: str, io: Any, graph: GraphTensor, role: str, check_dims: bool = True
) -> list[str]:
    """The backend's checks of one config tensor against its graph tensor. ORT completes the graph's outputs by
    shape inference before the backend reads them, so for an output only what the graph declares or ONNX's shape
    inference found is compared: a known type, and the fixed dims (a variable or unknown one may be anything)."""
    type_name = _type_name(io.data_type)
    if type_name not in _SUPPORTED_TYPES:
        return [f"unsupported datatype {type_name} for {role} '{io.name}' for model '{name}'"]
    if role == "output" and not graph.type_name:
        pass  # declared without a type: inferred
    elif type_name != graph.type_name:
        return [
            f"unable to load model '{name}', configuration expects datatype {type_name} for {role} '{io.name}', "
            f"model provides {graph.type_name}: set data_type: {graph.type_name} for it in config.pbtxt"
        ]
    if not check_dims or (graph.dims is None and role == "output"):  # a batch output's shape need not match
        return []
    graph_dims = graph.dims or ()  # an input declared without a shape is rank 0 to the backend
    dims = list(io.reshape.shape) if io.HasField("reshape") else list(io.dims)
    if role == "input" and io.optional and io.allow_ragged_batch:
        return [
            f"unable to load model '{name}', configuration expects model provides input with shape [-1] for ragged "
            f"input '{io.name}', which is not supported for optional input"
        ]
    if role == "input" and io.allow_ragged_batch:
        if graph_dims != (-1,):
            return [
                f"unable to load model '{name}', configuration expects model provides input with shape [-1] for "
                f"ragged input '{io.name}', model provides {_shape(graph_dims)}"
            ]
        return []
    if not graph_dims:
        if any(d != 1 for d in dims):
            return [
                f"unable to load model '{name}', scalar tensor '{io.name}', should only provide 1 in the model "
                f"configuration when the model doesn't support batching. Model configuration provided: {_shape(dims)}."
            ]
        return []
    problem = _dims_problem(name, io.name, graph_dims, dims, config.max_batch_size > 0)
    return [problem] if problem else []


def _control_tensors(config: Any) -> list[tuple[str, str]]:
    """(tensor, its Triton type) of each START, END, READY and CORRID control the sequence batcher sets."""
    if not config.HasField("sequence_batching"):
        return []
    kind = _config_pb2().ModelSequenceBatching.Control
    wanted = (
        kind.CONTROL_SEQUENCE_START,
        kind.CONTROL_SEQUENCE_END,
        kind.CONTROL_SEQUENCE_READY,
        kind.CONTROL_SEQUENCE_CORRID,
    )
    tensors = []
    for control_input in config.sequence_batching.control_input:
        for control in control_input.control:
            if control.kind not in wanted:
                continue
            if control.kind == kind.CONTROL_SEQUENCE_CORRID:
                type_name = _type_name(control.data_type)
            elif control.fp32_false_true:
                type_name = "TYPE_FP32"
            elif control.bool_false_true:
                type_name = "TYPE_BOOL"
            else:
                type_name = "TYPE_INT32"
            tensors.append((control_input.name, type_name))
    return tensors


def auto_completed(config: Any, name: str, graph: GraphIO) -> tuple[Any | None, str]:
    """The config as the backend completes it from the graph before it checks it (``AutoCompleteConfig``, on unless
    tritonserver runs with --disable-auto-complete-config), and the reason it refuses to, or ''.

    Only a config without inputs (and batch inputs) or without outputs is completed: its max_batch_size becomes
    tritonserver's default (4) when every graph tensor has a variable first dim and it is 0, and the missing inputs
    or outputs are the graph's, dims without the batch dim ([1] with an empty reshape for a batching scalar).
    None when that depends on an output shape the graph leaves to ONNX Runtime's inference (not judged here)."""
    has_inputs = len(config.input) + len(config.batch_input) > 0
    if has_inputs and len(config.output) > 0:
        return config, ""
    if any(t.dims is None for t in graph.outputs.values()):
        return None, ""
    done = type(config)()
    done.CopyFrom(config)
    tensors = [*graph.inputs.values(), *graph.outputs.values()]
    if all(t.dims and t.dims[0] == -1 for t in tensors):
        if done.max_batch_size == 0:
            done.max_batch_size = DEFAULT_MAX_BATCH_SIZE
    elif done.max_batch_size != 0:
        return done, (
            f"autofill failed for model '{name}': model does not support batching while non-zero max_batch_size is "
            "specified (a graph input or output has no variable first dim): set max_batch_size: 0"
        )
    for missing, values, tensors_of in (
        (not has_inputs, graph.inputs, done.input),
        (not config.output, graph.outputs, done.output),
    ):
        if not missing:
            continue
        for tensor_name, tensor in values.items():
            io = tensors_of.add()
            io.name = tensor_name
            io.data_type = _config_pb2().DataType.Value(tensor.type_name) if tensor.type_name.startswith("TYPE_") else 0
            dims = list(tensor.dims or ())[1 if done.max_batch_size > 0 else 0 :]
            io.dims.extend(dims or [1])
            if not dims and done.max_batch_size > 0:
                io.reshape.SetInParent()  # an empty reshape: a scalar per batch item
    return done, ""


def onnx_io_problems(config: Any, name: str, graph: GraphIO, where: str) -> list[str]:
    """Every reason the ONNX Runtime backend would refuse ``config`` for the graph ``graph`` read from ``where``
    (after completing a config without inputs or outputs from the graph, as the backend does)."""
    completed, refused = auto_completed(config, name, graph)
    if refused:
        return [refused]
    if completed is None:
        return []
    config = completed
    controls = _control_tensors(config)
    required = [io.name for io in config.input if not io.optional]
    expected = len(required) + len(config.batch_input) + len(controls) + len(config.sequence_batching.state)
    problems = []
    if len(graph.inputs) != expected:
        configured = {io.name for io in config.input} | {c for c, _ in controls}
        configured |= {s.input_name for s in config.sequence_batching.state}
        missing = [n for n in graph.inputs if n not in configured]
        optional = [io.name for io in config.input if io.optional and io.name in graph.inputs]
        fix = (
            f": add {_names(missing)} to the config's inputs"
            if missing
            else f": make {_names(optional)} required (only an initializer of the graph may be optional)"
            if optional
            else ""
        )
        problems.append(
            f"unable to load model '{name}', configuration expects {expected} inputs, model provides "
            f"{len(graph.inputs)} ({where}: {_names(graph.inputs) or 'none'}){fix}"
        )
    allowed = {**graph.inputs, **graph.overridable}
    for io in config.input:
        if io.optional and config.max_batch_size != 0:
            problems.append(
                f"unable to load model '{name}', optional input '{io.name}' is not supported for models that "
                "support batching"
            )
        if io.name not in allowed:
            problems.append(f"unexpected inference input '{io.name}', allowed inputs are: {_names(sorted(allowed))}")
            continue
        problems += _tensor_problems(config, name, io, allowed[io.name], "input")
    batch_outputs = {target for b in config.batch_output for target in b.target_name}
    for io in config.output:
        if io.name not in graph.outputs:
            problems.append(
                f"unexpected inference output '{io.name}', allowed outputs are: {_names(sorted(graph.outputs))}"
            )
        else:
            problems += _tensor_problems(
                config, name, io, graph.outputs[io.name], "output", check_dims=io.name not in batch_outputs
            )
    problems += _control_problems(config, name, graph, controls)
    return problems


def _control_problems(config: Any, name: str, graph: GraphIO, controls: list[tuple[str, str]]) -> list[str]:
    problems = []
    for tensor, type_name in controls:
        found = graph.inputs.get(tensor)
        if found is None:
            problems.append(
                f"configuration specified sequence control '{tensor}', but model does not provide that input"
            )
            continue
        dims = list(found.dims[1:] if config.max_batch_size > 0 else found.dims) if found.dims is not None else [1]
        if dims != [1]:
            problems.append(
                f"unable to load model '{name}', sequence control '{tensor}' in model has dims {_shape(dims)} but dims "
                "[1] is expected"
            )
        elif found.type_name != type_name:
            problems.append(
                f"unable to load model '{name}', sequence control '{tensor}', the model expects data-type "
                f"{found.type_name} but the model configuration specifies data-type {type_name}"
            )
    return problems


def _config_pb2():
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2
