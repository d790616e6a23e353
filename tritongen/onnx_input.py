"""``tritongen build model.onnx``: an ONNX file as the model, the original file in ONNX Runtime as the reference.

An ONNX file is a protobuf ``ModelProto``, not a zip: :func:`is_onnx_file` recognises it from its first bytes
(``ir_version``, field 1, comes first, then another top-level field) and the file is read only after that and
after checks that bound the work:

* the ``.onnx`` file is at most 2 GiB (protobuf's limit) and is parsed without its external data;
* every external data reference is a relative path inside the model's folder (no ``..``, no absolute path, no
  link leaving it), the file exists, and ``offset + length`` lie within it; only then is the data read;
* the IR version is one the installed ``onnx`` reads, the default-domain opset lies in
  :data:`MIN_ONNX_OPSET`..the newest the installed ``onnx`` knows, and every operator domain is one ONNX Runtime
  runs (``ai.onnx``, ``ai.onnx.ml``, ``com.microsoft``).

Inputs and outputs are read from the graph: a symbolic first dimension on every input and output is the batch
axis (``max_batch_size`` 8 unless given), otherwise the model is built unbatched; other symbolic dimensions are
``-1``. The build then cleans the graph like an export (:func:`tritongen.export.cleaned_onnx_from_onnx`) and the
parity gate compares the cleaned graph (and any precision variant) with :class:`OnnxReference`: the original
file in ONNX Runtime.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TritongenError
from .validate_onnx import MAX_ONNX_BYTES, external_tensors

MIN_ONNX_OPSET = 7  # the oldest opset ONNX Runtime runs
ORT_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
_MODEL_FIELD_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x4A, 0x72, 0x7A, 0x82}  # fields 2..16 after ir_version
_FIX = "export it again (torch.onnx.export, onnx.save_model) and pass the .onnx file with its external data beside it"


def is_onnx_file(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts like a serialized ONNX ``ModelProto``."""
    if len(head) < 3 or head[0] != 0x08:
        return False
    i, ir_version = 1, 0
    while i < min(len(head), 6) and head[i] & 0x80:
        ir_version |= (head[i] & 0x7F) << (7 * (i - 1))
        i += 1
    if i >= len(head):
        return False
    ir_version |= head[i] << (7 * (i - 1))
    return 1 <= ir_version <= 64 and i + 1 < len(head) and head[i + 1] in _MODEL_FIELD_TAGS


def _check_external_data(model: Any, path: Path) -> None:
    base = path.parent.resolve()
    for tensor in external_tensors(model):
        entry = {e.key: e.value for e in tensor.external_data}
        location = entry.get("location", "")
        where = f"{path.name}: tensor '{tensor.name[:80]}' keeps its data in '{location[:120]}'"
        if not location or os.path.isabs(location) or ".." in Path(location).parts:
            raise TritongenError(f"{where}, which is not a file name beside the model", _FIX)
        data = (base / location).resolve()
        if base not in data.parents:
            raise TritongenError(f"{where}, which leads outside the model's folder", _FIX)
        if not data.is_file():
            raise TritongenError(f"{where}, which does not exist", f"put '{location}' beside {path.name}")
        try:
            offset, length = int(entry.get("offset", 0)), int(entry.get("length", -1))
        except ValueError:
            raise TritongenError(f"{where} at an offset or length that is not a number", _FIX) from None
        size = data.stat().st_size
        if offset < 0 or offset > size or (length >= 0 and offset + length > size):
            raise TritongenError(
                f"{where} at bytes {offset}..{offset + max(length, 0)}, beyond its {size} bytes",
                f"the data file is truncated or belongs to another model; {_FIX}",
            )


def _parsed(path: Path) -> Any:
    """``path``'s ``ModelProto`` without its external data, within protobuf's size limit."""
    import onnx

    size = path.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise TritongenError(
            f"{path} is {size} bytes, above protobuf's 2 GiB limit for one ONNX file",
            "save the weights as external data (onnx.save_model(..., save_as_external_data=True))",
        )
    try:
        return onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 -- a damaged or foreign protobuf
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise TritongenError(f"{path} starts like an ONNX file but cannot be read ({why})", _FIX) from None


def external_data_locations(path: Path, beside: Path) -> list[str]:
    """The files ``path``'s tensors keep their data in, each checked (as :func:`onnx_model_from_file` does) to be a
    file inside the folder of ``beside``: the user's file that ``path`` is a private copy of."""
    model = _parsed(Path(path))
    _check_external_data(model, Path(beside))
    return sorted({e.value for t in external_tensors(model) for e in t.external_data if e.key == "location"})


