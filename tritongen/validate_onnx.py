"""The ONNX Runtime backend's load-time checks of a config against the ``model.onnx`` it loads, run offline.

When an instance loads, the backend (onnxruntime_backend's ``ValidateInputs``/``ValidateOutputs``) refuses a
config whose inputs or outputs the graph does not have or whose data types differ, whose dims do not fit the
graph's (a fixed graph dim must equal the config's, a variable one accepts any; a batching model's first graph dim
must be variable), a sequence control that is not a graph input of dims [1] and of the control's type, an optional
input on a batching model, and a count of graph inputs (initializers excluded) other than the config's inputs,
sequence controls, states and batch inputs. A config without inputs or outputs is completed from the graph first.

Only the graph is read, never its weights' external data, and it is read in a child interpreter bounded in memory
and time (a crafted file cannot exhaust this process). ONNX Runtime completes a graph's outputs by shape inference
before the backend compares them, so ONNX's shape inference runs here too (on the graph without its weights' values;
strict: a graph it finds any error in, or cannot finish within the bounds, is judged on its declarations alone), and
the declared and inferred shapes are merged as ONNX Runtime merges them. A dim only inference supplies refuses only
a config's other fixed dim (an ONNX Runtime of another release may infer less); an output declared with another rank
than the graph computes refuses only a config that fits none of the shapes ONNX Runtime may report for it. An
output's variable or unknown dims are not judged: a config this passes may still be refused at load, but one Triton
accepts is not refused here (the tests hold this against ONNX Runtime's own session).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .files import read_problem, regular_bytes
from .names import one_line

MAX_ONNX_BYTES = 2**31 - 1  # protobuf's limit on one message: a larger model keeps its weights as external data
MAX_EXTERNAL_LOCATIONS = 64  # distinct external-data paths a graph's record lists (the rest are not listed)

DEFAULT_MAX_BATCH_SIZE = 4  # tritonserver --backend-config=default-max-batch-size, Triton's default
_SMALL_INITIALIZER_BYTES = 4096  # an initializer up to this size goes into shape inference with its values
_MAX_RANK = 64  # a graph with a tensor of a higher rank is not given to shape inference (ONNX Runtime: at most 8)

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
    # An output's dims that only ONNX's shape inference supplies (-1 where it supplies none): the graph computes
    # them, but the backend may see them variable (another ONNX Runtime release may infer less).
    computed: tuple[int, ...] | None = None
    # An output whose declared rank inference contradicts, as (declared, computed): ONNX Runtime then reports no
    # shape for it, and the backend takes it as a scalar (``dims`` is ()).
    conflict: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    # An output shape inference here did not settle: ONNX Runtime's own (its contrib operators', say) may contradict
    # the declared rank and report no shape, a scalar to the backend, so dims of 1 are not refused.
    may_be_scalar: bool = False


@dataclass(frozen=True)
class StaticTensor:
    """A tensor the graph computes at a shape shape inference fixes, with its size."""

    name: str
    operator: str  # the op type of the node computing it
    dims: tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class GraphIO:
    inputs: Mapping[str, GraphTensor]  # graph inputs that are not initializers: a request must send them
    overridable: Mapping[str, GraphTensor]  # initializers listed as inputs (IR >= 4): a request may send them
    outputs: Mapping[str, GraphTensor]
    # Where shape inference ran: the largest tensor the graph computes at a fixed shape, and the bytes of the
    # tensors computed from constants alone (what constant folding computes and saves as new weights).
    largest: StaticTensor | None = None
    folded_bytes: int = 0
    sized: bool = False  # whether shape inference ran (largest and folded_bytes hold only then)
    # The graph's weights (initializers, their external data included, by their dims): what a model's own size is
    weight_bytes: int = 0
    largest_weight_bytes: int = 0
    # Where the graph's weights kept outside it are read from (``location`` of external data, relative to the model
    # file's folder): ONNX Runtime opens each path as written (at most MAX_EXTERNAL_LOCATIONS distinct ones listed)
    external_locations: tuple[str, ...] = ()


def _type_from_onnx(elem_type: int) -> str:
    """Triton's name of an ONNX element type; '' for none (0: not declared)."""
    return _TRITON_FROM_ONNX.get(elem_type, f"ONNX element type {elem_type}") if elem_type else ""


