"""``tritongen infer NAME --sequence``: stream a file to a stateful model in chunks, as one sequence.

The file is an audio ``.wav`` (PCM, mono; samples scaled to [-1, 1] as float32), an ``.npy`` array, or an ``.npz``
with one array per input; :func:`chunks_from_arrays` cuts each into requests (one per row of a ``[steps, *dims]``
array, else chunks of ``--chunk-size`` along the input's variable axis, the last one zero-padded), and each goes
as one request of the sequence (batch 1), the first flagged start and the last end, all with the correlation ID
``--sequence-id``.
"""

from __future__ import annotations

import io
import math
import wave
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import TritongenError
from .names import one_line

MAX_CHUNKS = 100_000
MAX_REQUEST_BYTES = 512 << 20  # one chunk's tensor: as much as a whole sample file holds (tritongen.npz)


def arrays_from_stream_file(
    path: Path, input_names: list[str], consts: Mapping[str, object] | None = None
) -> dict[str, np.ndarray]:
    """The file's arrays keyed by input name (a .wav or .npy feeds the model's only client input). A ``.wav`` is
    read once, and its frame rate held to the rate the model was built for (``consts``: the build's ``--const``
    values, see :func:`check_wav_rate`) from those same bytes."""
    path = Path(path)
    if not path.is_file():
        raise TritongenError(f"stream file {path} does not exist", "pass a .wav, .npy or .npz file")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        from .npz import arrays_from_npz

        return arrays_from_npz(path)
    if len(input_names) != 1:
        raise TritongenError(
            f"{path.name} holds one array but the model takes {len(input_names)} inputs ({', '.join(input_names)})",
            "pass an .npz with one array per input",
        )
    if suffix == ".wav":
        from .files import FileTooLargeError, read_problem, regular_bytes
        from .npz import MAX_SAMPLE_FILE_BYTES

        try:  # the frames are read whole: bounded like an .npz
            data = regular_bytes(path, MAX_SAMPLE_FILE_BYTES)
        except FileTooLargeError:
            raise TritongenError(
                f"{path.name} is over {MAX_SAMPLE_FILE_BYTES >> 20} MiB", "stream a shorter recording (cut it with sox)"
            ) from None
        except OSError as exc:
            raise TritongenError(f"stream file {path} {read_problem(exc)}", "pass a readable .wav file") from None
        samples, rate = _wav_samples(data, path.name)
        check_wav_rate(path.name, rate, consts or {})
        return {input_names[0]: samples}
    if suffix == ".npy":
        from .npz import arrays_from_npz

        # the bounded reader: a header's claimed shape is checked against the file before any array exists
        arrays = arrays_from_npz(path)
        if len(arrays) != 1:
            raise TritongenError(
                f"{path.name} holds {len(arrays)} arrays (an .npz under an .npy name)", "pass an array saved by np.save"
            )
        return {input_names[0]: next(iter(arrays.values()))}
    raise TritongenError(f"cannot stream {path.name}", "pass a .wav (PCM, mono), .npy or .npz file")


RATE_CONSTS = ("sr", "sample_rate", "sampling_rate")  # --const names that state the rate a model takes audio at


def check_wav_rate(name: str, rate: int, consts: Mapping[str, object]) -> None:
    """A ``.wav`` stream (file ``name``) whose frame ``rate`` is not the rate the model was built for (``--const
    sr=16000``): its answers would be for audio played at the wrong speed (a 44.1 kHz file streamed to silero-vad
    answered)."""
    rates = {
        n: int(v)
        for n, v in consts.items()
        if n in RATE_CONSTS and isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()
    }  # --const sr=16000.0 is a float
    const = next(iter(rates), None)
    if const is not None and rate != rates[const]:
        raise TritongenError(
            f"{name} is {rate} Hz audio, and the model was built for {const}={rates[const]}",
            f"resample it first (sox {name} -r {rates[const]} out.wav)",
        )