def onnx_model_from_file(path: Path, load_data: bool = True) -> Any:
    """The checked ``ModelProto`` of ``path`` (see the module docstring). Raises :class:`TritongenError`."""
    import onnx

    path = Path(path)
    model = _parsed(path)
    if not model.HasField("graph") or not model.graph.node:
        raise TritongenError(f"{path} is an ONNX file without a graph", _FIX)
    if model.ir_version > onnx.IR_VERSION:
        raise TritongenError(
            f"{path} has ONNX IR version {model.ir_version}; the installed onnx reads up to {onnx.IR_VERSION}",
            "upgrade onnx, or export with an older IR version",
        )
    newest = onnx.defs.onnx_opset_version()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not MIN_ONNX_OPSET <= opset <= newest:
        raise TritongenError(
            f"{path} uses opset {opset}; ONNX Runtime and the installed onnx run {MIN_ONNX_OPSET}..{newest}",
            f"export with an opset in {MIN_ONNX_OPSET}..{newest} (e.g. torch.onnx.export(..., opset_version=18))",
        )
    foreign = sorted({n.domain for n in model.graph.node if n.domain not in ORT_DOMAINS})
    if foreign:
        op = next(n.op_type for n in model.graph.node if n.domain == foreign[0])
        raise TritongenError(
            f"{path} uses operator {foreign[0]}::{op}, from a domain ONNX Runtime does not run "
            "without a custom-op library",
            "export it with standard ONNX operators",
        )
    _check_external_data(model, path)
    if load_data and external_tensors(model):
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    return model


MAX_STATIC_TENSOR_BYTES = 4 << 30  # one tensor a graph computes at a fixed shape (activations at batch 1: MBs)
MAX_FOLDED_BYTES = 2 << 30  # the tensors constant folding computes from weights alone (protobuf's limit for one)


def check_static_sizes(path: Path) -> None:
    """Refuse a graph computing, at shapes fixed in the file, a tensor over :data:`MAX_STATIC_TENSOR_BYTES` or
    constants over :data:`MAX_FOLDED_BYTES` in all: a 300-byte file whose ConstantOfShape makes 10**12 floats took
    all memory in constant folding (and would in ONNX Runtime). Sizes come from ONNX's shape inference in a bounded
    child (:func:`tritongen.validate_onnx.graph_io_from_onnx`); a size that depends on a request's values is not
    known before one is run."""
    from .validate_onnx import graph_io_from_onnx, shape_text, tensor_names

    try:
        graph = graph_io_from_onnx(path)
    except ValueError:
        return  # the load that follows names what is wrong with the file
    if not graph.sized:  # a graph crafted to exhaust inference would otherwise pass unsized
        raise TritongenError(
            f"ONNX's shape inference cannot follow {path.name}'s graph within its limits, so the sizes of the "
            "tensors it computes are unknown",
            "check the graph with onnx.shape_inference.infer_shapes(model, data_prop=True); export it again",
        )
    # a model's own weights set the scale: a dequantized INT8 weight is 4x its bytes, and folding a transposed weight
    # rewrites as many bytes as it reads
    one_bound = max(MAX_STATIC_TENSOR_BYTES, 4 * graph.largest_weight_bytes)
    folded_bound = max(MAX_FOLDED_BYTES, 4 * graph.weight_bytes)
    big = graph.largest
    if big is not None and big.nbytes > one_bound:
        raise TritongenError(
            f"{path.name} computes {tensor_names([big.name])} ({tensor_names([big.operator])}) of shape "
            f"{shape_text(big.dims)}: {big.nbytes / 1e9:,.1f} GB, over the {_bound_text(one_bound)} one tensor may "
            "take (the larger of 4 GiB and 4x its largest weight)",
            "check the shape that node is given (a constant shape that large is a mistake in the graph)",
        )
    if graph.folded_bytes > folded_bound:
        raise TritongenError(
            f"{path.name} computes {graph.folded_bytes / 1e9:,.1f} GB of tensors from its constants alone, which "
            f"constant folding would store as weights (over {_bound_text(folded_bound)}: the larger of 2 GiB and 4x "
            "its weights)",
            "check the shapes given to ConstantOfShape, Expand, Tile and the like (constant shapes that large are a "
            "mistake in the graph)",
        )


def _bound_text(n_bytes: int) -> str:
    from .files import size_text

    return size_text(n_bytes) if n_bytes % (1 << 20) == 0 else f"{n_bytes / 1e9:,.1f} GB"


def _dims(value_info: Any) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]


@dataclass(frozen=True)
class OnnxIO:
    inputs: tuple[Any, ...]  # TensorSpec, dims without the batch dimension when batched
    outputs: tuple[str, ...]
    batch_axis: bool  # every input and output has a symbolic first dimension