def _tensor(value: Any) -> GraphTensor:
    tensor = value.type.tensor_type
    type_name = _type_from_onnx(tensor.elem_type)
    if not tensor.HasField("shape"):
        return GraphTensor(type_name, None)
    return GraphTensor(type_name, tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim))


def _lightened(model: Any) -> Any:
    """``model`` itself, changed for shape inference as ONNX Runtime sees the graph: a small constant initializer
    keeps its values (the shapes a Reshape or an Expand reads; from IR 4 an initializer the graph also lists as an
    input is not constant: a request may replace it), every other one and every large Constant node becomes a graph
    input of its type and dims (a weight's values decide no shape, and inference then never copies them), and the
    outputs lose their declared type and shape (ONNX Runtime's merge of declared and inferred is done after)."""
    from onnx import GraphProto, TensorProto, helper

    graph = model.graph
    listed = {v.name for v in graph.input}
    overridable = listed if model.ir_version >= 4 else set()
    keep = []
    for tensor in graph.initializer:
        if tensor.name in overridable:
            continue  # already a declared input
        if tensor.data_location != TensorProto.EXTERNAL and tensor.ByteSize() <= _SMALL_INITIALIZER_BYTES:
            small = TensorProto()
            small.CopyFrom(tensor)
            keep.append(small)
        elif tensor.name not in listed:
            graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    for sparse in graph.sparse_initializer:
        if sparse.values.name not in listed:
            graph.input.append(
                helper.make_tensor_value_info(sparse.values.name, sparse.values.data_type, list(sparse.dims))
            )
    del graph.sparse_initializer[:]
    kept = GraphProto()  # the nodes kept, moved once (deleting one by one moves the rest each time)
    for node in graph.node:
        value = None
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.output) == 1:
            value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
        if value is not None and value.ByteSize() > _SMALL_INITIALIZER_BYTES:
            graph.input.append(helper.make_tensor_value_info(node.output[0], value.data_type, list(value.dims)))
        else:
            kept.node.add().CopyFrom(node)
    graph.ClearField("node")
    graph.node.MergeFrom(kept.node)
    for output in graph.output:
        output.type.tensor_type.ClearField("elem_type")
        output.type.tensor_type.ClearField("shape")
    return model


def _ranks_bounded(model: Any) -> bool:
    """Whether every tensor the graph declares has a rank inference can hold (a crafted rank of millions would
    take gigabytes as Python messages)."""
    graph = model.graph
    constants = [a.t for node in graph.node for a in node.attribute if a.HasField("t")]
    tensors = [*graph.initializer, *graph.sparse_initializer, *constants]
    values = [*graph.input, *graph.output, *graph.value_info]
    return all(len(t.dims) <= _MAX_RANK for t in tensors) and all(
        len(v.type.tensor_type.shape.dim) <= _MAX_RANK for v in values
    )


# The graph is read in an interpreter of its own, within an address space, CPU time and wall-clock time: parsing
# a crafted file takes many times its size (20 million empty nodes in 40 MB: 3 GB), and ONNX's shape inference takes
# memory and time no check of the declarations bounds (a chain of n Unsqueeze nodes, 130 KB at n = 4,000, holds
# ranks 1, 2, ..., n: 0.7 GB and 2 s, quadratic in n; a Concat of Shapes feeding a Reshape multiplies a rank at each
# step). This process keeps the file's bytes and the child's compact answer, both linear in the file's size.
_CHILD_TIMEOUT_S = 60  # wall-clock and CPU seconds (MiniLM, or a graph of 20,000 nodes: about 0.4 s)
_CHILD_MEMORY_BYTES = 3 << 30  # address space, plus 4x the file (the interpreter and onnx take about 0.15 GB)
_CHILD = """
import json, sys
header = json.loads(sys.stdin.buffer.readline())
sys.path[:] = header["paths"]
try:
    import resource
except ImportError:
    resource = None
for limit, value in (("RLIMIT_AS", header["memory_bytes"]), ("RLIMIT_CPU", header["cpu_s"])):
    try:
        resource.setrlimit(getattr(resource, limit), (value, value))
    except (AttributeError, ValueError, OSError):
        pass  # no such limit here: the others, and the wall-clock limit, still hold
from tritongen.validate_onnx import child_main
child_main(header, sys.stdin.buffer.read())
"""
_GRAPH_TABLES = ("inputs", "overridable", "outputs")  # GraphIO's fields, in order
_CHILD_THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # numpy's pools


