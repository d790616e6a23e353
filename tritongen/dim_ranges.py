"""Dynamic dimensions as ranges: ``--dim-range INPUT:AXIS:MIN:OPT:MAX`` (or ``dim_ranges:`` in the YAML spec).

One range per variable (``-1``) dimension drives everything that needs a size for it: the samples (the export
runs at OPT), the parity gate (at MIN, OPT and MAX, batch 1 and the maximum batch at OPT), Triton's warm-up
request (OPT) and the TensorRT optimization profile (MIN/OPT/MAX). ``AXIS`` counts the input's dims without the
batch dimension, from 0, as ``--input`` writes them.

A ``-1`` dimension without a range gets the default range :data:`DEFAULT_DIM_MIN` / the spec's
``dynamic_dim_size`` (default :data:`DEFAULT_DIM_OPT`) / ``--max-dim`` (default 128) for samples and the gate:
32 covers the receptive field of common convolutional backbones (5 stride-2 stages) and is a short sentence for
a text model. Its TensorRT profile keeps minimum 1, so short inputs still serve; only a range makes the profile
minimum what the gate checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import TritongenError
from .names import with_suggestion

DEFAULT_DIM_MIN = 32
DEFAULT_DIM_OPT = 64
MAX_DIM_SIZE = 1 << 20
_ARG_FIX = (
    "write it as INPUT:AXIS:MIN:OPT:MAX, e.g. x:1:32:128:512 (AXIS counts dims without the batch dimension, from 0)"
)


@dataclass(frozen=True)
class DimRange:
    """Sizes one variable dimension takes: ``axis`` indexes the input's dims (no batch dimension)."""

    input: str
    axis: int
    min: int
    opt: int
    max: int
    explicit: bool = True  # False: the default range of a -1 dimension nobody gave a range

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def text(self) -> str:
        return f"{self.input}:{self.axis}:{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class TiedDim:
    """A variable dimension the model computes from another (a torch.export program's ``2*L``): its size is
    ``scale * base + offset``, so every size it is checked at follows the base dimension's range."""

    input: str
    axis: int
    base_input: str
    base_axis: int
    scale: int
    offset: int = 0

    def size(self, base: int) -> int:
        return self.scale * base + self.offset

    @property
    def text(self) -> str:
        offset = f" {'+' if self.offset > 0 else '-'} {abs(self.offset)}" if self.offset else ""
        scale = f"{self.scale}*" if self.scale != 1 else ""
        return f"{self.input}[{self.axis}] = {scale}{self.base_input}[{self.base_axis}]{offset}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _checked(name: str, axis: int, sizes: Sequence[int], where: str) -> DimRange:
    lo, opt, hi = sizes
    if axis < 0:
        raise TritongenError(f"{where}: axis {axis} is negative", _ARG_FIX)
    if not 1 <= lo <= opt <= hi <= MAX_DIM_SIZE:
        raise TritongenError(
            f"{where}: sizes {lo}/{opt}/{hi} are not 1 <= MIN <= OPT <= MAX <= {MAX_DIM_SIZE}",
            "give MIN <= OPT <= MAX, e.g. 32:128:512",
        )
    return DimRange(name, axis, lo, opt, hi)


def dim_range_from_arg(arg: str) -> DimRange:
    """Parse ``INPUT:AXIS:MIN:OPT:MAX``."""
    parts = arg.split(":")
    if len(parts) != 5 or not parts[0]:
        raise TritongenError(f"--dim-range '{arg}' is not INPUT:AXIS:MIN:OPT:MAX", _ARG_FIX)
    try:
        numbers = [int(p) for p in parts[1:]]
    except ValueError:
        raise TritongenError(f"--dim-range '{arg}' has a part that is not an integer", _ARG_FIX) from None
    return _checked(parts[0], numbers[0], numbers[1:], f"--dim-range '{arg}'")


def dim_range_from_dict(entry: Mapping[str, Any], where: str) -> DimRange:
    """One ``dim_ranges`` entry of the YAML spec (types already checked by :mod:`tritongen.spec_file`)."""
    return _checked(str(entry["input"]), int(entry["axis"]), [int(entry[k]) for k in ("min", "opt", "max")], where)


