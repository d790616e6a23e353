"""``tritongen build model.pt2``: a torch.export archive's inputs read from its program, so no ``--input`` is needed.

An ``ExportedProgram`` carries what ``--input`` would declare: the names of ``forward()``'s tensor arguments
(``graph_signature.input_specs`` of kind USER_INPUT), and per input the dtype and the shape it was exported with,
where a dimension is a number (fixed) or a symbol (dynamic, with the range ``range_constraints`` gives it). The
spec loads the archive with :func:`tritongen.load.exported.program_from_archive`, which first refuses pickled
payloads unless ``--allow-pickle``.

* The batch axis: the inputs' first dimensions are one when they are one dynamic symbol in every input and every
  output's first dimension is that symbol too; then the model is batched (``max_batch_size`` given, else 8 or the
  symbol's upper bound if that is lower), else unbatched (a given ``max_batch_size`` > 0 is refused, naming why);
  ``max_batch_size`` 0 keeps the full shapes. torch reports ``Dim.DYNAMIC`` as 2..: batches from 3 are refused.
* Every other dynamic dimension is ``-1``; where the program bounds it tighter than the default range
  (:func:`tritongen.dim_ranges.ranges_from_spec`), the bounds become its ``--dim-range`` (a given one wins).
* Every tensor the program takes is an input, wherever it sits in ``forward()``'s arguments: positional, keyword,
  or inside a list or dict (named as torch.export names its placeholder: ``d_a`` for ``d["a"]``, ``xs_0``). The
  build calls the program through :func:`module_with_program_call`, which puts the tensors back where the program
  takes them (``tree_unflatten`` of its input spec) with the numbers fixed at export (:func:`fixed_arguments`).
* Dimensions that share one symbol in the program (``input_ids`` and ``attention_mask`` of one sequence length)
  share a range: a ``--dim-range`` given for one applies to the others too.
* A 0-d (scalar) tensor input is refused: a Triton input has at least one dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .dim_ranges import MAX_DIM_SIZE, DimRange, TiedDim, batch_dims_hint
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
    tied_dims: tuple[TiedDim, ...] = ()  # dimensions the program computes from another (2*L)


@dataclass(frozen=True)
class _Dim:
    size: int | None  # None: dynamic
    lower: int = 0
    upper: int | None = None  # None: unbounded
    symbol: str = ""  # the program's symbol of a dynamic dimension (shared by dimensions that are one size)
    tie: tuple[str, int, int] | None = None  # an expression scale*s + offset of one symbol s: (s, scale, offset)


@dataclass(frozen=True)
class _Entry:
    """One leaf of the program's inputs, in the order torch.export flattens them."""

    name: str
    tensor: bool
    value: Any = None  # a value fixed at export (tensor False)


def program_inputs_from_program(
    ep: Any,
    source: str,
    *,
    max_batch_size: int | None,
    default_max_batch_size: int,
    dim_default: tuple[int, int, int],
    given_ranges: Sequence[DimRange] = (),
    max_dim_given: bool = False,
) -> ProgramInputs:
    """The inputs of a loaded ``ExportedProgram`` (``source`` names it in messages; see the module's docstring).
    ``dim_default`` is the default MIN/OPT/MAX of a ``-1`` dimension; ``given_ranges`` are the user's, which replace
    the program's bounds (and apply to the dimensions that share a symbol with theirs). A program's upper bound is
    the range's MAX unless ``--max-dim`` was given (``max_dim_given``) below it."""
    shapes = _input_shapes(ep, source)
    if not shapes:
        raise TritongenError(f"the exported program in {source} takes no tensor inputs", _DECLARE)
    batched, mbs, note = _batch_axis(shapes, source, max_batch_size, default_max_batch_size, _output_firsts(ep))
    kept = {name: (dtype, dims[1:] if batched else dims) for name, (dtype, dims) in shapes.items()}
    given = {(r.input, r.axis): r for r in given_ranges}
    by_symbol = {kept[r.input][1][r.axis].symbol: r for r in given_ranges if _symbol_of(kept, r)}
    specs, ranges, ties = [], [], []
    bases = {d.symbol: (name, axis) for name, (_, dims) in kept.items() for axis, d in enumerate(dims) if d.symbol}
    for name, (dtype, dims) in kept.items():
        # a [batch] input is a scalar per item (dims [1] to clients, [batch] to the program)
        sizes = tuple(-1 if d.size is None else d.size for d in dims)
        specs.append(TensorSpec(name=name, dtype=dtype, dims=sizes or (1,), scalar=not sizes))
        for axis, d in enumerate(dims):
            base = bases.get(d.tie[0]) if d.tie is not None else None
            if base is not None and d.tie is not None:  # computed from another dimension: its sizes follow that one
                tie = TiedDim(name, axis, base[0], base[1], d.tie[1], d.tie[2])
                if (name, axis) in given:
                    raise TritongenError(
                        f"--dim-range {given[(name, axis)].text}: dimension {axis} of '{name}' is computed from "
                        f"dimension {base[1]} of '{base[0]}' in the program ({tie.text})",
                        f"give the range of {base[0]}'s dimension {base[1]} instead: {name}'s follows it",
                    )
                ties.append(tie)
                continue
            if d.size is None and (name, axis) in given:
                _check_within_bounds(given[(name, axis)], d)
            if d.size is not None or (name, axis) in given:
                continue
            shared = by_symbol.get(d.symbol) if d.symbol else None
            if shared is not None:  # one size in the program: the range given for its twin
                ranges.append(DimRange(name, axis, shared.min, shared.opt, shared.max, explicit=shared.explicit))
                continue
            bounded = _bounded_range(name, axis, d, dim_default, max_dim_given)
            if bounded is not None:
                ranges.append(bounded)
    return ProgramInputs(tuple(specs), mbs, tuple(ranges), note, tuple(ties))