def child_main(header: Mapping[str, Any], data: bytes) -> None:
    """The child's work (see ``_CHILD``): the graph in ``data`` read, written to stdout as JSON; exit 2 with the
    reason when it is not an ONNX model."""
    import json
    import sys

    try:
        graph = _graph_io(data, infer=bool(header.get("infer")))
    except Exception as exc:  # noqa: BLE001 -- whatever protobuf raises on bytes that are not a model
        sys.stdout.write(json.dumps({"error": _not_a_model(exc)}))
        sys.stdout.flush()
        sys.exit(2)
    answer: dict[str, Any] = {k: {n: _tensor_json(t) for n, t in getattr(graph, k).items()} for k in _GRAPH_TABLES}
    big = graph.largest
    answer["largest"] = None if big is None else [big.name, big.operator, list(big.dims), big.nbytes]
    answer["folded_bytes"] = graph.folded_bytes
    answer["sized"] = graph.sized
    answer["weights"] = [graph.weight_bytes, graph.largest_weight_bytes]
    answer["external"] = list(graph.external_locations)
    sys.stdout.write(json.dumps(answer))


def _static_from_json(value: Any) -> StaticTensor | None:
    if value is None:
        return None
    if not (
        isinstance(value, list)
        and len(value) == 4
        and isinstance(value[0], str)
        and isinstance(value[1], str)
        and isinstance(value[2], list)
        and all(type(d) is int for d in value[2])
        and type(value[3]) is int
    ):
        raise ValueError("not a static tensor")
    return StaticTensor(value[0], value[1], tuple(value[2]), value[3])


def _not_a_model(exc: Exception) -> str:
    """Why bytes are not an ONNX model: the first of what protobuf (or onnx) said."""
    return f"not an ONNX model: {str(exc)[:200] or type(exc).__name__}"


def _tensor_json(t: GraphTensor) -> list:
    return [t.type_name, t.dims, t.computed, t.conflict, t.may_be_scalar]


def _tensor_from_json(value: Any) -> GraphTensor:
    def dims(v: Any) -> tuple[int, ...] | None:
        if v is None:
            return None
        if not isinstance(v, list) or not all(type(d) is int for d in v):
            raise ValueError("not a list of dims")
        return tuple(v)

    if not isinstance(value, list) or len(value) != 5 or not isinstance(value[0], str) or type(value[4]) is not bool:
        raise ValueError("not a tensor")
    conflict = value[3]
    if conflict is not None:
        if not isinstance(conflict, list) or len(conflict) != 2:
            raise ValueError("not a conflict")
        declared, computed = dims(conflict[0]), dims(conflict[1])
        if declared is None or computed is None:
            raise ValueError("not a conflict")
        return GraphTensor(value[0], dims(value[1]), dims(value[2]), (declared, computed), value[4])
    return GraphTensor(value[0], dims(value[1]), dims(value[2]), None, value[4])