def check_ranges(ranges: Iterable[DimRange], inputs: Sequence[Any], from_graph: bool = False) -> tuple[DimRange, ...]:
    """Every range names a declared input and one of its ``-1`` dimensions, at most once (``from_graph``: the
    inputs are an ONNX file's, whose fixed dimensions no --input can make variable)."""
    by_name = {t.name: t for t in inputs}
    seen: set[tuple[str, int]] = set()
    out = []
    for r in ranges:
        tensor = by_name.get(r.input)
        if tensor is None:
            raise TritongenError(
                f"--dim-range {r.text} names input '{r.input}', which is not declared",
                with_suggestion(r.input, by_name, f"use one of the inputs: {', '.join(by_name) or 'none'}"),
            )
        if r.axis >= len(tensor.dims):
            raise TritongenError(
                f"--dim-range {r.text}: input '{r.input}' has {len(tensor.dims)} dims "
                f"{list(tensor.dims)} (without the batch dimension), so there is no axis {r.axis}",
                f"use an axis from 0 to {len(tensor.dims) - 1}",
            )
        if tensor.dims[r.axis] != -1:
            raise TritongenError(
                f"--dim-range {r.text}: dimension {r.axis} of input '{r.input}' is fixed at {tensor.dims[r.axis]}",
                "export the ONNX file again with that dimension dynamic (dynamic_axes / dynamic_shapes), or drop the "
                "--dim-range"
                if from_graph
                else "declare it -1 in --input to give it a range",
            )
        if (r.input, r.axis) in seen:
            raise TritongenError(
                f"--dim-range gives dimension {r.axis} of input '{r.input}' two ranges", "give each dimension one range"
            )
        seen.add((r.input, r.axis))
        out.append(r)
    return tuple(out)


def inputs_with_ranges(inputs: Sequence[Any], ranges: Iterable[DimRange]) -> tuple[Any, ...]:
    """``inputs`` with every dimension that has a range made variable (for inputs inferred from samples)."""
    import dataclasses

    ranged = {(r.input, r.axis) for r in ranges}
    return tuple(
        dataclasses.replace(t, dims=tuple(-1 if (t.name, i) in ranged else d for i, d in enumerate(t.dims)))
        for t in inputs
    )


def default_range(dynamic_dim_size: int, max_dynamic_dim: int) -> tuple[int, int, int]:
    """MIN/OPT/MAX of a ``-1`` dimension nobody gave a range (see the module's docstring)."""
    opt = max(1, min(dynamic_dim_size, max_dynamic_dim))
    return min(DEFAULT_DIM_MIN, opt), opt, max(opt, max_dynamic_dim)


def ranges_from_spec(spec: Any) -> tuple[DimRange, ...]:
    """A range for every ``-1`` dimension of ``spec.inputs``: the given one, else the default range; a dimension
    tied to another (``spec.tied_dims``) takes the sizes of its base's range, computed."""
    given = {(r.input, r.axis): r for r in spec.dim_ranges}
    tied = {(t.input, t.axis): t for t in getattr(spec, "tied_dims", ())}
    default = default_range(int(spec.dynamic_dim_size), int(spec.max_dynamic_dim))
    own = {
        (t.name, axis): given.get((t.name, axis)) or DimRange(t.name, axis, *default, explicit=False)
        for t in spec.inputs
        for axis in t.dynamic_axes
        if (t.name, axis) not in tied
    }
    out = []
    for t in spec.inputs:
        for axis in t.dynamic_axes:
            tie = tied.get((t.name, axis))
            base = own.get((tie.base_input, tie.base_axis)) if tie is not None else None
            if tie is None or base is None:
                out.append(own.get((t.name, axis)) or DimRange(t.name, axis, *default, explicit=False))
                continue
            sizes = (tie.size(base.min), tie.size(base.opt), tie.size(base.max))
            out.append(DimRange(t.name, axis, *sizes, explicit=base.explicit))
    return tuple(out)


def shapes_at(spec: Any, point: str) -> dict[str, tuple[int, ...]]:
    """Each input's shape as the model reads it (no batch dimension; ``()`` for a scalar per item) with every
    ``-1`` at its range's ``point`` (min, opt or max)."""
    sizes = {(r.input, r.axis): getattr(r, point) for r in ranges_from_spec(spec)}
    return {t.name: tuple(sizes.get((t.name, i), d) for i, d in enumerate(t.shape)) for t in spec.inputs}


def range_hint(spec: Any) -> str:
    """What to add to an error about a size: pass --dim-range for the dims that got the default range."""
    implicit = [r for r in ranges_from_spec(spec) if not r.explicit]
    if not implicit:
        return ""
    r = implicit[0]
    return (
        f"; -1 dimensions without --dim-range take the default sizes {r.min}/{r.opt}/{r.max}: pass "
        f"--dim-range {r.input}:{r.axis}:MIN:OPT:MAX with sizes the model accepts"
    )


def batch_dims_hint(names: list[str], min_size: int | None = None) -> str:
    """The ``dynamic_shapes`` that batch every one of the inputs ``names`` with one Dim (torch.export wants an entry
    for every argument: one for ``x`` alone is refused when forward() takes ``x`` and ``t``)."""
    minimum = f", min={min_size}" if min_size is not None else ""
    entries = ", ".join(f"'{n}': {{0: batch}}" for n in names)
    return f"batch = torch.export.Dim('batch'{minimum}); dynamic_shapes={{{entries}}}"