def _check_within_bounds(given: DimRange, d: _Dim) -> None:
    """A ``--dim-range`` within the sizes the program takes for that dimension (its guards refuse the others: the
    gate failed on "Guard failed: features.size()[1] <= 100" after the export)."""
    low, high = max(d.lower, 1), d.upper
    if given.min >= low and (high is None or given.max <= high):
        return
    taken = f"from {low} to {high}" if high is not None else f"from {low} up"
    lo = max(given.min, low)
    hi = given.max if high is None else max(lo, min(given.max, high))
    opt = min(max(given.opt, lo), hi)
    raise TritongenError(
        f"--dim-range {given.text}: the program takes dimension {given.axis} of '{given.input}' {taken}",
        f"give sizes within that, e.g. --dim-range {given.input}:{given.axis}:{lo}:{opt}:{hi}",
    )


def _symbol_of(kept: dict[str, tuple[str, list[_Dim]]], r: DimRange) -> str:
    dims = kept.get(r.input, ("", []))[1]
    return dims[r.axis].symbol if 0 <= r.axis < len(dims) and dims[r.axis].size is None else ""


def _input_shapes(ep: Any, source: str) -> dict[str, tuple[str, list[_Dim]]]:
    """``{input name: (Triton dtype, dims)}`` in the order the program takes them, or a clear refusal."""
    import torch

    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    ranges = dict(getattr(ep, "range_constraints", {}) or {})
    out: dict[str, tuple[str, list[_Dim]]] = {}
    for entry in user_input_entries(ep):
        if not entry.tensor:
            continue  # fixed at export: module_with_program_call passes it
        node = placeholders.get(entry.name)
        val = node.meta.get("val") if node is not None else None
        if not isinstance(val, torch.Tensor):
            raise TritongenError(
                f"argument '{entry.name}' of the exported program in {source} is not a tensor", _DECLARE
            )
        if val.dim() == 0:
            raise TritongenError(
                f"input '{entry.name}' of the exported program in {source} is a 0-d (scalar) tensor, and a Triton "
                "input has at least one dimension",
                f"export it again with '{entry.name}' of shape [1] (or [batch, 1]), or fix its value inside the model",
            )
        try:
            dtype = triton_from_torch(val.dtype)
        except TritongenError:
            kind = str(val.dtype).replace("torch.", "")
            raise TritongenError(
                f"input '{entry.name}' of the exported program in {source} is a {kind} tensor, which Triton has no "
                "type for",
                f"export it again taking '{entry.name}' as float32 (cast it to {kind} inside forward())",
            ) from None
        out[entry.name] = (dtype, [_dim(size, ranges) for size in val.shape])
    return out


def user_input_entries(ep: Any) -> tuple[_Entry, ...]:
    """The program's inputs as torch.export flattens them (``graph_signature.input_specs`` of kind USER_INPUT):
    tensors by placeholder name, and values fixed at export (numbers, bools, None) with theirs."""
    from torch.export.graph_signature import ConstantArgument, InputKind

    entries = []
    for spec in ep.graph_signature.input_specs:
        if spec.kind != InputKind.USER_INPUT:
            continue
        if isinstance(spec.arg, ConstantArgument):
            entries.append(_Entry(spec.arg.name, False, spec.arg.value))
        else:
            entries.append(_Entry(str(getattr(spec.arg, "name", "")), True))
    return tuple(entries)