def _graph_io_in_child(data: bytes, infer: bool) -> GraphIO | None:
    """The graph read by a child interpreter within its limits; None where it did not finish (out of memory or
    time, or the interpreter would not start). Raises ``ValueError`` when the child found no ONNX model in ``data``."""
    import json
    import os
    import subprocess
    import sys

    header = {
        "paths": [p for p in sys.path if isinstance(p, str) and p],
        "memory_bytes": _CHILD_MEMORY_BYTES + 4 * len(data),
        "cpu_s": _CHILD_TIMEOUT_S,
        "infer": infer,
    }
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _CHILD],
            input=json.dumps(header).encode() + b"\n" + data,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=_CHILD_TIMEOUT_S,
            env={**os.environ, **_CHILD_THREADS},
            check=False,
        )
    except (OSError, ValueError, TypeError, subprocess.SubprocessError):  # no interpreter to run, or out of time
        return None
    if done.returncode not in (0, 2):
        return None
    try:
        answer = json.loads(done.stdout)
        if done.returncode == 2:
            reason = answer["error"]
        else:
            tables = [{str(n): _tensor_from_json(t) for n, t in answer[k].items()} for k in _GRAPH_TABLES]
            folded, sized, weights = answer["folded_bytes"], answer["sized"], answer["weights"]
            if type(folded) is not int or type(sized) is not bool:
                raise ValueError("not a size")
            if not (isinstance(weights, list) and len(weights) == 2 and all(type(w) is int for w in weights)):
                raise ValueError("not sizes")
            largest = _static_from_json(answer["largest"])
            external = answer["external"]
            if not (isinstance(external, list) and len(external) <= MAX_EXTERNAL_LOCATIONS):
                raise ValueError("not a list of paths")
            if not all(isinstance(e, str) for e in external):
                raise ValueError("not a list of paths")
            return GraphIO(
                tables[0], tables[1], tables[2], largest, folded, sized, weights[0], weights[1], tuple(external)
            )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not what the child writes
    raise ValueError(str(reason)[:300])


def _inferred(model: Any) -> tuple[Any | None, Any | None]:
    """``model`` (changed: call it last) through ONNX's shape inference, as ONNX Runtime sees the graph (see
    :func:`_lightened`), twice: strict (None where inference finds any error: a graph ONNX Runtime would read
    differently, e.g. a stale value_info, is not judged on inference) and lenient (for the sizes of what the graph
    computes: an error planted in one node does not hide a tensor of a terabyte in another). Both None where the
    graph has a tensor of a rank past ``_MAX_RANK``; the caller's limits bound the rest (see ``_CHILD``)."""
    import onnx

    if not _ranks_bounded(model):
        return None, None
    light = _lightened(model)
    copy = onnx.ModelProto()
    copy.CopyFrom(light)
    found: list[Any] = []
    for graph, strict in ((light, True), (copy, False)):  # the lenient one follows shapes computed from constants
        try:
            found.append(onnx.shape_inference.infer_shapes(graph, strict_mode=strict, data_prop=not strict))
        except Exception:  # noqa: BLE001 -- a graph inference cannot follow: only the declarations are judged
            found.append(None)
    return found[0], found[1]


def _inferred_outputs(inferred: Any | None) -> dict[str, GraphTensor]:
    """The graph's outputs as ONNX's shape inference computes them ({} where it did not)."""
    if inferred is None:
        return {}
    return {v.name: _tensor(v) for v in inferred.graph.output if len(v.type.tensor_type.shape.dim) <= _MAX_RANK}


def _static_sizes(
    inferred: Any | None, constants: set[str], nodes: list[tuple[str, list[str], list[str]]]
) -> tuple[StaticTensor | None, int]:
    """The largest tensor ``inferred`` computes at a fixed shape and the bytes of those computed from ``constants``
    (initializers, Constant nodes) alone. ``nodes``: (op type, inputs, outputs) of the graph as written (sorted, as
    ONNX requires: an unsorted graph fails the checker after)."""
    if inferred is None:
        return None, 0
    sizes: dict[str, StaticTensor] = {}
    ops = {out: op for op, _ins, outs in nodes for out in outs}
    for v in [*inferred.graph.value_info, *inferred.graph.output]:
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        if not t.HasField("shape") or any(d < 0 for d in dims) or v.name not in ops:
            continue
        sizes[v.name] = StaticTensor(v.name, ops[v.name], tuple(dims), _tensor_bytes(dims, t.elem_type))
    folded = set(constants)
    for _op, ins, outs in nodes:
        if all(not i or i in folded for i in ins):
            folded.update(outs)
    largest = max(sizes.values(), key=lambda t: t.nbytes, default=None)
    return largest, sum(t.nbytes for name, t in sizes.items() if name in folded and name not in constants)


