"""Request inputs for load tests, from the build's saved samples, an ``.npz`` file or a text file.

A batched model's samples are split into batch-1 requests (each keeps its batch axis of 1), so both engines
send the same real tensors, with the real sizes of every dynamic dimension. Inputs are checked against the
served model's metadata before any load is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..dtypes import triton_from_numpy
from ..errors import TritongenError
from ..files import read_problem, regular_bytes
from ..layout import version_from_api
from ..names import one_line

Request = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class RequestSet:
    """Distinct requests cycled through by the load generator, and where they came from."""

    requests: tuple[Request, ...]
    batched: bool
    source: str
    sequence_length: int = 0  # a stateful model: requests per sequence (tritongen.perf.sequences)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.requests[0])


def wire_from_array(array: np.ndarray) -> tuple[str, bytes]:
    """``(Triton datatype, raw little-endian bytes)`` of an array as sent in a request (BYTES length-prefixed)."""
    from tritonclient.utils import np_to_triton_dtype, serialize_byte_tensor

    if array.dtype == object or array.dtype.kind in ("U", "S"):
        # serialize_byte_tensor gives a 0-d object array holding the bytes: .item(), not .tobytes() (a pointer)
        serialized = serialize_byte_tensor(np.asarray(array, dtype=object))
        return "BYTES", serialized.item() if serialized.size else b""
    return np_to_triton_dtype(array.dtype), np.ascontiguousarray(array).tobytes()


def arrays_as_served(arrays: Mapping[str, np.ndarray], shapes: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray]:
    """``arrays`` in the model's own shapes (the build's samples) as the server takes them: a scalar per item, which
    the model reads as ``[batch]`` through Triton's empty reshape, goes as ``[batch, 1]`` (its served shape in
    ``shapes``: ``[-1, 1]``, the batch dimension first). Other arrays are left as they are."""
    return {
        name: a[:, None] if a.ndim == 1 and list(shapes.get(name, ())) == [-1, 1] else a for name, a in arrays.items()
    }


def served_shapes(metadata: Mapping[str, Any]) -> dict[str, list[int]]:
    """Each input's shape from the server's model metadata (the batch dimension first where the model batches)."""
    return {t["name"]: [int(d) for d in t["shape"]] for t in metadata["inputs"]}


def request_set_from_arrays(
    arrays: Mapping[str, np.ndarray], batched: bool, source: str, limit: int = 64
) -> RequestSet:
    if not arrays:
        raise TritongenError(f"{source} holds no arrays", "pass an .npz with one array per model input")
    if not batched:
        return RequestSet((dict(arrays),), batched, source)
    for name, array in arrays.items():
        if not array.ndim or not array.shape[0]:
            raise TritongenError(
                f"array '{one_line(name)[:80]}' in {source} "
                + ("is a single value (0-d), not a batch" if not array.ndim else "holds no rows (an empty batch)"),
                "give every input a first (batch) dimension of 1 or more rows (a single item: array[None])",
            )
    sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise TritongenError(
            f"the arrays in {source} have different batch sizes {sizes}",
            "give every input the same first (batch) dimension",
        )
    count = min(next(iter(sizes.values())), limit)
    return RequestSet(tuple({name: a[i : i + 1] for name, a in arrays.items()} for i in range(count)), batched, source)


def request_set_from_samples(
    repo: Path, model: str, batched: bool, text_input: str | None = None, served: Sequence[int] = ()
) -> RequestSet:
    """The build's saved samples; for a text-in ensemble (``text_input``: its BYTES input), the sentences its
    end-to-end reference was made from. ``served``: the versions the server has ready; unversioned requests go to
    the newest, so its build's samples are taken when the repository holds them (else the newest build's)."""
    from ..end_to_end import END_TO_END_NAME, read_reference
    from ..layout import SAMPLES_NAME, artifact_dir
    from ..layout import latest_artifacts as saved_artifacts_dir
    from ..npz import arrays_from_npz

    artifacts, _ = saved_artifacts_dir(Path(repo), model, "--input-data")
    if served and artifact_dir(Path(repo) / model, max(served)).is_dir():
        artifacts = artifact_dir(Path(repo) / model, max(served))
    path = artifacts / SAMPLES_NAME
    if not path.is_file() and text_input is not None and (artifacts / END_TO_END_NAME).is_file():
        texts, _ = read_reference(artifacts / END_TO_END_NAME)
        return _request_set_from_lines(texts, text_input, batched, str(artifacts / END_TO_END_NAME))
    if not path.is_file():
        raise TritongenError(
            f"model '{model}' has no saved samples in {artifacts}",
            "pass --input-data with an .npz of inputs, or --text-file with one request text per line",
        )
    return request_set_from_arrays(arrays_from_npz(path), batched, str(path))


MAX_TEXT_FILE_BYTES = 16 << 20  # --text-file: the first 256 lines are sent; a file of requests is far smaller
TEXT_FILE_FIX = "pass --text-file with one request text per line (up to 16 MiB)"


def request_set_from_text(path: Path, input_name: str, batched: bool) -> RequestSet:
    """One request per non-empty line of ``path``, sent as a BYTES tensor named ``input_name``."""
    path = Path(path)
    try:
        raw = regular_bytes(path, MAX_TEXT_FILE_BYTES)
    except OSError as exc:
        raise TritongenError(f"text file {path} {read_problem(exc)}", TEXT_FILE_FIX) from None
    lines = [line.strip() for line in raw.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if not lines:
        raise TritongenError(f"text file {path} has no non-empty lines", "write one request text per line")
    return _request_set_from_lines(lines, input_name, batched, str(path))


def _request_set_from_lines(lines: Sequence[str], input_name: str, batched: bool, source: str) -> RequestSet:
    """One request per text (the first 256), sent as a BYTES tensor named ``input_name``."""
    shape = (1, 1) if batched else (1,)
    return RequestSet(
        tuple({input_name: np.array([line.encode()], dtype=object).reshape(shape)} for line in lines[:256]),
        batched,
        source,
    )


def request_set_for_model(
    metadata: Mapping[str, Any], repo: Path | None, input_data: Path | None = None, text_file: Path | None = None
) -> RequestSet:
    """Pick the source (text file, ``--input-data``, else the saved samples) and check it against the model."""
    from ..npz import arrays_from_npz

    batched = int(metadata.get("max_batch_size", 0)) > 0
    model = metadata["name"]
    if text_file is not None:
        text_inputs = [t for t in metadata["inputs"] if t["datatype"] == "BYTES"]
        if len(text_inputs) != 1:
            raise TritongenError(
                f"model '{model}' has {len(text_inputs)} BYTES inputs, and --text-file needs exactly one",
                "use --input-data with an .npz for this model",
            )
        requests = request_set_from_text(text_file, text_inputs[0]["name"], batched)
    elif input_data is not None:
        requests = request_set_from_arrays(arrays_from_npz(Path(input_data)), batched, str(input_data))
    else:
        if repo is None:
            raise TritongenError(
                f"no inputs for model '{model}'", "pass --repo (the build's samples), --input-data or --text-file"
            )
        texts = [t["name"] for t in metadata["inputs"] if t["datatype"] == "BYTES"]
        # a version the server names that is no int64 number is skipped ("²" passes isdigit; int() refused it)
        served = [n for v in metadata.get("versions", ()) if (n := version_from_api(v)) is not None]
        requests = request_set_from_samples(Path(repo), model, batched, texts[0] if len(texts) == 1 else None, served)
    shapes = served_shapes(metadata)
    requests = replace(requests, requests=tuple(arrays_as_served(r, shapes) for r in requests.requests))
    check_requests_against_metadata(requests, metadata)
    return requests


def check_requests_against_metadata(requests: RequestSet, metadata: Mapping[str, Any]) -> None:
    for request in requests.requests:
        check_arrays_against_metadata(request, metadata, requests.source)


def check_arrays_against_metadata(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any], source: str) -> None:
    """One request's arrays against the served model's metadata (names, datatypes, shapes with -1 as any size),
    before the server's own refusal, which names neither the file nor the input the model wants."""
    model = metadata["name"]
    wanted = {t["name"]: t for t in metadata["inputs"]}
    optional = {t["name"] for t in metadata["inputs"] if t.get("optional")}
    missing = sorted(set(wanted) - set(arrays) - optional)
    extra = sorted(set(arrays) - set(wanted))
    if missing or extra:
        raise TritongenError(
            f"the inputs from {source} do not match model '{model}'"
            + (f": missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(extra)}" if extra else ""),
            f"give one array per model input, named {', '.join(wanted)}",
        )
    rows = {name: a.shape[0] for name, a in arrays.items() if a.ndim}
    empty = sorted(name for name, count in rows.items() if count == 0)
    if int(metadata.get("max_batch_size") or 0) and empty:  # nothing to send, and nothing would come back
        raise TritongenError(
            f"input '{one_line(empty[0])[:80]}' from {source} holds no rows (an empty batch)",
            "give every input 1 or more rows (one per item of the batch)",
        )
    if int(metadata.get("max_batch_size") or 0) and len(set(rows.values())) > 1:
        raise TritongenError(
            f"the inputs from {source} hold different batch sizes ({', '.join(f'{n}: {r}' for n, r in rows.items())})",
            "give every input the same number of rows (one per item of the batch)",
        )
    for name, array in arrays.items():
        want = wanted[name]
        got_type = triton_from_numpy(array.dtype)
        got_type = "BYTES" if got_type == "STRING" else got_type
        if got_type != want["datatype"]:
            raise TritongenError(
                f"input '{name}' from {source} is {got_type}, model '{model}' wants {want['datatype']}",
                f"save the array as {want['datatype']} (numpy dtype)",
            )
        if got_type == "BYTES" and not _sendable_text(array):
            raise TritongenError(
                f"input '{name}' from {source} holds text UTF-8 cannot encode (a lone surrogate)",
                "save the text as UTF-8 bytes (numpy.bytes_: array.astype('S'))",
            )
        if not _shape_fits(array.shape, want["shape"]):
            fix = "-1 is any size; a batched model's shape starts with the batch dimension (a single item: array[None])"
            if len(array.shape) == len(want["shape"]):  # the dims are there: name the ones that differ
                off = [
                    f"dimension {i} is {got}, the model takes {int(w)}"
                    for i, (got, w) in enumerate(zip(array.shape, want["shape"]))
                    if int(w) != -1 and got != int(w)
                ]
                fix = f"{'; '.join(off)}: save the array with the model's sizes (-1 is any size)"
            raise TritongenError(
                f"input '{name}' from {source} has shape {list(array.shape)}, model '{model}' wants {want['shape']}",
                fix,
            )
        limit = int(metadata.get("max_batch_size") or 0)
        if limit and array.ndim and array.shape[0] > limit:
            raise TritongenError(
                f"input '{name}' from {source} holds a batch of {array.shape[0]}, more than model '{model}' takes "
                f"in one request (max_batch_size {limit})",
                f"send at most {limit} rows per request (split the array: array[:{limit}], ...)",
            )


def _sendable_text(array: np.ndarray) -> bool:
    """Whether every value of a BYTES input goes into a request: no text UTF-8 cannot encode."""
    if array.dtype.kind == "S":
        return True
    for value in array.reshape(-1).tolist():
        try:
            (value if isinstance(value, str) else "").encode("utf-8")  # anything else goes as its bytes or str()
        except UnicodeEncodeError:
            return False
    return True


def _shape_fits(shape: Sequence[int], wanted: Sequence[int]) -> bool:
    return len(shape) == len(wanted) and all(w == -1 or int(s) == int(w) for s, w in zip(shape, wanted))
