"""ONNX export stage: PyTorch module -> cleaned, checked ``model.onnx`` (+ ``model.onnx.data``).

The batch axis and every ``-1`` dimension are exported as dynamic. TorchScript modules go through the
TorchScript exporter (the dynamo exporter cannot trace them); everything else through ``torch.export``.
The graph is then cleaned with onnx-graphsurgeon (constant folding, clean-up, toposort) and checked with
``onnx.checker``; weights are kept as external data beside the model, as Triton's ONNX Runtime backend
expects.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .dtypes import triton_from_numpy
from .errors import TritongenError
from .export_errors import ExportFailure
from .logs import quieted
from .names import one_line
from .spec import TORCHSCRIPT_MAX_OPSET, BuildSpec, TensorSpec

ONNX_FILENAME = "model.onnx"
ONNX_DATA_FILENAME = "model.onnx.data"


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    data_path: Path | None
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    outputs: tuple[TensorSpec, ...]  # names from the spec, dtype and dims read from the graph
    node_count: int
    fallback: str = ""  # why the first exporter of "auto" was not used ("" when it was)
    log_path: Path | None = None  # torch's output of the failed attempts
    warnings: tuple[str, ...] = ()  # TorchScript tracer warnings of an explicitly chosen exporter
    dropped_outputs: tuple[str, ...] = ()  # what forward() returned as None (not served)

    def to_dict(self) -> dict[str, Any]:
        return {
            "exporter": self.exporter,
            "opset": self.opset,
            "nodes": self.node_count,
            **({"fallback": self.fallback} if self.fallback else {}),
            **({"warnings": list(self.warnings)} if self.warnings else {}),
            **({"dropped_outputs": list(self.dropped_outputs)} if self.dropped_outputs else {}),
        }


def short_reason(exc: BaseException) -> str:
    """The line of an exception message that says what went wrong (TorchScript puts it last)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]


def flatten_outputs(result: Any) -> list:
    """Model outputs as a flat list of tensors, in the order the ONNX exporters flatten them."""
    import torch

    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, Mapping):
        return [t for v in result.values() for t in flatten_outputs(v)]
    if isinstance(result, (list, tuple)):
        return [t for v in result for t in flatten_outputs(v)]
    if result is None:
        return []
    raise TritongenError(
        f"the model returned a {type(result).__name__}, which is not a tensor",
        "make forward() return a tensor, a tuple of tensors or a dict of tensors",
    )


@dataclass(frozen=True)
class OutputLayout:
    """Names for what forward() returned, one per tensor in :func:`flatten_outputs` order, and the Nones dropped."""

    names: tuple[str, ...]
    dropped: tuple[str, ...]


_NAME_CHARS = re.compile(r"[^A-Za-z0-9_]")


def output_layout(result: Any) -> OutputLayout:
    """A tensor is ``output``; a tuple's items ``output_0``, ``output_1``, ... (by position, Nones counted); a dict's
    (or a Hugging Face ``ModelOutput``'s) values their keys (field names); nested values join with ``_``
    (``hidden_states_0``). ``None`` values are dropped and named in ``dropped``."""
    import dataclasses

    import torch

    names: list[str] = []
    dropped: list[str] = []

    def join(path: str, part: Any) -> str:
        return f"{path}_{part}" if path else str(part)

    def walk(value: Any, path: str) -> None:
        if isinstance(value, torch.Tensor):
            names.append(path or "output")
        elif value is None:
            dropped.append(path or "output")
        elif isinstance(value, Mapping) and dataclasses.is_dataclass(value):  # ModelOutput hides its None fields
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name, None), join(path, f.name))
        elif isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, join(path, key))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, join(path or "output", i))
        else:
            flatten_outputs(value)  # raises the one clean error for what is not a tensor

    walk(result, "")
    clean: list[str] = []
    for name in names:
        base = _NAME_CHARS.sub("_", name)
        base = base if re.match(r"[A-Za-z_]", base) else f"output_{base}"
        unique, n = base, 1
        while unique in clean:
            unique, n = f"{base}_{n}", n + 1
        clean.append(unique)
    return OutputLayout(tuple(clean), tuple(dropped))