def _merged(declared: GraphTensor, inferred: GraphTensor | None) -> GraphTensor:
    """``declared`` merged with the inferred tensor as ONNX Runtime merges them (``MergeShapeInfo``): a missing
    type is the inferred one; a fixed dim the two disagree on becomes unknown, and ranks that disagree leave no
    shape (ONNX Runtime's session reports [] then, a scalar to the backend, unless its graph optimizations resolve
    the graph again: ``dims`` () with the two shapes in ``conflict``). A dim only inference supplies (declared
    variable, or no shape declared) goes into ``computed``: ONNX Runtime of another release may not compute it, so
    it refuses only a config's fixed dim that differs."""
    unsettled = bool(declared.dims)  # not settled by inference here: ONNX Runtime's may clear it (see may_be_scalar)
    if inferred is None:
        return replace(declared, may_be_scalar=unsettled)
    type_name = declared.type_name or inferred.type_name
    if inferred.dims is None:
        return GraphTensor(type_name, declared.dims, may_be_scalar=unsettled)
    if declared.dims is None:
        return GraphTensor(type_name, None, inferred.dims)
    if len(declared.dims) != len(inferred.dims):
        return GraphTensor(type_name, (), conflict=(declared.dims, inferred.dims))
    dims = tuple(d if i in (-1, d) else -1 for d, i in zip(declared.dims, inferred.dims))
    computed = tuple(i if d == -1 else -1 for d, i in zip(declared.dims, inferred.dims))
    return GraphTensor(type_name, dims, computed if any(c != -1 for c in computed) else None)


def _graph_io(data: bytes, infer: bool = True) -> GraphIO:
    import onnx

    model = onnx.load_model_from_string(data)
    initializers = {t.name for t in model.graph.initializer} | {t.values.name for t in model.graph.sparse_initializer}
    inputs = {v.name: _tensor(v) for v in model.graph.input if v.name not in initializers}
    overridable = (
        {v.name: _tensor(v) for v in model.graph.input if v.name in initializers} if model.ir_version >= 4 else {}
    )
    declared = {v.name: _tensor(v) for v in model.graph.output}
    # An output that is a graph input or an initializer passed through is that tensor to ONNX Runtime (one NodeArg):
    # it reports the input's declaration or the initializer's dims, whatever the output's declaration says.
    passed = {v.name: _tensor(v) for v in model.graph.input if v.name in declared}
    passed.update(
        {
            t.name: GraphTensor(_type_from_onnx(t.data_type), tuple(t.dims))
            for t in model.graph.initializer
            if t.name in declared and t.name not in passed
        }
    )
    external = _external_locations(model)
    if not infer:
        outputs = {name: passed.get(name) or _merged(t, None) for name, t in declared.items()}
        return GraphIO(inputs, overridable, outputs, external_locations=external)
    constants = initializers | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    nodes = [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node]
    weights = [_tensor_bytes(t.dims, t.data_type) for t in model.graph.initializer]
    strict, lenient = _inferred(model)  # changes model: after every declaration is read
    inferred = _inferred_outputs(strict)
    outputs = {name: passed.get(name) or _merged(t, inferred.get(name)) for name, t in declared.items()}
    largest, folded = _static_sizes(lenient, constants, nodes)
    return GraphIO(
        inputs,
        overridable,
        outputs,
        largest,
        folded,
        lenient is not None,
        sum(weights),
        max(weights, default=0),
        external,
    )