def io_from_onnx(model: Any) -> OnnxIO:
    """Graph inputs (initializers left out) and output names; whether the first dimension is a batch axis."""
    from onnx import helper

    from .dtypes import triton_from_numpy
    from .tensors import TensorSpec

    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    batch_axis = bool(graph_inputs) and all(
        (dims := _dims(vi)) and dims[0] == -1 for vi in list(graph_inputs) + list(model.graph.output)
    )
    inputs = []
    for vi in graph_inputs:
        try:
            dtype = triton_from_numpy(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
        except Exception:  # noqa: BLE001 -- a sequence, map or an element type Triton has no name for
            raise TritongenError(
                f"graph input '{vi.name}' is not a tensor of a type Triton serves",
                "make every graph input a numeric or bool tensor",
            ) from None
        if not vi.type.tensor_type.HasField("shape"):
            raise TritongenError(
                f"graph input '{vi.name}' has no shape in the graph (its rank is unknown)",
                "export the model again with the input's shape (torch.onnx.export records it), or run ONNX shape "
                "inference on the file",
            )
        if not _dims(vi):  # batch_axis is False then: no first dimension to carry it
            raise TritongenError(
                f"graph input '{vi.name}' is a 0-d (scalar) tensor, and a Triton input has at least one dimension",
                f"export the model again with '{vi.name}' of shape [1] (or [batch] beside batched inputs), or fix "
                "its value inside the model",
            )
        dims = _dims(vi)[1:] if batch_axis else _dims(vi)
        # a [batch] input is a scalar per item (dims [1] to clients, [batch] to the graph)
        inputs.append(TensorSpec(vi.name, dtype, tuple(dims) or (1,), scalar=batch_axis and not dims))
    return OnnxIO(tuple(inputs), tuple(o.name for o in model.graph.output), batch_axis)


def graph_output_names(path: Path) -> tuple[str, ...]:
    """The graph's output names, in order (what a stateful ONNX build pairs its --state outputs with)."""
    return io_from_onnx(onnx_model_from_file(path, load_data=False)).outputs


def spec_io_from_onnx(
    path: Path, declared: Sequence[Any], output_names: Sequence[str], max_batch_size: int | None
) -> tuple[tuple[Any, ...], int]:
    """Inputs and the max batch size for an ONNX file: read from the graph; ``--input`` may only restate them
    (names, order, types, rank) and fix a symbolic dimension."""
    io = io_from_onnx(onnx_model_from_file(path, load_data=False))
    if output_names and tuple(output_names) != io.outputs:
        raise TritongenError(
            f"--output names {list(output_names)} are not the graph's outputs {list(io.outputs)}",
            "drop --output (the names are read from the graph) or give exactly those",
        )
    if max_batch_size is None:
        max_batch_size = 8 if io.batch_axis else 0
    if max_batch_size > 0 and not io.batch_axis:
        fixed = next(vi.name for vi in _first_fixed(path))
        raise TritongenError(
            f"--max-batch-size {max_batch_size}: {Path(path).name}'s tensor '{fixed}' has a fixed "
            "first dimension, so Triton cannot batch it",
            "build with --max-batch-size 0, or export with a dynamic first (batch) axis on every input and output",
        )
    inputs = io.inputs if max_batch_size > 0 or not io.batch_axis else _unbatched(path)
    if not declared:
        return inputs, max_batch_size
    if [t.name for t in declared] != [t.name for t in inputs]:
        raise TritongenError(
            f"--input names {[t.name for t in declared]} are not the graph's inputs {[t.name for t in inputs]}",
            "drop --input (read from the graph) or list those, in order",
        )
    for want, have in zip(declared, inputs):
        # in the graph's own shapes: () for a scalar per item (--input NAME:DTYPE: with nothing after the colon)
        fits = len(want.shape) == len(have.shape) and all(h in (-1, w) for w, h in zip(want.shape, have.shape))
        if want.dtype != have.dtype or not fits:
            raise TritongenError(
                f"--input {want.name}:{want.dtype}:{','.join(map(str, want.shape))} does not fit the graph's "
                + (
                    f"{have.dtype} [batch] (a scalar per item: --input {have.name}:{have.dtype}:)"
                    if have.scalar
                    else f"{have.dtype} {list(have.dims)}"
                ),
                "drop --input (read from the graph) or match it",
            )
    return tuple(declared), max_batch_size


def _first_fixed(path: Path) -> list[Any]:
    model = onnx_model_from_file(path, load_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return [
        vi
        for vi in list(model.graph.input) + list(model.graph.output)
        if vi.name not in initializers and (not _dims(vi) or _dims(vi)[0] != -1)
    ]


def _unbatched(path: Path) -> tuple[Any, ...]:
    """Inputs with every dimension, the symbolic first one included (``--max-batch-size 0`` on a batched graph)."""
    import dataclasses

    model = onnx_model_from_file(path, load_data=False)
    io = io_from_onnx(model)
    dims = {vi.name: _dims(vi) for vi in model.graph.input}
    return tuple(dataclasses.replace(t, dims=tuple(dims[t.name])) for t in io.inputs)
