"""Tensor specs: one model input or output (Triton name, Triton data type, dims without the batch dimension), and
the ways to make them from ``--input`` text, a ``--spec`` entry or sample arrays. Below :mod:`tritongen.spec`
(which re-exports them) so that readers of model files can make them too."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .dtypes import triton_dtype, triton_from_numpy
from .errors import TritongenError
from .names import check_name

_TENSOR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]*$")


MAX_TENSOR_DIMS = 31  # numpy arrays hold at most 32 dimensions; the batch dimension is one of them


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: Triton name, Triton data type (``FP32``), dims without the batch dimension."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    # A scalar per batch item (the model's shape is [batch]): Triton's dims are [1] with an empty reshape, so the
    # model reads and writes [batch] while clients see [batch, 1] (the ONNX Runtime backend refuses dims [1] alone).
    scalar: bool = False

    def __post_init__(self) -> None:
        if not _TENSOR_NAME_RE.fullmatch(check_name(self.name, "tensor name")):
            raise TritongenError(
                f"tensor name '{self.name}' is not valid",
                "use letters, digits and underscores, starting with a letter",
            )
        object.__setattr__(self, "dtype", triton_dtype(self.dtype))
        dims = tuple(int(d) for d in self.dims)
        bad = [d for d in dims if d == 0 or d < -1]
        if bad:
            raise TritongenError(
                f"tensor '{self.name}' has a dimension of size {bad[0]} (dims {','.join(map(str, dims))})",
                "every dimension must be a positive size, or -1 for a variable size",
            )
        if len(dims) > MAX_TENSOR_DIMS:  # numpy's limit is 32, and a batch dimension comes first
            raise TritongenError(
                f"tensor '{self.name}' has {len(dims)} dimensions, more than the {MAX_TENSOR_DIMS} a batched array "
                "can hold besides its batch dimension",
                f"give at most {MAX_TENSOR_DIMS} dims",
            )
        if self.scalar and not dims:
            dims = (1,)
        object.__setattr__(self, "dims", dims)
        if self.scalar and dims != (1,):
            raise TritongenError(f"tensor '{self.name}' is a scalar per item but has dims {list(dims)}", "use dims [1]")

    @property
    def shape(self) -> tuple[int, ...]:
        """The dims the model itself reads or writes per item (no batch dimension): ``()`` for a scalar per item,
        which clients send and receive as ``[1]`` (``dims``)."""
        return () if self.scalar else self.dims

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        """Indices (into ``dims``) of the variable dimensions."""
        return tuple(i for i, d in enumerate(self.dims) if d == -1)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}
        if self.scalar:
            out["scalar"] = True
        return out


def tensor_spec_from_arg(arg: str) -> TensorSpec:
    """Parse ``NAME:DTYPE:DIMS`` (dims comma-separated, ``-1`` variable, empty for a scalar per item)."""
    parts = arg.split(":")
    if len(parts) != 3 or not parts[0]:
        raise TritongenError(
            f"--input '{arg}' is not NAME:DTYPE:DIMS",
            "write it like x:FP32:3,224,224 (dims without the batch dimension, -1 for variable)",
        )
    name, dtype, dims_text = parts
    try:
        dims = tuple(int(d) for d in (d.strip() for d in dims_text.split(",")) if d)  # "6 4" is no number
    except ValueError:
        raise TritongenError(
            f"--input '{arg}' has dims '{dims_text}' that are not integers",
            "write dims as comma-separated integers like 3,224,224 (-1 for variable)",
        ) from None
    # empty: a scalar per item (the model reads [batch]; kept as [1] where the model does not batch, BuildSpec)
    return TensorSpec(name=name, dtype=dtype, dims=dims or (1,), scalar=not dims)


def tensor_spec_from_dict(entry: Mapping[str, Any], where: str) -> TensorSpec:
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise TritongenError(
            f"{where} is not a mapping with a 'name'", "write entries like {name: x, dtype: FP32, dims: [3, 224, 224]}"
        )
    if "dims" not in entry and "shape" not in entry:  # [1] by default built a model of the wrong shape silently
        raise TritongenError(
            f"{where} ('{entry['name']}') has no 'dims'",
            "give its dims without the batch dimension, e.g. dims: [3, 224, 224] (dims: [] for one value per item)",
        )
    dims = entry.get("dims", entry.get("shape"))
    if isinstance(dims, str):
        dims = [int(d) for d in dims.split(",") if d.strip()]
    if not isinstance(dims, (list, tuple)):
        raise TritongenError(f"{where} has dims {dims!r}", "write dims as a list like [3, 224, 224]")
    return TensorSpec(
        name=str(entry["name"]),
        dtype=str(entry.get("dtype", entry.get("data_type", "FP32"))),
        dims=tuple(dims) or (1,),
        scalar=not dims or bool(entry.get("scalar", False)),
    )


def tensor_specs_from_samples(samples: Mapping[str, Any], batched: bool) -> tuple[TensorSpec, ...]:
    """Inputs inferred from sample arrays: names from keys, dtype from the array, dims from the shape."""
    specs = []
    for name, array in samples.items():
        shape = tuple(array.shape[1:] if batched else array.shape)
        # a batched [batch] array: a scalar per item, which the model reads as [batch]
        specs.append(
            TensorSpec(
                name=name, dtype=triton_from_numpy(array.dtype), dims=shape or (1,), scalar=batched and not shape
            )
        )
    return tuple(specs)