def external_tensors(model: Any) -> list[Any]:
    """Every tensor of ``model`` (an onnx ModelProto) whose data is kept in another file: initializers, sparse ones,
    and the constants of its nodes' attributes, subgraphs included."""
    from onnx import TensorProto

    def tensors(graph: Any) -> Iterable[Any]:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for node in graph.node:
            for attribute in node.attribute:
                yield from (attribute.t, *attribute.tensors)
                for sparse in (attribute.sparse_tensor, *attribute.sparse_tensors):
                    yield from (sparse.values, sparse.indices)
                for sub in (attribute.g, *attribute.graphs):
                    yield from tensors(sub)

    return [t for t in tensors(model.graph) if t.data_location == TensorProto.EXTERNAL]


def _external_locations(model: Any) -> tuple[str, ...]:
    """The ``location`` of every tensor the graph keeps as external data (:func:`external_tensors`), distinct, in
    the order met, at most :data:`MAX_EXTERNAL_LOCATIONS`: those leading out of the model's folder first (the 65th
    path of a graph, cut from the list, once passed the check that judges each listed one)."""
    from .config_paths import inside_version_folder

    found: dict[str, None] = {}
    for tensor in external_tensors(model):
        found.setdefault(next((e.value for e in tensor.external_data if e.key == "location"), ""), None)
    ordered = sorted(found, key=lambda location: inside_version_folder(location))  # stable: outside ones first
    return tuple(ordered[:MAX_EXTERNAL_LOCATIONS])


def _tensor_bytes(dims: Iterable[int], elem_type: int) -> int:
    """The bytes of a tensor of ``dims`` and ONNX element type ``elem_type`` (0 for a type of no fixed size)."""
    from onnx import helper

    try:
        itemsize = helper.tensor_dtype_to_np_dtype(elem_type).itemsize
    except (KeyError, TypeError, ValueError):
        return 0
    count = 1
    for d in dims:
        count *= max(int(d), 0)
    return count * itemsize


def onnx_available() -> bool:
    """Whether the ``onnx`` package is installed (the ``convert`` extra): without it no graph is read or judged."""
    import importlib.util

    return importlib.util.find_spec("onnx") is not None


# The last graphs read, by the sha256 of the file's bytes (not its name or times: nothing stale): a stateful model's
# graph is judged twice (its states, its tensors), and a child interpreter costs about 0.2 s.
_READ: dict[bytes, GraphIO | str] = {}
_READ_KEPT = 8
_READ_LOCK = threading.Lock()


def graph_io_from_onnx(path: Path) -> GraphIO:
    """The graph's inputs and outputs (read in a child interpreter within memory and time limits: see ``_CHILD``).
    Raises ``ValueError`` on a file that is not an ONNX model, or whose graph cannot be read within the limits."""
    path = Path(path)
    if path.is_dir():  # the backend's folder form: model.onnx/model.onnx beside its external data
        path = path / "model.onnx"
    try:
        # one bounded read of a regular file (a FIFO or a device in its place would hang or never end a plain open)
        data = regular_bytes(path, MAX_ONNX_BYTES)  # protobuf's limit: larger keeps weights as external data
    except OSError as exc:
        raise ValueError(f"the file {read_problem(exc)}") from None
    key = hashlib.sha256(data).digest()
    with _READ_LOCK:
        known = _READ.get(key)
    if known is None:
        known = _read_graph(data)
        with _READ_LOCK:
            if len(_READ) >= _READ_KEPT:
                del _READ[next(iter(_READ))]
            _READ[key] = known
    if isinstance(known, str):
        raise ValueError(known)
    if not known.outputs:
        raise ValueError("not an ONNX model: it holds no graph with outputs")
    return known


def _read_graph(data: bytes) -> GraphIO | str:
    """The graph in ``data``, or why it is not one (kept as the graph is). Where the child does not finish, once more
    without shape inference (its usual cost); where that does not either, the reason (not kept: perhaps only now).
    Where no interpreter can be started (``sys.executable`` empty in an embedding), the declarations are read here,
    without inference."""
    import sys

    if not sys.executable:
        try:
            return _graph_io(data, infer=False)
        except Exception as exc:  # noqa: BLE001 -- whatever protobuf raises on bytes that are not a model
            return _not_a_model(exc)
    for infer in (True, False):
        try:
            graph = _graph_io_in_child(data, infer)
        except ValueError as exc:
            return str(exc)
        if graph is not None:
            return graph
    raise ValueError(
        f"its graph cannot be read within {_CHILD_MEMORY_BYTES + 4 * len(data) >> 20} MiB of memory and "
        f"{_CHILD_TIMEOUT_S} s (nothing of it is judged)"
    )


