"""``tritongen build model.pt2``: a torch.export archive's inputs read from its program, so no ``--input`` is needed.

An ``ExportedProgram`` carries what ``--input`` would declare: the names of ``forward()``'s tensor arguments
(``graph_signature.user_inputs``), and per input the dtype and the shape it was exported with, where a dimension
is a number (fixed) or a symbol (dynamic, with the range ``range_constraints`` gives it). The archive is loaded
with :func:`tritongen.load.exported.program_from_archive`, which first refuses pickled payloads unless
``--allow-pickle``.

* The batch axis: ``max_batch_size`` given > 0 takes every input's first dimension as the batch (it must be
  dynamic); given 0 keeps the full shapes; not given, the model is batched (``max_batch_size`` 8, or the batch
  symbol's upper bound if that is lower) when every input's first dimension is dynamic, else unbatched.
* Every other dynamic dimension is ``-1``; where the program bounds it tighter than the default range
  (:func:`tritongen.dim_ranges.ranges_from_spec`), the bounds become its ``--dim-range`` (a given one wins).
* Only arguments passed positionally and each a tensor are read; any other signature (keyword arguments, nested
  lists or dicts, numbers) asks for ``--input``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dim_ranges import DimRange
from .dtypes import triton_from_torch
from .errors import TritongenError
from .tensors import TensorSpec

_DECLARE = "declare the inputs with --input NAME:DTYPE:DIMS (or --spec spec.yaml)"


@dataclass(frozen=True)
class ProgramInputs:
    """What a torch.export archive says about its inputs, as the build spec takes it."""

    inputs: tuple[TensorSpec, ...]
    max_batch_size: int
    dim_ranges: tuple[DimRange, ...]  # only where the program bounds a dimension tighter than the default range
    batch_note: str  # how the batch axis was decided, for the build's progress line


@dataclass(frozen=True)
class _Dim:
    size: int | None  # None: dynamic
    lower: int = 0
    upper: int | None = None  # None: unbounded


def is_exported_archive(model: Path) -> bool:
    """Whether ``model`` is a torch.export archive (read from its content, not its name)."""
    from .load.detect import detect_format

    if not model.is_file():
        return False
    try:
        return detect_format(model).kind == "torch.export"
    except TritongenError:
        return False


def program_inputs_from_archive(
    model: Path,
    *,
    allow_pickle: bool,
    max_batch_size: int | None,
    default_max_batch_size: int,
    dim_default: tuple[int, int, int],
    given_ranges: Sequence[DimRange] = (),
) -> ProgramInputs:
    """Load the archive and read its inputs (see the module's docstring). ``dim_default`` is the default
    MIN/OPT/MAX of a ``-1`` dimension; ``given_ranges`` are the user's, which replace the program's bounds."""
    from .load.exported import program_from_archive

    ep, _ = program_from_archive(model, allow_pickle)
    return program_inputs_from_program(
        ep,
        model.name,
        max_batch_size=max_batch_size,
        default_max_batch_size=default_max_batch_size,
        dim_default=dim_default,
        given_ranges=given_ranges,
    )


def program_inputs_from_program(
    ep: Any,
    source: str,
    *,
    max_batch_size: int | None,
    default_max_batch_size: int,
    dim_default: tuple[int, int, int],
    given_ranges: Sequence[DimRange] = (),
) -> ProgramInputs:
    """:func:`program_inputs_from_archive` for a loaded ``ExportedProgram`` (``source`` names it in messages)."""
    shapes = _input_shapes(ep, source)
    if not shapes:
        raise TritongenError(f"the exported program in {source} takes no tensor inputs", _DECLARE)
    batched, mbs, note = _batch_axis(shapes, source, max_batch_size, default_max_batch_size)
    given = {(r.input, r.axis) for r in given_ranges}
    specs, ranges = [], []
    for name, (dtype, dims) in shapes.items():
        kept = dims[1:] if batched else dims
        specs.append(TensorSpec(name=name, dtype=dtype, dims=tuple(-1 if d.size is None else d.size for d in kept)))
        for axis, d in enumerate(kept):
            if d.size is None and (name, axis) not in given:
                bounded = _bounded_range(name, axis, d, dim_default)
                if bounded is not None:
                    ranges.append(bounded)
    return ProgramInputs(tuple(specs), mbs, tuple(ranges), note)


def _input_shapes(ep: Any, source: str) -> dict[str, tuple[str, list[_Dim]]]:
    """``{input name: (Triton dtype, dims)}`` in ``forward()`` order, or a clear refusal."""
    import torch

    spec = getattr(getattr(ep, "call_spec", None), "in_spec", None)
    if spec is not None:
        args_spec, kwargs_spec = _children(spec)
        if kwargs_spec.num_leaves or any(not child.is_leaf() for child in _children(args_spec)):
            raise TritongenError(
                f"the exported program in {source} takes keyword or nested (list, dict) arguments, "
                "which tritongen cannot name from the program",
                _DECLARE,
            )
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    ranges = dict(getattr(ep, "range_constraints", {}) or {})
    out: dict[str, tuple[str, list[_Dim]]] = {}
    for name in ep.graph_signature.user_inputs:
        if not isinstance(name, str):
            continue  # a number fixed at export: :func:`fixed_arguments` passes it
        node = placeholders.get(name)
        val = node.meta.get("val") if node is not None else None
        if not isinstance(val, torch.Tensor):
            raise TritongenError(f"argument '{name}' of the exported program in {source} is not a tensor", _DECLARE)
        try:
            dtype = triton_from_torch(val.dtype)
        except TritongenError as err:
            raise TritongenError(f"input '{name}' of {source}: {err.problem}", err.fix) from None
        out[name] = (dtype, [_dim(size, ranges) for size in val.shape])
    return out


def fixed_arguments(ep: Any) -> tuple[tuple[int, str, Any], ...]:
    """``(position, name, value)`` of every ``forward()`` argument the program fixed at export (a number, a bool,
    None): torch.export keeps the value among ``graph_signature.user_inputs`` and its module still takes it."""
    import inspect

    fixed = [(i, v) for i, v in enumerate(ep.graph_signature.user_inputs) if not isinstance(v, str)]
    if not fixed:
        return ()
    try:
        names = list(inspect.signature(ep.module().forward).parameters)
    except (TypeError, ValueError):
        names = []
    return tuple((i, names[i] if i < len(names) else f"argument {i}", v) for i, v in fixed)


def _children(spec: Any) -> list[Any]:
    children = getattr(spec, "children", None)  # torch >= 2.10; children_specs warns there
    return list(children() if callable(children) else spec.children_specs)


def _dim(size: Any, ranges: dict[Any, Any]) -> _Dim:
    if isinstance(size, int):
        return _Dim(size)
    expr = getattr(getattr(size, "node", None), "expr", None)
    if expr is not None and getattr(expr, "is_Integer", False):
        return _Dim(int(expr))
    bound = ranges.get(expr)
    if bound is None:
        return _Dim(None)  # an expression of symbols (e.g. 2*s0): dynamic, no bounds of its own
    lower, upper = _finite(bound.lower), _finite(bound.upper)
    return _Dim(None, lower or 0, upper)


def _finite(value: Any) -> int | None:
    """A bound as an int; None for infinity (sympy's ``oo``, torch's ``int_oo``) or anything not an integer."""
    if isinstance(value, int):
        return value
    return int(value) if getattr(value, "is_Integer", False) else None


def _batch_axis(
    shapes: dict[str, tuple[str, list[_Dim]]], source: str, given: int | None, default: int
) -> tuple[bool, int, str]:
    """(batched, max_batch_size, note)."""
    firsts = {name: dims[0] if dims else None for name, (_, dims) in shapes.items()}
    fixed = {name: d for name, d in firsts.items() if d is None or d.size is not None}
    if given == 0:
        return False, 0, "max_batch_size 0: every input keeps its full shape"
    if fixed:
        name, d = next(iter(fixed.items()))
        if given is not None:
            what = "has no dimensions" if d is None else f"fixes its first dimension at {d.size}"
            raise TritongenError(
                f"--max-batch-size {given}: input '{name}' of the exported program in {source} {what}, "
                "so it has no batch axis",
                f"export it again with dynamic_shapes={{'{name}': {{0: torch.export.Dim('batch')}}}}, "
                "or pass --max-batch-size 0",
            )
        return False, 0, f"unbatched (max_batch_size 0): the first dimension of '{name}' is fixed in the program"
    lowest = max(d.lower for d in firsts.values() if d is not None)
    if lowest > 1:
        raise TritongenError(
            f"the exported program in {source} takes batches of at least {lowest}; Triton sends batches from 1",
            "export it again with dynamic_shapes={...: {0: torch.export.Dim('batch', min=1)}}, "
            "or declare the inputs with --input",
        )
    uppers = [d.upper for d in firsts.values() if d is not None and d.upper is not None]
    if given is not None:
        if uppers and given > min(uppers):
            raise TritongenError(
                f"--max-batch-size {given} is above the exported program's largest batch, {min(uppers)}",
                f"pass --max-batch-size {min(uppers)} or less, or export it again with a larger Dim('batch', max=...)",
            )
        return True, given, f"batched: the first dimension of every input is dynamic (max_batch_size {given})"
    mbs = min([default, *uppers])
    return True, mbs, f"batched: the first dimension of every input is dynamic (max_batch_size {mbs})"


def _bounded_range(name: str, axis: int, d: _Dim, default: tuple[int, int, int]) -> DimRange | None:
    """The program's bounds as a range (checked by the gate at its MIN, the TensorRT profile's minimum), where they
    exclude part of the default range; else None. ``--max-dim`` still caps MAX unless the program's MIN is above."""
    lo_default, opt_default, hi_default = default
    lower = max(d.lower, 1)
    if lower <= lo_default and (d.upper is None or d.upper >= hi_default):
        return None
    hi = max(hi_default if d.upper is None else min(d.upper, hi_default), lower)
    return DimRange(name, axis, lower, min(max(opt_default, lower), hi), hi, explicit=True)