def fixed_arguments(ep: Any) -> tuple[tuple[str, Any], ...]:
    """``(name, value)`` of every ``forward()`` argument the program fixed at export (a number, a bool, None):
    torch.export keeps the value among its inputs and its module still takes it."""
    return tuple((e.name, e.value) for e in user_input_entries(ep) if not e.tensor)


def module_with_program_call(ep: Any, module: Any) -> Any:
    """``module`` (``ep.module()``) called with its tensors alone, in :func:`user_input_entries` order: the values
    fixed at export go back in their places and the leaves back into the program's argument structure (keyword
    arguments, lists, dicts) with ``tree_unflatten``; ``module`` itself where it takes its tensors positionally."""
    import torch
    from torch.utils._pytree import tree_unflatten

    entries = user_input_entries(ep)
    in_spec = ep.call_spec.in_spec
    args_spec, kwargs_spec = _children(in_spec)
    plain = all(e.tensor for e in entries) and not kwargs_spec.num_leaves
    if plain and all(child.is_leaf() for child in _children(args_spec)):
        return module

    class ProgramCall(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: Any) -> Any:
            given = iter(tensors)
            flat = [next(given) if e.tensor else e.value for e in entries]
            args, kwargs = tree_unflatten(flat, in_spec)
            return self.inner(*args, **kwargs)

    wrapped = ProgramCall(module)
    for sub in wrapped.modules():  # what .eval() does, without calling train(): torch.export's module refuses it
        sub.training = False
    return wrapped


def _children(spec: Any) -> list[Any]:
    children = getattr(spec, "children", None)  # torch >= 2.10; children_specs warns there
    return list(children() if callable(children) else spec.children_specs)


def _dim(size: Any, ranges: dict[Any, Any]) -> _Dim:
    if isinstance(size, int):
        return _Dim(size)
    expr = getattr(getattr(size, "node", None), "expr", None)
    if expr is not None and getattr(expr, "is_Integer", False):
        return _Dim(int(expr))
    # an expression of a symbol (torch.export's derived dim 2*L): tied to the dimension that is that symbol
    tie = None if expr is None or getattr(expr, "is_Symbol", False) else _linear_tie(expr)
    bound = ranges.get(expr)
    if bound is None:  # an expression of symbols with no bounds of its own
        return _Dim(None, symbol=str(expr or ""), tie=tie)
    lower, upper = _finite(bound.lower), _finite(bound.upper)
    return _Dim(None, lower or 0, upper, symbol=str(expr), tie=tie)


def _linear_tie(expr: Any) -> tuple[str, int, int] | None:
    """``(s, a, b)`` for an expression ``a*s + b`` of one symbol with integers ``a >= 1`` and ``b`` (what
    ``torch.export`` derived dims are), else None."""
    free = getattr(expr, "free_symbols", None)
    if not free or len(free) != 1:
        return None
    (symbol,) = free
    try:
        import sympy

        poly = sympy.Poly(expr, symbol)
        if poly.degree() != 1:
            return None
        scale, offset = poly.all_coeffs()
    except Exception:  # noqa: BLE001 -- not a polynomial in it (a floor division, a max): no tie
        return None
    if not (getattr(scale, "is_Integer", False) and getattr(offset, "is_Integer", False)) or int(scale) < 1:
        return None
    return str(symbol), int(scale), int(offset)


def _finite(value: Any) -> int | None:
    """A bound as an int; None for infinity (sympy's ``oo``, torch's ``int_oo``) or anything not an integer."""
    if isinstance(value, int):
        return value
    return int(value) if getattr(value, "is_Integer", False) else None


def _output_firsts(ep: Any) -> dict[str, str]:
    """``{output name: the symbol (or size) of its first dimension}`` for the program's tensor outputs."""
    import torch

    outputs = next((n for n in ep.graph.nodes if n.op == "output"), None)
    if outputs is None:
        return {}
    out = {}
    nodes = outputs.args[0] if outputs.args and isinstance(outputs.args[0], (list, tuple)) else ()
    for i, node in enumerate(nodes):
        val = getattr(node, "meta", {}).get("val")
        if isinstance(val, torch.Tensor):
            first = val.shape[0] if val.dim() else None
            expr = getattr(getattr(first, "node", None), "expr", first)
            out[f"#{i + 1} of {len(nodes)}"] = "" if first is None else str(expr)  # the graph's node names mean nothing
    return out