def tensor_names(names: Iterable[str]) -> str:
    """Tensor names read from a model file, for a message: escaped, so that no control character reaches a terminal."""
    return ", ".join(one_line(n) for n in names)


def shape_text(dims: tuple[int, ...] | list[int]) -> str:
    """Dims as the messages write a shape: ``[-1,16]`` (a crafted rank is cut short)."""
    return _shape(dims)


def _shape(dims: tuple[int, ...] | list[int]) -> str:
    if len(dims) > _MAX_RANK:  # a crafted rank: its dims would make a message of megabytes
        return "[" + ",".join(str(d) for d in dims[:8]) + f",... ({len(dims)} dims)]"
    return "[" + ",".join(str(d) for d in dims) + "]"


def _dims_problem(name: str, tensor: str, graph: tuple[int, ...], dims: list[int], batched: bool) -> str:
    """The backends' ``CompareDimsSupported`` (as for inputs: a variable graph dim takes any), as one message or ''.

    For outputs the backend compares exactly, against the dims ONNX Runtime inferred: ``graph`` holds the dims
    declared and inferred agree on (see ``_merged``), and a dim still variable there is not judged here."""
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


def data_type_name(value: int) -> str:
    """``TYPE_FP32`` for a config's data type number; a number the enum does not name said as such."""
    try:
        return str(config_pb2().DataType.Name(value))
    except ValueError:  # a number the enum does not name (the text format accepts one)
        return f"data type {value}"


def _tensor_problems(
    config: Any, name: str, io: Any, graph: GraphTensor, role: str, check_dims: bool = True
) -> list[str]:
    """The backend's checks of one config tensor against its graph tensor. ORT completes the graph's outputs by
    shape inference before the backend reads them, so for an output only what the graph declares or ONNX's shape
    inference found is compared: a known type, and the fixed dims (a variable or unknown one may be anything)."""
    type_name = data_type_name(io.data_type)
    if type_name not in _SUPPORTED_TYPES:
        return [f"unsupported datatype {type_name} for {role} '{io.name}' for model '{name}'"]
    if role == "output" and not graph.type_name:
        pass  # declared without a type: inferred
    elif type_name != graph.type_name:
        return [
            f"unable to load model '{name}', configuration expects datatype {type_name} for {role} '{io.name}', "
            f"model provides {graph.type_name}: set data_type: {graph.type_name} for it in config.pbtxt"
        ]
    if not check_dims:  # a batch output's shape need not match
        return []
    dims = list(io.reshape.shape) if io.HasField("reshape") else list(io.dims)
    if role == "output" and graph.may_be_scalar and all(d == 1 for d in dims):
        return []  # the backend's scalar rule, where ONNX Runtime may report no shape
    if graph.dims is None and role == "output":
        return _computed_problems(config, name, io.name, graph, dims)
    graph_dims = graph.dims or ()  # an input declared without a shape is rank 0 to the backend
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
    if graph.conflict is not None:
        return _conflict_problems(config, name, io.name, graph.conflict, dims)
    if not graph_dims:
        if any(d != 1 for d in dims):
            return [
                f"unable to load model '{name}', scalar tensor '{io.name}', should only provide 1 in the model "
                f"configuration when the model doesn't support batching. Model configuration provided: {_shape(dims)}."
            ]
        return []
    problem = _dims_problem(name, io.name, graph_dims, dims, config.max_batch_size > 0)
    return [problem] if problem else _computed_problems(config, name, io.name, graph, dims)


