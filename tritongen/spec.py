"""The build spec: one frozen, typed description of what to build, with every default resolved here.

The CLI (or a library caller) gathers options into :func:`build_spec_from_options`; everything after that
reads :class:`BuildSpec` only. Output tensors are usually unknown until the model has run once; the build
then makes a new spec with :meth:`BuildSpec.with_outputs`.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .dtypes import triton_dtype, triton_from_numpy
from .errors import TritongenError

TARGETS = ("local", "onnxruntime")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_TENSOR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]*$")

DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3
DEFAULT_OPSET = 18
DEFAULT_QUEUE_DELAY_US = 500
DEFAULT_DYNAMIC_DIM = 16  # size given to a -1 dimension when samples are generated


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: Triton name, Triton data type (``FP32``), dims without the batch dimension."""

    name: str
    dtype: str
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        if not _TENSOR_NAME_RE.match(self.name):
            raise TritongenError(
                f"tensor name '{self.name}' is not valid",
                "use letters, digits and underscores, starting with a letter",
            )
        object.__setattr__(self, "dtype", triton_dtype(self.dtype))
        dims = tuple(int(d) for d in self.dims)
        bad = [d for d in dims if d == 0 or d < -1]
        if bad:
            raise TritongenError(
                f"tensor '{self.name}' has dimension {bad[0]}",
                "every dimension must be a positive size or -1 for a variable size",
            )
        object.__setattr__(self, "dims", dims)

    @property
    def dynamic_axes(self) -> tuple[int, ...]:
        """Indices (into ``dims``) of the variable dimensions."""
        return tuple(i for i, d in enumerate(self.dims) if d == -1)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}


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
        dims = tuple(int(d) for d in dims_text.replace(" ", "").split(",") if d != "")
    except ValueError:
        raise TritongenError(
            f"--input '{arg}' has dims '{dims_text}' that are not integers",
            "write dims as comma-separated integers like 3,224,224 (-1 for variable)",
        ) from None
    if not dims:
        dims = (1,)
    return TensorSpec(name=name, dtype=dtype, dims=dims)


def tensor_spec_from_dict(entry: Mapping[str, Any], where: str) -> TensorSpec:
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise TritongenError(f"{where} is not a mapping with a 'name'", "write entries like {name: x, dtype: FP32, dims: [3, 224, 224]}")
    dims = entry.get("dims", entry.get("shape", [1]))
    if isinstance(dims, str):
        dims = [int(d) for d in dims.split(",") if d.strip()]
    if not isinstance(dims, (list, tuple)):
        raise TritongenError(f"{where} has dims {dims!r}", "write dims as a list like [3, 224, 224]")
    return TensorSpec(name=str(entry["name"]), dtype=str(entry.get("dtype", entry.get("data_type", "FP32"))), dims=tuple(dims))


def tensor_specs_from_samples(samples: Mapping[str, Any], batched: bool) -> tuple[TensorSpec, ...]:
    """Inputs inferred from sample arrays: names from keys, dtype from the array, dims from the shape."""
    specs = []
    for name, array in samples.items():
        shape = tuple(array.shape[1:] if batched else array.shape)
        specs.append(TensorSpec(name=name, dtype=triton_from_numpy(array.dtype), dims=shape or (1,)))
    return tuple(specs)


@dataclass(frozen=True)
class BuildSpec:
    """Everything a build needs, defaults resolved. Paths are absolute."""

    model_path: Path
    name: str
    inputs: tuple[TensorSpec, ...]
    output_names: tuple[str, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()  # filled in once the model has run
    max_batch_size: int = 8
    target: str = "local"
    repo: Path = Path("model_repository").resolve()
    model_factory: str | None = None
    allow_pickle: bool = False
    sample_inputs: Path | None = None
    opset: int = DEFAULT_OPSET
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    force: bool = False
    new_version: bool = False
    instance_count: int = 1
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    warmup: bool = True
    dynamic_dim_size: int = DEFAULT_DYNAMIC_DIM
    extra: Mapping[str, Any] = field(default_factory=dict)

    def with_outputs(self, outputs: Iterable[TensorSpec]) -> "BuildSpec":
        return dataclasses.replace(self, outputs=tuple(outputs))

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple) and value and isinstance(value[0], TensorSpec):
                value = [t.to_dict() for t in value]
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out


def check_model_name(name: str) -> str:
    if not name or not _NAME_RE.match(name) or name in (".", ".."):
        raise TritongenError(
            f"model name '{name}' is not a valid folder name",
            "use letters, digits, '_', '-' and '.', with no path separators or '..'",
        )
    return name