def _batch_axis(
    shapes: dict[str, tuple[str, list[_Dim]]],
    source: str,
    given: int | None,
    default: int,
    output_firsts: dict[str, str] | None = None,
) -> tuple[bool, int, str]:
    """(batched, max_batch_size, note). The first dimensions are the batch axis when they are one dynamic symbol in
    every input and every output's first dimension is that symbol too."""
    firsts = {name: dims[0] if dims else None for name, (_, dims) in shapes.items()}
    fixed = {name: d for name, d in firsts.items() if d is None or d.size is not None}
    if given == 0:
        return False, 0, "--max-batch-size 0: every input keeps its full shape"
    if fixed:
        name, d = next(iter(fixed.items()))
        export_again = f"export it again with {batch_dims_hint(list(shapes))}"
        if given is not None:
            what = "has no dimensions" if d is None else f"fixes its first dimension at {d.size}"
            raise TritongenError(
                f"--max-batch-size {given}: input '{name}' of the exported program in {source} {what}, "
                "so it has no batch axis",
                f"{export_again}, or pass --max-batch-size 0",
            )
        dynamic = [n for n, f in firsts.items() if f is not None and f.size is None]
        kept = (
            f"; the dynamic first dimension of {', '.join(map(repr, dynamic))} stays a variable one" if dynamic else ""
        )
        size = d.size if d is not None else 0
        return (
            False,
            0,
            f"the first dimension of '{name}' is fixed at {size} in the program{kept}: to batch, {export_again}",
        )
    symbols = {d.symbol for d in firsts.values() if d is not None}
    (symbol,) = symbols if len(symbols) == 1 else ("",)
    differing = {n: f for n, f in (output_firsts or {}).items() if f != symbol}
    if not symbol or differing:
        if not symbol:
            why = f"the inputs' first dimensions are different sizes in the program ({', '.join(sorted(symbols))})"
        else:
            name, first = next(iter(differing.items()))
            why = f"output '{name}' does not follow the inputs' first dimension ({symbol}): its first is " + (
                first or "none"
            )
        if given is not None:
            raise TritongenError(
                f"--max-batch-size {given}: {why}, so they are no batch axis",
                "pass --max-batch-size 0, or export the model again with one Dim('batch') for the first dimension "
                "of every input, which every output keeps",
            )
        return False, 0, f"{why}: the first dimensions stay variable ones"
    lowest = max(d.lower for d in firsts.values() if d is not None)
    if lowest > 2:  # torch reports Dim.DYNAMIC / Dim.AUTO as 2..: its 0/1 specialization, batch 1 still runs
        name = next(n for n, d in firsts.items() if d is not None and d.lower == lowest)
        raise TritongenError(
            f"the exported program in {source} takes batches of at least {lowest}; Triton sends batches from 1",
            f"export it again with {batch_dims_hint(list(shapes), min_size=1)}, or declare the inputs with --input",
        )
    uppers = [d.upper for d in firsts.values() if d is not None and d.upper is not None]
    if given is not None:
        if uppers and given > min(uppers):
            raise TritongenError(
                f"--max-batch-size {given} is above the exported program's largest batch, {min(uppers)}",
                f"pass --max-batch-size {min(uppers)} or less, or export it again with a larger Dim('batch', max=...)",
            )
        return True, given, "the first dimension of every input is dynamic: the batch axis"
    mbs = min([default, *uppers])
    bound = f" (the program's largest batch, {mbs})" if uppers and mbs < default else ""
    return True, mbs, f"the first dimension of every input is dynamic: the batch axis{bound}"


def _bounded_range(
    name: str, axis: int, d: _Dim, default: tuple[int, int, int], max_dim_given: bool = False
) -> DimRange | None:
    """The program's bounds as a range (checked by the gate at its MIN, the TensorRT profile's minimum), where they
    exclude part of the default range; else None. The program's upper bound is MAX, capped by a given ``--max-dim``
    (never below the program's MIN)."""
    lo_default, opt_default, hi_default = default
    lower = max(d.lower, 1)
    upper = None if d.upper is None else min(d.upper, MAX_DIM_SIZE)
    if lower <= lo_default and (upper is None or upper == hi_default or (upper > hi_default and max_dim_given)):
        return None
    hi = hi_default if upper is None else (min(upper, hi_default) if max_dim_given else upper)
    hi = max(hi, lower)
    return DimRange(name, axis, lower, min(max(opt_default, lower), hi), hi, explicit=True)