def _conflict_problems(
    config: Any, name: str, tensor: str, conflict: tuple[tuple[int, ...], tuple[int, ...]], dims: list[int]
) -> list[str]:
    """An output declared with another rank than the graph computes. ONNX Runtime then reports no shape for it (a
    scalar to the backend: dims of 1 only), unless a graph optimization rewrites the graph (Triton's default level
    runs them all) and it is resolved again to the shape computed; an output computed from it keeps its declared
    shape. A config that fits none of these is refused."""
    declared, computed = conflict
    batched = config.max_batch_size > 0
    if all(d == 1 for d in dims) or any(not _dims_problem(name, tensor, s, dims, batched) for s in conflict):
        return []
    return [
        f"model '{name}', output '{tensor}': the graph declares it as {_shape(declared)} but computes "
        f"{_shape(computed)} (ONNX shape inference; -1: not known), and the model configuration specifies "
        f"{_shape([-1, *dims] if batched else dims)}, which ONNX Runtime reports for neither: declare the output in "
        f"the ONNX file with the shape it computes, and set its dims to {_shape(computed[1:] if batched else computed)}"
    ]


def _computed_problems(config: Any, name: str, tensor: str, graph: GraphTensor, dims: list[int]) -> list[str]:
    """A config's fixed output dim that differs from the one the graph computes (ONNX's shape inference), where the
    graph declares it variable or declares no shape. The config's variable dim is accepted there: ONNX Runtime of
    another release may see the dim variable too. The backend would refuse the first (or answer every request with
    another shape)."""
    if graph.computed is None:
        return []
    batched = config.max_batch_size > 0
    full = [-1, *dims] if batched else dims
    if len(full) != len(graph.computed):
        return []
    if all(c in (-1, d) or d == -1 for c, d in zip(graph.computed, full)):
        return []
    return [
        f"model '{name}', output '{tensor}': the graph computes shape {_shape(graph.computed)} (ONNX shape "
        f"inference; -1: not known) but the model configuration specifies {_shape(full)}: set its dims to "
        f"{_shape(graph.computed[1:] if batched else graph.computed)}"
    ]


def _control_tensors(config: Any) -> list[tuple[str, str]]:
    """(tensor, its Triton type) of each START, END, READY and CORRID control the sequence batcher sets."""
    if not config.HasField("sequence_batching"):
        return []
    kind = config_pb2().ModelSequenceBatching.Control
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
                type_name = data_type_name(control.data_type)
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
    None when that depends on an output shape the graph leaves to ONNX Runtime's inference or its optimizations (not
    judged here)."""
    has_inputs = len(config.input) + len(config.batch_input) > 0
    if has_inputs and len(config.output) > 0:
        return config, ""
    if any(t.dims is None or t.conflict is not None for t in graph.outputs.values()):
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
            io.data_type = config_pb2().DataType.Value(tensor.type_name) if tensor.type_name.startswith("TYPE_") else 0
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
            f": add {tensor_names(missing)} to the config's inputs"
            if missing
            else f": make {tensor_names(optional)} required (only an initializer of the graph may be optional)"
            if optional
            else ""
        )
        problems.append(
            f"unable to load model '{name}', configuration expects {expected} inputs, model provides "
            f"{len(graph.inputs)} ({where}: {tensor_names(graph.inputs) or 'none'}){fix}"
        )
    allowed = {**graph.inputs, **graph.overridable}
    for io in config.input:
        if io.optional and config.max_batch_size != 0:
            problems.append(
                f"unable to load model '{name}', optional input '{io.name}' is not supported for models that "
                "support batching"
            )
        if io.name not in allowed:
            allowed_names = tensor_names(sorted(allowed))
            problems.append(f"unexpected inference input '{io.name}', allowed inputs are: {allowed_names}")
            continue
        problems += _tensor_problems(config, name, io, allowed[io.name], "input")
    batch_outputs = {target for b in config.batch_output for target in b.target_name}
    for io in config.output:
        if io.name not in graph.outputs:
            problems.append(
                f"unexpected inference output '{io.name}', allowed outputs are: {tensor_names(sorted(graph.outputs))}"
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


def config_pb2():
    """Triton's ``model_config_pb2`` module (imported when first needed: tritonclient is slow to import); what every
    validator reads config enums from."""
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2
