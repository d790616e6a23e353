"""Good and malformed inference requests for a served model, serialised once as gRPC ``ModelInferRequest`` bytes.

:func:`payloads_from_samples` takes the model's metadata and a few good batch-1 requests (the build's saved
samples, or any :class:`~tritongen.perf.inputs.RequestSet`) and returns :class:`Payload` objects:

- good ones: 1 to ``max_batch_size`` sample rows stacked (the answer is checked later against the server's own
  answer to the same payload on a quiet server);
- bad ones, one or more per kind that applies to the model (:data:`BAD_KINDS`):

  ``wrong_dtype``      the first input sent with another data type (FP32 -> FP64, BYTES -> FP32, ...)
  ``wrong_shape``      a fixed non-batch dimension one larger
  ``wrong_rank``       an extra trailing axis of 1
  ``over_max_batch``   ``max_batch_size + 1`` rows
  ``empty_batch``      0 rows
  ``truncated``        numeric first input: its raw bytes one element short
  ``garbage_bytes``    BYTES inputs only: well-framed random bytes (never valid UTF-8) in place of each element
  ``bad_string_framing``  BYTES inputs only: the last string's 4-byte length prefix promises one byte more than sent

Triton 2.51 rejects ``bad_string_framing`` only once the request is in a dynamic batch, and then fails the
*whole batch* with that request's error: good requests batched with it get "incomplete string data" too (not
so without dynamic batching). :func:`tritongen.testing.faults.soak_from_server` counts those as failed good requests.

Every bad payload must be answered with an error; none is sent as a half-formed protobuf, so what is tested is
the server's and the model's handling of a well-delivered bad request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import TritongenError

GOOD = "good"
BAD_KINDS = (
    "wrong_dtype",
    "wrong_shape",
    "wrong_rank",
    "over_max_batch",
    "empty_batch",
    "truncated",
    "garbage_bytes",
    "bad_string_framing",
)
_OTHER_DTYPE = {
    "FP32": np.float64,
    "FP64": np.float32,
    "FP16": np.float32,
    "INT64": np.int32,
    "INT32": np.int64,
    "INT8": np.int16,
    "UINT8": np.int16,
    "BOOL": np.int8,
}

Tensor = tuple[str, str, tuple[int, ...], bytes]  # name, wire datatype, shape, raw bytes


@dataclass(frozen=True)
class Payload:
    model: str
    kind: str  # GOOD or one of BAD_KINDS
    data: bytes  # a serialised ModelInferRequest
    rows: int  # batch rows (the first dimension when the model batches)

    @property
    def bad(self) -> bool:
        return self.kind != GOOD


def request_bytes(model: str, tensors: Sequence[Tensor]) -> bytes:
    """A ``ModelInferRequest`` with each input's content in ``raw_input_contents``."""
    from tritonclient.grpc import service_pb2

    message = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, raw in tensors:
        tensor = message.inputs.add()
        tensor.name = name
        tensor.datatype = datatype
        tensor.shape.extend(int(d) for d in shape)
        message.raw_input_contents.append(raw)
    return message.SerializeToString()


def _tensors(request: Mapping[str, np.ndarray]) -> list[Tensor]:
    from ..perf.inputs import wire_from_array

    out = []
    for name, array in request.items():
        datatype, raw = wire_from_array(np.asarray(array))
        out.append((name, datatype, tuple(int(d) for d in np.shape(array)), raw))
    return out


def payloads_from_samples(
    metadata: Mapping[str, Any], samples: Sequence[Mapping[str, np.ndarray]], good_count: int = 32, seed: int = 0
) -> tuple[list[Payload], list[Payload]]:
    """``(good, bad)`` payloads for the model ``metadata`` describes, from its good batch-1 ``samples``."""
    model = metadata["name"]
    max_batch = int(metadata.get("max_batch_size", 0))
    if not samples:
        raise TritongenError(
            f"no sample requests for model '{model}'", "give at least one good request (the build's samples)"
        )
    rng = np.random.default_rng(seed)
    rows_of = (lambda r: int(np.shape(next(iter(r.values())))[0])) if max_batch else (lambda r: 1)

    good = []
    for _ in range(good_count):
        if max_batch:
            take = int(rng.integers(1, max_batch + 1))
            picks = [samples[int(i)] for i in rng.integers(0, len(samples), size=take)]
            request = {n: np.concatenate([np.asarray(p[n]) for p in picks])[:max_batch] for n in picks[0]}
        else:
            request = dict(samples[int(rng.integers(0, len(samples)))])
        good.append(Payload(model, GOOD, request_bytes(model, _tensors(request)), rows_of(request)))

    base = dict(samples[0])
    wanted = {t["name"]: t for t in metadata["inputs"]}
    bad = []
    for kind in BAD_KINDS:
        request = _bad_request(kind, base, wanted, max_batch, rng)
        if request is not None:
            tensors = _tensors(request) if isinstance(request, dict) else request
            bad.append(
                Payload(
                    model,
                    kind,
                    request_bytes(model, tensors),
                    int(tensors[0][2][0]) if max_batch and tensors[0][2] else 1,
                )
            )
    return good, bad


def _bad_request(kind: str, base: dict[str, np.ndarray], wanted: Mapping[str, Any], max_batch: int, rng):
    """The request (arrays, or wire tensors for ``truncated``) for one bad ``kind``, or None where it does not apply."""
    first = next(iter(base))
    array = np.asarray(base[first])
    is_bytes = wanted.get(first, {}).get("datatype") == "BYTES"
    if kind == "wrong_dtype":
        other = np.float32 if is_bytes else _OTHER_DTYPE.get(wanted.get(first, {}).get("datatype"), np.float64)
        return {**base, first: np.ones(array.shape, other) if is_bytes else array.astype(other)}
    if kind == "wrong_shape":
        dims = list(wanted.get(first, {}).get("shape", []))[1 if max_batch else 0 :]
        fixed = [i for i, d in enumerate(dims) if d != -1]
        if not fixed:
            return None
        axis = fixed[-1] + (1 if max_batch else 0)
        pad = [(0, 1 if i == axis else 0) for i in range(array.ndim)]
        return {**base, first: np.pad(array, pad, mode="edge")}
    if kind == "wrong_rank":
        return {**base, first: array[..., None]}
    if kind in ("over_max_batch", "empty_batch"):
        if not max_batch:
            return None
        rows = max_batch + 1 if kind == "over_max_batch" else 0
        return {n: np.repeat(np.asarray(a)[:1], rows, axis=0) for n, a in base.items()}
    if kind == "truncated":
        if is_bytes:
            return None
        tensors = _tensors(base)
        name, datatype, shape, raw = tensors[0]
        return [(name, datatype, shape, raw[: -array.dtype.itemsize])] + tensors[1:]
    if kind == "bad_string_framing":
        tensors = _tensors(base)
        at = next((i for i, t in enumerate(tensors) if t[1] == "BYTES"), None)
        if at is None:
            return None
        name, datatype, shape, raw = tensors[at]
        return tensors[:at] + [(name, datatype, shape, raw[:-1])] + tensors[at + 1 :]
    if kind == "garbage_bytes":
        names = [n for n in base if wanted.get(n, {}).get("datatype") == "BYTES"]
        if not names:
            return None
        garbage = {}
        for n in names:
            shape = np.shape(base[n])
            items = [b"\xff\xfe" + rng.bytes(int(rng.integers(1, 64))) for _ in range(int(np.prod(shape)))]
            garbage[n] = np.array(items, dtype=object).reshape(shape)
        return {**base, **garbage}
    raise ValueError(kind)
