"""Sample inputs: read from the user's ``.npz`` or generated from the spec, at the batch sizes a build needs.

Samples feed the export (example inputs), the parity gate (batch 1 and the maximum batch), the saved
reference data that ``tritongen infer --check`` compares against, and Triton's model warm-up.

Every ``-1`` dimension takes its size from its range (:mod:`tritongen.dim_ranges`): the export, batch 1, the
maximum batch and the warm-up at OPT, and two more batch-1 cases with every ranged dimension at MIN and at MAX.
A sample file keeps its own shapes; only ranges given with ``--dim-range`` add MIN and MAX cases to it (random
data, since the file holds one size).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .dim_ranges import ranges_from_spec, shapes_at
from .dtypes import numpy_dtype
from .errors import TritongenError
from .npz import Arrays, arrays_from_npz
from .spec import BuildSpec, TensorSpec

MAX_BATCH_BYTES = 256 * 2**20  # one batch of samples (all inputs) that a build makes or repeats rows into
_SMALLER_FIX = "save fewer or smaller samples (a few batches are enough)"


@dataclass(frozen=True)
class SampleSet:
    """Inputs at the batch sizes the build uses; each maps input name -> array (batch axis first if batched)."""

    export: Arrays  # example inputs for the exporter (batch 2, so the batch axis is not specialised)
    parity: tuple[tuple[str, Arrays], ...]  # (label, inputs) pairs checked against PyTorch
    warmup: Arrays  # batch-1 inputs (or the full unbatched sample)
    from_file: bool


def _random_array(
    tensor: TensorSpec, batch: int | None, shape: tuple[int, ...], rng: np.random.Generator
) -> np.ndarray:
    if batch is not None:
        shape = (batch,) + shape
    dtype = numpy_dtype(tensor.dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        # Small non-negative integers are valid ids, masks and indices for any embedding or lookup.
        return rng.integers(0, 2, shape).astype(dtype)
    raise TritongenError(
        f"cannot generate samples for input '{tensor.name}' of type {tensor.dtype}",
        "pass --sample-inputs with real data for it",
    )


def _random_arrays(
    spec: BuildSpec, batch: int | None, shapes: Mapping[str, tuple[int, ...]], rng: np.random.Generator
) -> Arrays:
    return {t.name: _random_array(t, batch, shapes[t.name], rng) for t in spec.inputs}


def _row_bytes(spec: BuildSpec, shapes: Mapping[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shapes[t.name]) * numpy_dtype(t.dtype).itemsize for t in spec.inputs)


def _range_cases(spec: BuildSpec, rng: np.random.Generator, only_explicit: bool) -> list[tuple[str, Arrays]]:
    """Batch-1 cases with every ranged dimension at its MIN, then at its MAX (where they differ from OPT)."""
    ranges = [r for r in ranges_from_spec(spec) if r.explicit or not only_explicit]
    if not ranges:
        return []
    opt = shapes_at(spec, "opt")
    cases = []
    batch = 1 if spec.batched else None
    for point in ("min", "max"):
        shapes = dict(opt)
        for r in ranges:
            dims = list(shapes[r.input])
            dims[r.axis] = getattr(r, point)
            shapes[r.input] = tuple(dims)
        if shapes != opt:
            if _row_bytes(spec, shapes) > MAX_BATCH_BYTES:
                raise TritongenError(
                    f"one sample at the {point} dims takes {_row_bytes(spec, shapes)} bytes, more "
                    f"than the {MAX_BATCH_BYTES} a build uses",
                    "lower the MAX of --dim-range (or --max-dim)",
                )
            label = f"{point} dims" if batch is None else f"batch 1, {point} dims"
            cases.append((label, _random_arrays(spec, batch, shapes, rng)))
    return cases


def check_arrays_match_spec(
    arrays: Mapping[str, np.ndarray], inputs: tuple[TensorSpec, ...], batched: bool, what: str
) -> None:
    """Names, dtypes and shapes of user arrays against the declared inputs, each mismatch a clear error."""
    names = [t.name for t in inputs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise TritongenError(
            f"{what} has no array for input '{missing[0]}' (it has {', '.join(sorted(arrays)) or 'none'})",
            f"save one array per input named {', '.join(names)}",
        )
    for t in inputs:
        a = arrays[t.name]
        if a.dtype != numpy_dtype(t.dtype):
            raise TritongenError(
                f"{what}: input '{t.name}' is {a.dtype} but the spec says {t.dtype} ({numpy_dtype(t.dtype)})",
                f"save it as {numpy_dtype(t.dtype)} or declare the input as the array's type",
            )
        if batched and a.ndim == 0:
            raise TritongenError(
                f"{what}: input '{t.name}' is a single value (a 0-d array), and the model batches: its samples start "
                "with the batch dimension",
                f"save it as a batch, e.g. numpy.array([value]) for a scalar per item ({t.name} of shape [batch])",
            )
        shape = a.shape[1:] if batched else a.shape
        ok = len(shape) == len(t.shape) and all(d == -1 or d == s for d, s in zip(t.shape, shape))
        if not ok:
            batch_note = " after the batch dimension" if batched else ""
            wanted = "a scalar per item (shape [batch])" if t.scalar else f"dims {list(t.dims)}{batch_note}"
            raise TritongenError(
                f"{what}: input '{t.name}' has shape {list(a.shape)} but the spec says {wanted}",
                "fix the sample shapes or the --input dims (dims exclude the batch dimension; -1 is variable)",
            )


def _check_batch_bytes(spec: BuildSpec, row_bytes: int) -> None:
    """Refuse a spec whose largest batch of samples (``row_bytes`` per row, all inputs) is above
    :data:`MAX_BATCH_BYTES`."""
    rows = max(spec.max_batch_size, 1)
    if row_bytes * rows > MAX_BATCH_BYTES:
        raise TritongenError(
            f"a batch of {rows} samples of the declared inputs takes {row_bytes * rows} bytes, "
            f"more than the {MAX_BATCH_BYTES} a build uses",
            "lower --max-batch-size, the input dims or the OPT of --dim-range",
        )


def _take_batch(arrays: Arrays, batch: int) -> Arrays:
    """The first ``batch`` rows, repeating rows when the file holds fewer."""
    out = {}
    for name, a in arrays.items():
        reps = -(-batch // a.shape[0])
        out[name] = np.concatenate([a] * reps, axis=0)[:batch] if reps > 1 else a[:batch]
    return out


def _with_zero_states(spec: BuildSpec, arrays: Arrays) -> Arrays:
    """The sample file's arrays, with a stream's start (zeros) for each state input tritongen made from the
    module's attributes (``--state-from-attributes``): no sample file can hold those."""
    if not spec.state_from_attributes or not arrays:
        return arrays
    first = next(iter(arrays.values()))
    rows = (first.shape[0] if first.ndim else 1) if spec.batched else None
    made = {p.input for p in spec.states}
    out = dict(arrays)
    for t in spec.inputs:
        if t.name in made and t.name not in out and -1 not in t.shape:
            out[t.name] = np.zeros(((rows,) if rows is not None else ()) + t.shape, numpy_dtype(t.dtype))
    return out