def _wav_samples(raw: bytes, name: str) -> tuple[np.ndarray, int]:
    """The samples of the ``.wav`` bytes ``raw`` (file ``name``), scaled to [-1, 1], and its frame rate."""
    try:
        with wave.open(io.BytesIO(raw), "rb") as wav:
            channels, width, frames = wav.getnchannels(), wav.getsampwidth(), wav.getnframes()
            rate = wav.getframerate()
            data = wav.readframes(frames)
    except (wave.Error, EOFError, OSError) as exc:
        raise TritongenError(f"cannot read {name} as a PCM .wav ({exc})", "pass a PCM .wav file") from None
    if channels != 1:
        raise TritongenError(f"{name} has {channels} channels", "pass mono audio (e.g. sox in.wav -c 1 out.wav)")
    if width in (2, 4) and len(data) % width:  # a data chunk cut short, or one whose size is not whole samples
        raise TritongenError(
            f"{name} holds {len(data)} bytes of {8 * width}-bit samples, not a whole number of samples",
            "pass a complete PCM .wav file (write it again with sox or soundfile)",
        )
    if width == 1:
        return ((np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0).astype(np.float32), rate
    if width in (2, 4):
        dtype = np.int16 if width == 2 else np.int32
        return (np.frombuffer(data, dtype).astype(np.float64) / float(2 ** (8 * width - 1))).astype(np.float32), rate
    raise TritongenError(f"{name} has {8 * width}-bit samples", "pass 8, 16 or 32-bit PCM")


def chunks_from_arrays(
    arrays: Mapping[str, np.ndarray],
    chunk_size: int | None,
    dtypes: Mapping[str, np.dtype],
    dims: Mapping[str, Sequence[int]] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Requests of one sequence, a batch axis of 1 added to each. ``dims``: each input's dims as the config
    states them (without the batch axis), which decide how a stream is cut:

    - an array of one more axis than the input, whose other axes fit its dims (``[steps, 4]`` for ``dims: [4]``),
      holds one request per step: step by step (``chunk_size`` 1, the default);
    - else it is cut into chunks of ``chunk_size`` along the input's one variable axis (``[8, 60]`` for ``dims:
      [8, -1]``: 8 x chunk), or along its first axis (``dims: [512]``: 512 samples, the default size), the last
      chunk zero-padded.

    Every chunk is checked against ``dims`` before anything is sent."""
    dims = {k: list(v) for k, v in (dims or {}).items()}
    if chunk_size is not None and chunk_size < 1:
        raise TritongenError(f"--chunk-size {chunk_size} is below 1", "pass the number of samples per request")
    flat = [n for n, a in arrays.items() if np.ndim(a) == 0]
    if flat:
        raise TritongenError(
            f"the stream's '{flat[0]}' is a single value (0-d), not a stream", "save it with one row per step"
        )
    for name, array in arrays.items():  # cast to the input's type below: only where the values stay the values
        want = dtypes.get(name)
        numeric = want is not None and np.dtype(want).kind in "biuf"
        if numeric and array.dtype.kind not in "biuf":
            raise TritongenError(
                f"the stream's '{name}' is {array.dtype} values, and the model takes {np.dtype(want)}",
                f"save '{name}' as numbers of that type (a complex, text or record array is not sent)",
            )
        if numeric and not _keeps_values(array, np.dtype(want)):
            raise TritongenError(
                f"the stream's '{name}' is {array.dtype} values, and as the model's {np.dtype(want)} some would change "
                "(a fraction, NaN, or a value out of its range)",
                f"save '{name}' as {np.dtype(want)} values",
            )
    steps = {n for n, a in arrays.items() if n in dims and _per_step(a, dims[n])}
    if steps and steps != set(arrays):
        raise TritongenError(
            f"the stream gives {sorted(steps)} one step per row but not {sorted(set(arrays) - steps)}",
            "save every input as [steps, *dims] (one request per step), or every one cut by --chunk-size",
        )
    if steps and chunk_size not in (None, 1):
        name = sorted(steps)[0]
        raise TritongenError(
            f"the stream's '{name}' is {list(arrays[name].shape)}: one request per step of "
            f"[{', '.join(map(str, dims[name]))}], so --chunk-size {chunk_size} cannot apply",
            "drop --chunk-size (each row is one request)",
        )
    axes = {n: (0 if n in steps else _cut_axis(a, dims.get(n))) for n, a in arrays.items()}
    size = 1 if steps else (chunk_size if chunk_size is not None else _default_size(arrays, dims))
    lengths = {name: a.shape[axes[name]] if a.ndim else 0 for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise TritongenError(
            f"the stream's arrays differ in length ({lengths})", "give every input the same number of steps"
        )
    length = next(iter(lengths.values()), 0)
    count = -(-length // size)
    if count < 1 or count > MAX_CHUNKS:
        raise TritongenError(
            f"the stream makes {count} chunks of {size}", f"send 1 to {MAX_CHUNKS} chunks (check --chunk-size)"
        )
    for name, array in arrays.items():  # each request's shape and size, before a padded chunk is made
        if name in steps:
            continue
        shape = [*array.shape[: axes[name]], size, *array.shape[axes[name] + 1 :]]
        if name in dims and not _fits(shape, dims[name]):
            raise TritongenError(
                f"a request of '{name}' cut from the stream ({list(array.shape)}) would be {shape}, "
                f"and the model takes [{', '.join(map(str, dims[name]))}]",
                f"save '{name}' as [steps, {', '.join(map(str, dims[name]))}] (one request per step) or with "
                "the model's dims, its variable axis the stream's time",
            )
        request_bytes = math.prod(shape) * np.dtype(dtypes.get(name, array.dtype)).itemsize
        if request_bytes > MAX_REQUEST_BYTES:
            raise TritongenError(
                f"a request of '{name}' cut from the stream would be {shape}: {request_bytes} bytes, over the "
                f"{MAX_REQUEST_BYTES >> 20} MiB tritongen sends in one",
                f"pass a smaller --chunk-size (the stream is {length} long)",
            )
    chunks = []
    for i in range(count):
        chunk = {}
        for name, array in arrays.items():
            axis = axes[name]
            piece = np.take(array, range(i * size, min((i + 1) * size, length)), axis=axis)
            if name in steps and array.ndim == len(dims[name]) + 1:
                piece = piece[0]  # one step: the request is [1, *dims] (a [steps] array for dims [1] is that already)
            elif piece.shape[axis] < size:  # the last chunk, zero-padded to the size the model takes
                pad_shape = list(piece.shape)
                pad_shape[axis] = size - piece.shape[axis]
                piece = np.concatenate([piece, np.zeros(pad_shape, piece.dtype)], axis=axis)
            chunk[name] = np.ascontiguousarray(piece[None].astype(dtypes.get(name, piece.dtype), copy=False))
        chunks.append(chunk)
    return chunks


def _keeps_values(array: np.ndarray, dtype: np.dtype) -> bool:
    """Whether ``array``'s numbers are the same numbers as ``dtype``: to a float type, rounding to its precision is
    what sending a float64 file to an FP32 input means, but a finite value must stay finite (1e300 as FP32 is inf);
    to an integer or boolean type every value exactly, within the type's range (uint64 2**64-1 as INT64 is -1)."""
    if np.can_cast(array.dtype, dtype, "safe") or not array.size:
        return True
    with np.errstate(invalid="ignore", over="ignore"):
        if dtype.kind == "f":
            return not bool(np.any(np.isfinite(array) & ~np.isfinite(array.astype(dtype))))
        if array.dtype.kind == "f" and not bool(np.all(np.isfinite(array))):
            return False
        low, high = (0, 1) if dtype.kind == "b" else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
        if array.dtype.kind == "f":  # whole, and inside the range: high + 1 (2**k) is exact as a float, high may not be
            inside = (array >= low) & (array < float(high + 1))
            return bool(np.all(array == np.trunc(array))) and bool(np.all(inside))
        if array.dtype.kind == "b":
            return True
        have = np.iinfo(array.dtype)  # each bound compared in the array's own type, where it holds it: exact
        below = int(have.min) < low and bool(np.any(array < array.dtype.type(low)))
        above = int(have.max) > high and bool(np.any(array > array.dtype.type(high)))
        return not (below or above)


def _per_step(array: np.ndarray, dims: Sequence[int]) -> bool:
    """Whether ``array`` holds one step per row of an input of ``dims``: ``[steps, *dims]``, or ``[steps]`` for
    ``dims: [1]`` (a value per step, as a scalar per item is sent)."""
    return (array.ndim == len(dims) + 1 and _fits(array.shape[1:], dims)) or (list(dims) == [1] and array.ndim == 1)


def _fits(shape: Sequence[int], dims: Sequence[int]) -> bool:
    return len(shape) == len(dims) and all(d < 0 or d == s for d, s in zip(dims, shape))


def _cut_axis(array: np.ndarray, dims: Sequence[int] | None) -> int:
    """The axis a stream is cut along: the input's one variable axis, else the first."""
    variable = [i for i, d in enumerate(dims or ()) if d < 0]
    return variable[0] if dims is not None and array.ndim == len(dims) and len(variable) == 1 else 0


def _default_size(arrays: Mapping[str, np.ndarray], dims: Mapping[str, Sequence[int]]) -> int:
    """The first input's size when its config fixes it in one dimension (e.g. ``dims: [ 512 ]``)."""
    name = next((n for n in dims if n in arrays), next(iter(arrays)))  # the config's first input
    given = list(dims.get(name, ()))
    if len(given) >= 1 and given[0] > 0 and _cut_axis(arrays[name], given) == 0:
        return int(given[0])
    raise TritongenError(f"input '{name}' has dims {given}, so the chunk size is not fixed", "pass --chunk-size")


def stacked(answers: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-chunk answers as one array per output, chunks along the first axis."""
    if not answers:
        raise TritongenError("nothing was sent: the input holds no rows", "give at least one row (one request)")
    out: dict[str, np.ndarray] = {}
    for name in answers[0]:
        parts = [a[name] for a in answers if name in a]
        shapes = {tuple(p.shape[1:]) if p.ndim else None for p in parts}
        # a variable-size output (or one some answers lack): no one array holds every chunk's
        if len(parts) != len(answers) or len(shapes) != 1 or None in shapes:
            raise TritongenError(
                f"output '{one_line(name)[:80]}' came back in different shapes per request "
                f"({', '.join(sorted(str(list(s)) if s is not None else 'none' for s in shapes))}), which no one "
                "array holds",
                "read each request's answer from the Python API (tritongen.client.infer_sequence_from_chunks)",
            )
        out[name] = np.concatenate(parts, axis=0)
    return out
