"""Data type names across Triton, NumPy, ONNX and PyTorch, in one table.

Triton names are used without the ``TYPE_`` prefix everywhere in tritongen (``FP32``, ``INT64``); the
config templates add the prefix.
"""

from __future__ import annotations

import numpy as np

from .errors import TritongenError
from .names import with_suggestion

# Triton name -> NumPy dtype. STRING is Triton's BYTES (object arrays of bytes).
_NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "STRING": np.dtype(object),
}
_FROM_NUMPY = {v: k for k, v in _NUMPY.items()}

# Names people type that mean a Triton type.
_ALIASES = {
    "FLOAT": "FP32",
    "FLOAT32": "FP32",
    "FLOAT16": "FP16",
    "HALF": "FP16",
    "FLOAT64": "FP64",
    "DOUBLE": "FP64",
    "INT": "INT32",
    "LONG": "INT64",
    "BYTES": "STRING",
    "STR": "STRING",
}

TRITON_DTYPES = tuple(_NUMPY)


def triton_dtype(name: str) -> str:
    """Normalise a user-typed dtype name (``fp32``, ``TYPE_FP32``, ``float32``) to Triton's name."""
    key = name.strip().upper()
    if key.startswith("TYPE_"):
        key = key[len("TYPE_") :]
    key = _ALIASES.get(key, key)
    if key not in _NUMPY:
        raise TritongenError(
            f"unknown data type '{name}'",
            with_suggestion(key, [*TRITON_DTYPES, *_ALIASES], f"use one of {', '.join(TRITON_DTYPES)}"),
        )
    return key


def numpy_dtype(triton: str) -> np.dtype:
    return _NUMPY[triton_dtype(triton)]


def triton_from_numpy(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind in ("S", "U", "O"):
        return "STRING"
    if dtype not in _FROM_NUMPY:
        native = dtype.newbyteorder("<") if dtype.byteorder == ">" else None
        if native is not None and native in _FROM_NUMPY:  # the type Triton takes, its bytes in the other order
            raise TritongenError(
                f"NumPy data type {dtype.str} is {native} with its bytes big-endian; Triton takes little-endian",
                f"convert the array: array.astype('{native.str}')",
            )
        raise TritongenError(
            f"NumPy data type {dtype} has no Triton equivalent",
            f"convert the array to one of {', '.join(str(d) for d in _FROM_NUMPY if d.kind != 'O')}, or to bytes "
            "(numpy.bytes_) for text",
        )
    return _FROM_NUMPY[dtype]


def triton_from_torch(dtype) -> str:
    """Triton name of a ``torch.dtype`` (imported lazily by the caller)."""
    name = str(dtype).replace("torch.", "")
    table = {
        "bool": "BOOL",
        "uint8": "UINT8",
        "int8": "INT8",
        "int16": "INT16",
        "int32": "INT32",
        "int64": "INT64",
        "float16": "FP16",
        "float32": "FP32",
        "float64": "FP64",
    }
    if name not in table:
        raise TritongenError(
            f"model output of type torch.{name} has no Triton equivalent",
            "cast the output to float32 or int64 in the model's forward()",
        )
    return table[name]


def numpy_from_value(value: object, what: str) -> np.ndarray:
    """A torch tensor, NumPy array, list or number as a NumPy array (``what`` names it in messages): one clear error
    for what NumPy cannot hold (a bfloat16 tensor, a tensor without data on the meta device, a generator)."""
    from collections.abc import Iterator

    if hasattr(value, "detach") and hasattr(value, "dtype"):  # a torch tensor
        if str(getattr(value, "device", "")) == "meta":
            raise TritongenError(f"{what} is a tensor on the meta device (it holds no values)", "pass a CPU tensor")
        try:
            value = value.detach().cpu().numpy()  # type: ignore[attr-defined]
        except (TypeError, RuntimeError) as exc:
            raise TritongenError(
                f"{what} is a {str(value.dtype).removeprefix('torch.')} tensor, which NumPy cannot hold "  # type: ignore[attr-defined]
                f"({str(exc).splitlines()[0][:120]})",
                "convert it to a type Triton takes, e.g. tensor.float() (FP32) or tensor.half() (FP16)",
            ) from None
    if isinstance(value, Iterator):
        raise TritongenError(f"{what} is an iterator or generator, read only once", "pass a list, tuple or array")
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TritongenError(
            f"{what} is not an array ({str(exc)[:120]})", "pass NumPy arrays, torch tensors or lists"
        ) from None