def _batch_cases(one: Arrays, ranged: Sequence[tuple[str, Arrays]], full: Arrays, max_batch_size: int) -> tuple:
    """The parity cases of a batching model: batch 1, the ranged ones, the largest batch; one "batch 1" where the
    largest is 1 (the references are keyed by the label: two cases of one label compared one's outputs with the
    other's reference)."""
    largest = () if max_batch_size == 1 else ((f"batch {max_batch_size}", full),)
    return (("batch 1", one), *ranged, *largest)


def sample_set_from_spec(spec: BuildSpec, seed: int = 0) -> SampleSet:
    """Samples from ``spec.sample_inputs`` when given, otherwise random arrays shaped by the spec."""
    if spec.sample_inputs is not None:
        arrays = _with_zero_states(spec, arrays_from_npz(spec.sample_inputs))
        check_arrays_match_spec(arrays, spec.inputs, spec.batched, f"sample file {spec.sample_inputs.name}")
        arrays = {t.name: arrays[t.name] for t in spec.inputs}
        if not spec.batched:
            ranged = tuple(_range_cases(spec, np.random.default_rng(seed), only_explicit=True))
            return SampleSet(export=arrays, parity=(*ranged, ("sample", arrays)), warmup=arrays, from_file=True)
        if any(a.shape[0] == 0 for a in arrays.values()):
            raise TritongenError("sample file has an empty batch", "save at least one sample per input")
        if len({a.shape[0] for a in arrays.values()}) != 1:
            raise TritongenError("sample arrays have different batch sizes", "give every input the same number of rows")
        rows = next(iter(arrays.values())).shape[0]
        _check_batch_bytes(spec, sum(a.nbytes // rows for a in arrays.values()))
        if rows > spec.max_batch_size:
            raise TritongenError(
                f"sample file {spec.sample_inputs.name} holds a batch of "
                f"{rows} but --max-batch-size is {spec.max_batch_size}",
                f"pass --max-batch-size {rows} (or more), or save at "
                f"most {spec.max_batch_size} rows in the sample file",
            )
        one = _take_batch(arrays, 1)
        full = _take_batch(arrays, spec.max_batch_size)
        export = _take_batch(arrays, min(2, spec.max_batch_size))
        ranged = tuple(_range_cases(spec, np.random.default_rng(seed), only_explicit=True))
        return SampleSet(
            export=export,
            parity=_batch_cases(one, ranged, full, spec.max_batch_size),
            warmup=one,
            from_file=True,
        )

    rng = np.random.default_rng(seed)
    opt = shapes_at(spec, "opt")  # every -1 dimension at its range's OPT (tritongen.dim_ranges)
    _check_batch_bytes(spec, _row_bytes(spec, opt))
    if not spec.batched:
        arrays = _random_arrays(spec, None, opt, rng)
        cases = _range_cases(spec, rng, only_explicit=False)
        return SampleSet(export=arrays, parity=(*cases, ("sample", arrays)), warmup=arrays, from_file=False)
    export = _random_arrays(spec, min(2, spec.max_batch_size), opt, rng)
    one = _random_arrays(spec, 1, opt, rng)
    cases = _range_cases(spec, rng, only_explicit=False)
    full = _random_arrays(spec, spec.max_batch_size, opt, rng)
    return SampleSet(
        export=export,
        parity=_batch_cases(one, cases, full, spec.max_batch_size),
        warmup=one,
        from_file=False,
    )


def with_index_bounds(samples: SampleSet, bounds: Mapping[str, int], seed: int = 1) -> SampleSet:
    """``samples`` whose generated integer inputs named in ``bounds`` (an input -> the rows of the tables it indexes,
    :func:`tritongen.index_inputs.index_bounds_from_onnx`) hold ids drawn from 0 to that bound, in the parity cases
    and the warm-up; the export's stay as they were (the graph was exported from them). Samples from a file are the
    user's: unchanged."""
    if samples.from_file or not bounds:
        return samples
    rng = np.random.default_rng(seed)

    def redrawn(arrays: Arrays) -> Arrays:
        out = dict(arrays)
        for name, bound in bounds.items():
            array = arrays.get(name)
            if array is None or array.dtype.kind not in "iu":
                continue
            high = index_draw_bound(bound, array.dtype)
            out[name] = rng.integers(0, high, array.shape).astype(array.dtype)
        return out

    parity = tuple((label, redrawn(arrays)) for label, arrays in samples.parity)
    same = [i for i, (_, arrays) in enumerate(samples.parity) if arrays is samples.warmup]
    warmup = parity[same[0]][1] if same else redrawn(samples.warmup)  # the warm-up stays one of the cases
    return SampleSet(export=samples.export, parity=parity, warmup=warmup, from_file=False)


def index_draw_bound(bound: int, dtype: np.dtype) -> int:
    """The exclusive top of the ids drawn for an input of ``dtype`` indexing a table of ``bound`` rows."""
    return min(int(bound), int(np.iinfo(dtype).max) + 1)