def torch_result_from_module(module: Any, spec: BuildSpec, inputs: Mapping[str, np.ndarray]) -> Any:
    """What the PyTorch model returns on named NumPy inputs (in the spec's input order), as it returns it."""
    import torch

    args = [torch.from_numpy(np.ascontiguousarray(inputs[t.name])) for t in spec.inputs]
    try:
        with torch.inference_mode():
            result = module(*args)
    except Exception as exc:  # the user's model failed on the declared inputs
        shapes = ", ".join(f"{t.name}{list(inputs[t.name].shape)} {inputs[t.name].dtype}" for t in spec.inputs)
        reason = short_reason(exc)
        fix = _range_at_fault(spec, inputs) or f"{_inputs_fix(spec)}{_size_hint(spec, reason)}"
        raise TritongenError(f"the model failed on inputs {shapes}: {reason[:300]}", fix) from None
    return result


EXAMPLE_INPUTS_NPZ = "example_inputs.npz"  # where the API's build(module, example_inputs=...) saves them


# torch's words for a tensor of the wrong dtype: 'must have the same dtype', 'one of the following scalar types',
# 'mixed dtype', '"addmm" not implemented for 'Long'', 'Input type (long int) and bias type (float) should be the same'
_DEVICE_WORDS = re.compile(r"cuda|device", re.IGNORECASE)
_DTYPE_FAILURE = re.compile(
    r"dtype|datatype|scalar type|not implemented for '|can't be cast to|"
    r"type \([^)]*\) and \w+ type \([^)]*\) should be the same",
    re.IGNORECASE,
)


# torch's words for a value the model does not take (a length of 0): generated integers are 0 or 1
# (tritongen.samples), and no size changes them. Not "out of range/bounds": an index past a size says it too
_VALUE_FAILURE = re.compile(r"greater than 0|must be positive|must be non-?negative", re.IGNORECASE)
GENERATED_INTEGERS = (
    "; the build's generated integer inputs are 0 or 1 (a length or count of 0, an index the model does not "
    "take): pass --sample-inputs with values the model is meant for"
)


# torch's words for an index past a table (an embedding given an id it has no row for)
_INDEX_FAILURE = re.compile(r"index out of range in self", re.IGNORECASE)  # not "out of bounds": a size says it


# Python's words for a call with too few or too many arguments: the inputs declared are not forward()'s
_MISSING_ARGS = re.compile(r"forward\(\) missing \d+ required positional arguments?: (.+)$")
_EXTRA_ARGS = re.compile(r"forward\(\) takes (\d+) positional arguments? but (\d+) (?:were|was) given")


def _size_hint(spec: BuildSpec, reason: str) -> str:
    """The --dim-range advice for a -1 dimension at its default size, where that size may be why the model failed:
    not where torch's reason is a dtype the model does not take (another size would fail alike), nor where it is
    a value of the build's generated integers (then that is the advice), nor an id past an embedding's rows, nor
    a call with other arguments than forward() takes (then that is the advice)."""
    missing = _MISSING_ARGS.search(reason)
    if missing:
        return (
            f"; forward() also takes {re.sub(r',? and ', ', ', missing.group(1))}: declare one input per argument of "
            "forward(), in its order (each as NAME:DTYPE:DIMS)"
        )
    extra = _EXTRA_ARGS.search(reason)
    if extra:  # the count includes self
        return (
            f"; forward() takes {int(extra.group(1)) - 1} argument(s) and {len(spec.inputs)} input(s) are declared: "
            "declare one input per argument of forward(), in its order"
        )
    if _DTYPE_FAILURE.search(reason):  # another size would fail alike: the dtype is the advice
        if _DEVICE_WORDS.search(reason) or not spec.inputs:  # a CPU/GPU mismatch is no dtype the user declared
            return ""
        declared = ", ".join(f"{t.name} {t.dtype}" for t in spec.inputs)
        return (
            f"; torch names a data type: the inputs were declared {declared}: give each the dtype forward() computes "
            "with (FP32 for features a float layer reads, INT64 for ids an embedding looks up)"
        )
    if _INDEX_FAILURE.search(reason) and any(t.dtype.startswith(("INT", "UINT")) for t in spec.inputs):
        where = f"in {spec.sample_inputs}" if spec.sample_inputs is not None else "you give"
        return (
            f"; an integer input holds an index the model has no row for (an id past an embedding's table): check "
            f"the ids {where} against the model's vocabulary"
        )
    generated = spec.sample_inputs is None and any(t.dtype.startswith(("INT", "UINT")) for t in spec.inputs)
    if generated and _VALUE_FAILURE.search(reason):
        return GENERATED_INTEGERS
    from .dim_ranges import range_hint

    return range_hint(spec)


