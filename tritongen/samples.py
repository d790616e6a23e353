"""Sample inputs: read from the user's ``.npz`` or generated from the spec, at the batch sizes a build needs.

Samples feed the export (example inputs), the parity gate (batch 1 and the maximum batch), the saved
reference data that ``tritongen infer --check`` compares against, and Triton's model warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .dtypes import numpy_dtype
from .errors import TritongenError
from .spec import BuildSpec, TensorSpec

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class SampleSet:
    """Inputs at the batch sizes the build uses; each maps input name -> array (batch axis first if batched)."""

    export: Arrays  # example inputs for the exporter (batch 2, so the batch axis is not specialised)
    parity: tuple[tuple[str, Arrays], ...]  # (label, inputs) pairs checked against PyTorch
    warmup: Arrays  # batch-1 inputs (or the full unbatched sample)
    from_file: bool


def arrays_from_npz(path: Path) -> Arrays:
    """Read an ``.npz`` (or ``.npy`` for a single input) safely: no pickled objects."""
    path = Path(path)
    if not path.is_file():
        raise TritongenError(f"sample file {path} does not exist", "pass an .npz with one array per model input")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if not (magic.startswith(b"PK\x03\x04") or magic == b"\x93NUMPY"):
        raise TritongenError(f"cannot read sample file {path}: it is not an .npz or .npy file", "save the samples with numpy.savez(path, name=array, ...)")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):  # a single .npy array
            return {"input": data}
        with data:
            return {k: np.asarray(data[k]) for k in data.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise TritongenError(f"sample file {path} holds pickled objects", "save plain numeric arrays with numpy.savez") from None
        raise TritongenError(f"cannot read sample file {path} ({exc})", "pass an .npz written by numpy.savez") from None
    except (OSError, EOFError) as exc:
        raise TritongenError(f"cannot read sample file {path} ({exc})", "pass an .npz written by numpy.savez") from None


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
        if rows > spec.max_batch_size:
            raise TritongenError(
                f"sample file {spec.sample_inputs.name} holds a batch of {rows} but --max-batch-size is {spec.max_batch_size}",
                f"pass --max-batch-size {rows} (or more), or save at most {spec.max_batch_size} rows in the sample file")
        one = _take_batch(arrays, 1)
        full = _take_batch(arrays, spec.max_batch_size)
        export = _take_batch(arrays, min(2, spec.max_batch_size))
        return SampleSet(export=export, parity=(("batch 1", one), (f"batch {spec.max_batch_size}", full)), warmup=one, from_file=True)

    rng = np.random.default_rng(seed)
    dyn = spec.dynamic_dim_size
    if not spec.batched:
        arrays = {t.name: _random_array(t, None, dyn, rng) for t in spec.inputs}
        return SampleSet(export=arrays, parity=(("sample", arrays),), warmup=arrays, from_file=False)
    export = {t.name: _random_array(t, min(2, spec.max_batch_size), dyn, rng) for t in spec.inputs}
    one = {t.name: _random_array(t, 1, dyn, rng) for t in spec.inputs}
    # A second size for variable dimensions proves they really are variable in the exported graph.
    dyn2 = max(2, dyn // 2 + 1)
    full = {t.name: _random_array(t, spec.max_batch_size, dyn2, rng) for t in spec.inputs}
    return SampleSet(export=export, parity=(("batch 1", one), (f"batch {spec.max_batch_size}", full)), warmup=one, from_file=False)
