"""Sample inputs: read from the user's ``.npz`` or generated from the spec, at the batch sizes a build needs.

Samples feed the export (example inputs), the parity gate (batch 1 and the maximum batch), the saved
reference data that ``tritongen infer --check`` compares against, and Triton's model warm-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

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


def _concrete_shape(tensor: TensorSpec, dyn: int) -> tuple[int, ...]:
    return tuple(dyn if d == -1 else d for d in tensor.dims)


def _random_array(tensor: TensorSpec, batch: int | None, dyn: int, rng: np.random.Generator) -> np.ndarray:
    shape = _concrete_shape(tensor, dyn)
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


def check_arrays_match_spec(arrays: Mapping[str, np.ndarray], inputs: tuple[TensorSpec, ...], batched: bool, what: str) -> None:
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
        shape = a.shape[1:] if batched else a.shape
        if batched and a.ndim == 0:
            shape = ()
        ok = len(shape) == len(t.dims) and all(d == -1 or d == s for d, s in zip(t.dims, shape))
        if not ok:
            batch_note = " after the batch dimension" if batched else ""
            raise TritongenError(
                f"{what}: input '{t.name}' has shape {list(a.shape)} but the spec says dims {list(t.dims)}{batch_note}",
                "fix the sample shapes or the --input dims (dims exclude the batch dimension; -1 is variable)",
            )


def _check_batch_bytes(spec: BuildSpec, row_bytes: int) -> None:
    """Refuse a spec whose largest batch of samples (``row_bytes`` per row, all inputs) is above
    :data:`MAX_BATCH_BYTES`."""
    rows = max(spec.max_batch_size, 1)
    if row_bytes * rows > MAX_BATCH_BYTES:
        raise TritongenError(f"a batch of {rows} samples of the declared inputs takes {row_bytes * rows} bytes, "
                             f"more than the {MAX_BATCH_BYTES} a build uses",
                             "lower --max-batch-size, the input dims or the spec's dynamic_dim_size")


def _take_batch(arrays: Arrays, batch: int) -> Arrays:
    """The first ``batch`` rows, repeating rows when the file holds fewer."""
    out = {}
    for name, a in arrays.items():
        reps = -(-batch // a.shape[0])
        out[name] = np.concatenate([a] * reps, axis=0)[:batch] if reps > 1 else a[:batch]
    return out


def sample_set_from_spec(spec: BuildSpec, seed: int = 0) -> SampleSet:
    """Samples from ``spec.sample_inputs`` when given, otherwise random arrays shaped by the spec."""
    if spec.sample_inputs is not None:
        arrays = arrays_from_npz(spec.sample_inputs)
        check_arrays_match_spec(arrays, spec.inputs, spec.batched, f"sample file {spec.sample_inputs.name}")
        arrays = {t.name: arrays[t.name] for t in spec.inputs}
        if not spec.batched:
            return SampleSet(export=arrays, parity=(("sample", arrays),), warmup=arrays, from_file=True)
        if any(a.shape[0] == 0 for a in arrays.values()):
            raise TritongenError("sample file has an empty batch", "save at least one sample per input")
        if len({a.shape[0] for a in arrays.values()}) != 1:
            raise TritongenError("sample arrays have different batch sizes", "give every input the same number of rows")
        rows = next(iter(arrays.values())).shape[0]
        _check_batch_bytes(spec, sum(a.nbytes // rows for a in arrays.values()))
        if rows > spec.max_batch_size:
            raise TritongenError(
                f"sample file {spec.sample_inputs.name} holds a batch of " f"{rows} but --max-batch-size is {spec.max_batch_size}",
                f"pass --max-batch-size {rows} (or more), or save at " f"most {spec.max_batch_size} rows in the sample file")
        one = _take_batch(arrays, 1)
        full = _take_batch(arrays, spec.max_batch_size)
        export = _take_batch(arrays, min(2, spec.max_batch_size))
        return SampleSet(export=export, parity=(("batch 1", one), (f"batch {spec.max_batch_size}", full)), warmup=one, from_file=True)

    rng = np.random.default_rng(seed)
    dyn = spec.dynamic_dim_size
    # A second size for variable dimensions proves they really are variable in the exported graph.
    dyn2 = max(2, dyn // 2 + 1)
    row_bytes = sum(math.prod(_concrete_shape(t, max(dyn, dyn2))) * numpy_dtype(t.dtype).itemsize for t in spec.inputs)
    _check_batch_bytes(spec, row_bytes)
    if not spec.batched:
        arrays = {t.name: _random_array(t, None, dyn, rng) for t in spec.inputs}
        return SampleSet(export=arrays, parity=(("sample", arrays),), warmup=arrays, from_file=False)
    export = {t.name: _random_array(t, min(2, spec.max_batch_size), dyn, rng) for t in spec.inputs}
    one = {t.name: _random_array(t, 1, dyn, rng) for t in spec.inputs}
    full = {t.name: _random_array(t, spec.max_batch_size, dyn2, rng) for t in spec.inputs}
    return SampleSet(export=export, parity=(("batch 1", one), (f"batch {spec.max_batch_size}", full)), warmup=one, from_file=False)