def _inputs_fix(spec: BuildSpec) -> str:
    """How to fix inputs the model failed on, for where they came from: --input, the spec file, the samples."""
    declared = "the spec file's inputs" if spec.inputs_from == "spec" else "--input"
    if spec.inputs_from == "onnx":  # the graph's own inputs: only their sizes and values were the build's choice
        if spec.sample_inputs is not None:
            return f"check the arrays of {spec.sample_inputs.name} (values and sizes) against what the graph accepts"
        return "the graph's inputs were read from the file: pass --sample-inputs with arrays it accepts"
    if spec.inputs_from == "program" and spec.sample_inputs is None:
        return (
            "the inputs were read from the exported program, whose guards tie some sizes together: give tied "
            "dimensions the same --dim-range, or pass --sample-inputs with arrays the program accepts (a dimension "
            "computed from others in a way other than a*s+b, like s0*s1 or s//2, needs them)"
        )
    if spec.sample_inputs is None:
        return (
            f"check {declared} names, order, dtypes and dims against the model's forward() "
            "(or pass --sample-inputs with real data)"
        )
    samples = spec.sample_inputs.name
    if samples == EXAMPLE_INPUTS_NPZ and spec.inputs_from == "samples":  # build(module, example_inputs=...)
        return (
            "check example_inputs (names, order, dtypes, dims) against the module's forward(): one array per "
            "forward() argument, batch axis first"
        )
    if spec.inputs_from == "samples":
        return (
            f"check the arrays of {samples} (names, order, dtypes, dims) against the model's forward(); "
            "--sample-inputs must hold this model's inputs"
        )
    return f"check {declared} and the arrays of {samples} (names, order, dtypes, dims) against the model's forward()"


def torch_outputs_from_module(module: Any, spec: BuildSpec, inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run the PyTorch model on named NumPy inputs (in the spec's input order) and return NumPy outputs."""
    return [t.detach().cpu().numpy() for t in flatten_outputs(torch_result_from_module(module, spec, inputs))]


def _output_names(spec: BuildSpec, layout: OutputLayout) -> tuple[str, ...]:
    count = len(layout.names)
    if spec.output_names:
        if len(spec.output_names) != count:
            raise TritongenError(
                f"the model returns {count} output(s) but {len(spec.output_names)} --output name(s) were given",
                f"give exactly {count} --output name(s), in the order forward() returns them "
                f"({', '.join(layout.names)})",
            )
        return spec.output_names
    return layout.names


def _dynamic_axes(spec: BuildSpec) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    offset = 1 if spec.batched else 0
    for t in spec.inputs:
        named = {i + offset: f"{t.name}_dim{i}" for i in t.dynamic_axes}
        if spec.batched:
            named[0] = "batch"
        if named:
            axes[t.name] = named
    return axes


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' progress prints and deprecation chatter; errors still propagate."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        with quieted("", "torch", "torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript", "onnx_ir"):
            yield


def _quiet_onnxruntime() -> None:
    """ONNX Runtime's default logger at errors only: a session made without options (onnx-graphsurgeon's, folding
    constants) printed its graph optimizers' warnings, in terminal colours, into the build's stage output."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    ort.set_default_logger_severity(3)


def _export_torchscript(module, args, path: Path, spec: BuildSpec, input_names, output_names):
    """TorchScript exporter; returns the ModelProto in memory for models under protobuf's 2 GB limit
    (saves writing and re-reading the whole model), else writes ``path`` and returns it."""
    import torch

    from .consts import inner_module

    stateful = is_state_wrapper(module)
    if stateful or (module is not inner_module(module) and isinstance(inner_module(module), torch.jit.ScriptModule)):
        # a --const wrapper around a TorchScript module: the exporter only follows a ScriptModule it is handed
        module = torch.jit.trace(module, tuple(args), check_trace=False)
        if stateful:  # the state attributes' writes traced as in-place ops: make them functional for the exporter
            torch._C._jit_pass_remove_mutation(module.graph)
    axes = _dynamic_axes(spec)
    if spec.batched:
        for name in output_names:
            axes[name] = {0: "batch"}
    weight_bytes = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    in_memory = weight_bytes < 1_500_000_000
    target: Any = io.BytesIO() if in_memory else str(path)
    opset = spec.opset  # within what this exporter writes: checked by _export's exporter order
    with _chunk_symbolic(opset if stateful else None):
        torch.onnx.export(
            module,
            tuple(args),
            target,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    if not in_memory:
        return path
    import onnx

    return onnx.load_model_from_string(target.getvalue())


def is_state_wrapper(module: Any) -> bool:
    """A :mod:`tritongen.state_attrs` wrapper: exported by tracing it (TorchScript exporter only)."""
    return type(module).__name__ == "WithExplicitState"


@contextlib.contextmanager
def _chunk_symbolic(opset: int | None):
    """While exporting a traced state wrapper (opset >= 18): ``aten::unsafe_chunk`` (LSTM/GRU cells) along a dimension
    the exporter's shape inference lost becomes ONNX ``Split(num_outputs=chunks)``, which needs no size."""
    if opset is None or opset < 18:
        yield
        return
    import torch
    from torch.onnx._internal.torchscript_exporter import symbolic_helper, symbolic_opset13

    @symbolic_helper.parse_args("v", "i", "i", "i")
    def chunk(g, self, chunks, dim, _outputs=None):
        if _outputs is None or symbolic_helper._get_tensor_dim_size(self, dim) is not None:
            return symbolic_opset13.unsafe_chunk(g, self, chunks, dim, _outputs)
        return g.op("Split", self, axis_i=dim, num_outputs_i=chunks, outputs=_outputs)

    torch.onnx.register_custom_op_symbolic("aten::unsafe_chunk", chunk, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::unsafe_chunk", opset)


def _takes_varargs(module: Any) -> bool:
    import inspect

    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return False
    return len(params) == 1 and params[0].kind is inspect.Parameter.VAR_POSITIONAL


def _export_dynamo(module, args, path: Path, spec: BuildSpec, input_names, output_names) -> None:
    import torch

    dim = torch.export.Dim.DYNAMIC
    offset = 1 if spec.batched else 0
    shapes: list[Any] = []
    for t in spec.inputs:
        axes = {i + offset: dim for i in t.dynamic_axes}
        if spec.batched:
            axes[0] = dim
        shapes.append(axes or None)
    if _takes_varargs(module):  # a --const wrapper, forward(*tensors): torch.export wants one entry for *tensors
        shapes = [tuple(shapes)]
    _forget_rnn_kernels()
    torch.onnx.export(
        module,
        tuple(args),
        str(path),
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_shapes=tuple(shapes),
        opset_version=spec.opset,
        dynamo=True,
        external_data=True,
        verbose=False,
        optimize=True,
    )


def _forget_rnn_kernels() -> None:
    """Drop what torch's dispatcher cached for LSTM and GRU. With dynamic shapes the dynamo exporter swaps in a
    while-loop LSTM/GRU kernel for the export and takes it out after, but the operator's dispatch cache keeps the
    kernel a call resolved to: from the second such export in one process (a notebook building twice, FP32 then
    FP16), the recurrent layers traced the plain way and fixed the sequence length ("the model fixes dimension 0 of
    input 'x' to 16"; torch 2.13, measured). A fresh cache resolves the swapped-in kernel again."""
    import torch

    for name in ("lstm", "gru"):
        op = getattr(getattr(torch.ops.aten, name, None), "input", None)
        cache = getattr(op, "_dispatch_cache", None)
        if isinstance(cache, dict):
            cache.clear()


def graph_outputs(model, names: tuple[str, ...], spec: BuildSpec) -> tuple[TensorSpec, ...]:
    """The output specs of an exported or cleaned graph (``names`` in order), dims without the batch axis."""
    from onnx import helper

    specs = []
    for out, name in zip(model.graph.output, names):
        tensor_type = out.type.tensor_type
        dtype = triton_from_numpy(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        if spec.batched:
            if not dims:
                raise TritongenError(
                    f"output '{name}' is a scalar, so it has no batch dimension",
                    "return one value per batch item (shape [batch, ...]) or build with --max-batch-size 0",
                )
            dims = dims[1:]
        specs.append(TensorSpec(name=name, dtype=dtype, dims=tuple(dims) or (1,), scalar=spec.batched and not dims))
    return tuple(specs)


def _name_batch_symbol(model: Any) -> None:
    """Rename the symbol of every graph input's first dimension to ``batch`` (where they share one and ``batch``
    names no other dimension), in the inputs, outputs and value infos alike."""
    graph = model.graph
    firsts = {i.type.tensor_type.shape.dim[0].dim_param for i in graph.input if i.type.tensor_type.shape.dim}
    if len(firsts) != 1 or "" in firsts or len(graph.input) == 0:
        return
    (symbol,) = firsts
    infos = [*graph.input, *graph.output, *graph.value_info]
    dims = [d for v in infos for d in v.type.tensor_type.shape.dim]
    if symbol == "batch" or any(d.dim_param == "batch" for d in dims):
        return
    for d in dims:
        if d.dim_param == symbol:
            d.dim_param = "batch"


def cleaned_onnx_from_onnx(
    src: Any, dst_dir: Path, name_batch: bool = False, given: Path | None = None
) -> tuple[Path, Any]:
    """Fold constants, remove dead nodes and sort with onnx-graphsurgeon; save with external data; check.

    ``src`` is an ONNX file path or an in-memory ``onnx.ModelProto``. ``name_batch``: the symbol every input's first
    dimension shares (the dynamo exporter writes ``s24`` and the like) is renamed ``batch`` throughout the graph.
    ``given``: the user's ONNX file ``src`` was read from (a checker failure is then the file's, not an export's).
    """
    import onnx
    import onnx_graphsurgeon as gs

    model = src if isinstance(src, onnx.ModelProto) else onnx.load(str(src), load_external_data=True)
    _quiet_onnxruntime()  # onnx-graphsurgeon folds with sessions of its own, at ONNX Runtime's default severity
    with _quiet():
        graph = gs.import_onnx(model)
        graph.fold_constants().cleanup().toposort()
        cleaned = gs.export_onnx(graph)
    cleaned.ir_version = model.ir_version
    del cleaned.opset_import[:]
    cleaned.opset_import.extend(model.opset_import)
    if name_batch:
        _name_batch_symbol(cleaned)
    _name_every_node(cleaned)
    dst_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = dst_dir / ONNX_FILENAME
    (dst_dir / ONNX_DATA_FILENAME).unlink(missing_ok=True)  # onnx appends to an existing external data file
    onnx.save_model(
        cleaned,
        str(onnx_path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=ONNX_DATA_FILENAME,
        size_threshold=1024,
    )
    try:
        onnx.checker.check_model(str(onnx_path), full_check=True)
    except Exception as exc:
        why = one_line(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)[:300]
        if given is not None and not _passes_checker(given):  # else the cleaning broke it: ours to report
            raise TritongenError(
                f"{given.name} does not pass onnx.checker: {why}",
                f"fix the graph and save it again (onnx.checker.check_model('{given.name}', full_check=True) "
                "shows the same)",
            ) from None
        raise TritongenError(
            f"the exported ONNX model does not pass onnx.checker: {why}", "report this with the model; try --opset 17"
        ) from None
    skeleton = onnx.load(str(onnx_path), load_external_data=False)
    try:  # shapes the exporter left open (e.g. after a Reshape) are often known with data propagation
        skeleton = onnx.shape_inference.infer_shapes(skeleton, data_prop=True)
    except Exception:
        pass
    return onnx_path, skeleton


def _name_every_node(model: Any) -> None:
    """Give each unnamed node (and each that repeats an earlier name) a name of its own: the precision guard
    counts, falls back and reports layers by name, and an ONNX file's unnamed Gemms were one "layer" holding the
    whole model (its per-layer fallback could never work, its report named blank layers)."""
    taken = {node.name for node in model.graph.node if node.name}
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            name, number = f"{node.op_type}_{index}", 1
            while name in taken:
                name, number = f"{node.op_type}_{index}_{number}", number + 1
            node.name = name
            taken.add(name)
        seen.add(node.name)


def _passes_checker(path: Path) -> bool:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception:  # noqa: BLE001 -- whatever the checker raises on the graph
        return False
    return True


def _with_range_words(failure: ExportFailure, spec: BuildSpec) -> ExportFailure:
    """A shape failure at a dimension a --dim-range made variable: that range is named in the fix (declaring the
    size alone would contradict it)."""
    from .dim_ranges import ranges_from_spec

    if failure.fixed_at is None:
        return failure
    name, axis, size = failure.fixed_at
    given = next((r for r in ranges_from_spec(spec) if r.explicit and (r.input, r.axis) == (name, axis)), None)
    if given is None:
        return failure
    return replace(
        failure,
        fix=f"the model takes only {size} there: drop --dim-range {given.text} and declare that dimension as {size} "
        "in --input (where it is declared -1), or make forward() accept any size there",
    )


def _range_at_fault(spec: BuildSpec, inputs: Mapping[str, np.ndarray]) -> str:
    """Where the model failed on inputs sized at the MIN or MAX of a --dim-range (not at the samples' own sizes),
    the fix naming that range: the sizes came from it, not from the inputs given."""
    from .dim_ranges import ranges_from_spec

    for r in ranges_from_spec(spec):
        shape = inputs.get(r.input, np.empty(0)).shape
        at = r.axis + (1 if spec.batched else 0)
        if not r.explicit or at >= len(shape) or shape[at] == r.opt:
            continue
        end = "MIN" if shape[at] == r.min else "MAX" if shape[at] == r.max else None
        if end is not None:
            return (
                f"dimension {r.axis} of '{r.input}' is {shape[at]} here, the {end} of --dim-range {r.text}: give a "
                "range of sizes the model accepts, or leave it out"
            )
    return ""


def exporter_order(module: Any, requested: str) -> tuple[str, ...]:
    """Exporters to try, in order: ``auto`` is dynamo then TorchScript, or TorchScript alone for a ScriptModule
    (the dynamo exporter cannot trace one)."""
    import torch

    from .consts import inner_module

    is_script = isinstance(inner_module(module), torch.jit.ScriptModule)
    if requested == "dynamo" and is_script:
        raise TritongenError(
            "--exporter dynamo cannot export a TorchScript module",
            "use --exporter torchscript (or auto), or save the model with torch.export.save (.pt2) "
            "or as a state_dict with --model-factory",
        )
    if requested == "dynamo" and is_state_wrapper(module):
        raise TritongenError(
            "--exporter dynamo cannot export a module whose state attributes tritongen made explicit",
            "use --exporter torchscript (or auto)",
        )
    if requested != "auto":
        return (requested,)
    if type(module).__name__ == "ProgramCall" or isinstance(inner_module(module), torch.fx.GraphModule):
        return ("dynamo",)  # a torch.export program's module: the TorchScript exporter cannot run it (train())
    return ("torchscript",) if is_script or is_state_wrapper(module) else ("dynamo", "torchscript")


def _attempt(
    exporter: str, loaded: Any, args, raw: Path, spec: BuildSpec, input_names, output_names, explicit: bool
) -> tuple[Any, ExportFailure | None, str, tuple[str, ...]]:
    """One exporter, quietly: (raw model or path, failure or None, torch's output, trace warnings kept)."""
    from .export_capture import captured_output, exception_text
    from .export_errors import failure_from_exception, forward_arg_names, trace_warning_failure

    result: Any = raw
    try:
        with captured_output() as captured:
            if exporter == "torchscript":
                result = _export_torchscript(loaded.module, args, raw, spec, input_names, output_names)
            else:
                _export_dynamo(loaded.module, args, raw, spec, input_names, output_names)
    except TritongenError:
        raise
    except Exception as exc:  # noqa: BLE001 -- any exporter failure becomes one line; the rest goes to the log
        from .consts import inner_module

        failure = failure_from_exception(
            exc, exporter, spec.opset, input_names, forward_arg_names(inner_module(loaded.module)), spec.batched
        )
        return None, failure, f"{captured.text}\n\n{exception_text(exc)}", ()
    traced = trace_warning_failure(captured.warnings) if exporter == "torchscript" else None
    if traced is not None and not explicit:
        return None, traced, captured.text, ()
    return result, None, captured.text, (f"{traced.reason}; {traced.fix}",) if traced else ()


def onnx_from_module(
    loaded: Any, spec: BuildSpec, example_inputs: Mapping[str, np.ndarray], out_dir: Path, raw_dir: Path
) -> ExportResult:
    """Export ``loaded.module`` to ``out_dir/model.onnx``; ``raw_dir`` holds the exporter's raw output.

    ``spec.exporter`` chooses the exporter (``auto``: see :func:`exporter_order`). Under ``auto``, when the first
    exporter fails and the next succeeds, the result says why (``fallback``); the build's parity gate then checks
    the graph it made. A failure of every exporter is one :class:`TritongenError` line naming the operator, shape or
    line of ``forward()`` and the fix; torch's whole output is in a log file (:mod:`tritongen.export_capture`)."""
    import torch

    from .export_capture import export_log_from_text

    order = exporter_order(loaded.module, spec.exporter)
    if spec.opset > TORCHSCRIPT_MAX_OPSET:  # the TorchScript exporter cannot write it (a spec refuses it asked for)
        if order == ("torchscript",):
            raise TritongenError(
                "this model is exported by torch's TorchScript exporter (a TorchScript module, or one whose state "
                f"tritongen made explicit), which writes opset {TORCHSCRIPT_MAX_OPSET} at most; --opset is "
                f"{spec.opset}",
                f"use --opset {TORCHSCRIPT_MAX_OPSET} or lower",
            )
        order = tuple(e for e in order if e != "torchscript")
    layout = output_layout(torch_result_from_module(loaded.module, spec, example_inputs))
    if not layout.names:
        raise TritongenError("the model returns no outputs", "make forward() return at least one tensor")
    output_names = _output_names(spec, layout)
    input_names = [t.name for t in spec.inputs]
    args = [torch.from_numpy(np.ascontiguousarray(example_inputs[n])) for n in input_names]
    raw_dir.mkdir(parents=True, exist_ok=True)
    failures: list[ExportFailure] = []
    sections: list[tuple[str, str]] = []
    raw = None
    for exporter in order:
        raw, failure, output, warned = _attempt(
            exporter,
            loaded,
            args,
            raw_dir / ONNX_FILENAME,
            spec,
            input_names,
            output_names,
            explicit=spec.exporter != "auto",
        )
        sections.append((f"{exporter} exporter" + (f": {failure.reason}" if failure else ": succeeded"), output))
        if failure is None:
            break
        failures.append(failure)
        if failure.kind == "shape":  # the declared dims are wrong: another exporter would bake in a size
            break
    log = export_log_from_text(spec.name, sections) if failures else None
    log_note = f"torch's output is in {log}" if isinstance(log, Path) else (log or "")
    if failure is not None:
        first = _with_range_words(failures[0], spec)
        also = "".join(f" (the {f.exporter} exporter also failed: {f.reason})" for f in failures[1:])
        other = "torchscript" if first.exporter == "dynamo" else "dynamo"
        untried = first.kind in ("operator", "other") and len(failures) == 1 and other not in order
        if untried and other == "torchscript" and spec.opset > TORCHSCRIPT_MAX_OPSET:
            also += f"; --opset {TORCHSCRIPT_MAX_OPSET} (so that the TorchScript exporter is tried too) may succeed"
        elif untried and (other == "torchscript" or exporter_order(loaded.module, "auto")[0] == "dynamo"):
            also += f"; --exporter {other} may succeed"
        raise TritongenError(
            f"ONNX export failed ({first.exporter} exporter): {first.reason}{also}", f"{first.fix}; {log_note}"
        )
    fallback = ""
    if failures:
        fallback = f"the {failures[0].exporter} exporter failed: {failures[0].reason} ({log_note})"
    onnx_path, model = cleaned_onnx_from_onnx(raw, out_dir, name_batch=spec.batched)
    graph_inputs = [i.name for i in model.graph.input]
    unused = [n for n in input_names if n not in graph_inputs]
    if unused:
        raise TritongenError(
            f"input '{unused[0]}' is not used by the model, so the exported graph has no such input",
            "remove it from --input (or use it in forward())",
        )
    outputs = graph_outputs(model, output_names, spec)
    data = out_dir / ONNX_DATA_FILENAME
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), spec.opset)
    return ExportResult(
        onnx_path=onnx_path,
        data_path=data if data.exists() else None,
        exporter=exporter,
        opset=opset,
        outputs=outputs,
        node_count=len(model.graph.node),
        fallback=fallback,
        log_path=log if isinstance(log, Path) else None,
        warnings=warned,
        dropped_outputs=layout.dropped,
    )
