"""``tritongen infer NAME --sequence``: stream a file to a stateful model in chunks, as one sequence.

The file is an audio ``.wav`` (PCM, mono; samples scaled to [-1, 1] as float32), an ``.npy`` array, or an ``.npz``
with one array per input; every array is cut along its first axis into chunks of ``--chunk-size`` (the last one
zero-padded), and each chunk goes as one request of the sequence (batch 1), the first flagged start and the last
end, all with the correlation ID ``--sequence-id``.
"""

from __future__ import annotations

import wave
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import TritongenError

MAX_CHUNKS = 100_000


def arrays_from_stream_file(path: Path, input_names: list[str]) -> dict[str, np.ndarray]:
    """The file's arrays keyed by input name (a .wav or .npy feeds the model's only client input)."""
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
        from .npz import MAX_SAMPLE_FILE_BYTES

        if path.stat().st_size > MAX_SAMPLE_FILE_BYTES:  # the frames are read whole: bounded like an .npz
            raise TritongenError(
                f"{path.name} is over {MAX_SAMPLE_FILE_BYTES >> 20} MiB", "stream a shorter recording (cut it with sox)"
            )
        return {input_names[0]: _wav_samples(path)}
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


def _wav_samples(path: Path) -> np.ndarray:
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, frames = wav.getnchannels(), wav.getsampwidth(), wav.getnframes()
            data = wav.readframes(frames)
    except (wave.Error, EOFError, OSError) as exc:
        raise TritongenError(f"cannot read {path.name} as a PCM .wav ({exc})", "pass a PCM .wav file") from None
    if channels != 1:
        raise TritongenError(f"{path.name} has {channels} channels", "pass mono audio (e.g. sox in.wav -c 1 out.wav)")
    if width in (2, 4) and len(data) % width:  # a data chunk cut short, or one whose size is not whole samples
        raise TritongenError(
            f"{path.name} holds {len(data)} bytes of {8 * width}-bit samples, not a whole number of samples",
            "pass a complete PCM .wav file (write it again with sox or soundfile)",
        )
    if width == 1:
        return ((np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if width in (2, 4):
        dtype = np.int16 if width == 2 else np.int32
        return (np.frombuffer(data, dtype).astype(np.float64) / float(2 ** (8 * width - 1))).astype(np.float32)
    raise TritongenError(f"{path.name} has {8 * width}-bit samples", "pass 8, 16 or 32-bit PCM")


def chunks_from_arrays(
    arrays: Mapping[str, np.ndarray], chunk_size: int, dtypes: Mapping[str, np.dtype]
) -> list[dict[str, np.ndarray]]:
    """Requests of one sequence: each array cut along its first axis, a batch axis of 1 added."""
    if chunk_size < 1:
        raise TritongenError(f"--chunk-size {chunk_size} is below 1", "pass the number of samples per request")
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise TritongenError(
            f"the stream's arrays differ in length ({lengths})", "give every input the same number of steps"
        )
    length = next(iter(lengths.values()), 0)
    count = -(-length // chunk_size)
    if count < 1 or count > MAX_CHUNKS:
        raise TritongenError(
            f"the stream makes {count} chunks of {chunk_size}", f"send 1 to {MAX_CHUNKS} chunks (check --chunk-size)"
        )
    chunks = []
    for i in range(count):
        chunk = {}
        for name, array in arrays.items():
            piece = np.asarray(array[i * chunk_size : (i + 1) * chunk_size])
            if len(piece) < chunk_size:  # the last chunk, zero-padded to the size the model takes
                pad = np.zeros((chunk_size - len(piece), *piece.shape[1:]), piece.dtype)
                piece = np.concatenate([piece, pad])
            chunk[name] = np.ascontiguousarray(piece[None].astype(dtypes.get(name, piece.dtype), copy=False))
        chunks.append(chunk)
    return chunks


def default_chunk_size(config) -> int:
    """The first input's size when the config fixes it in one dimension (e.g. ``dims: [ 512 ]``)."""
    dims = list(config.input[0].dims)
    if len(dims) >= 1 and dims[0] > 0:
        return int(dims[0])
    raise TritongenError(
        f"input '{config.input[0].name}' has dims {dims}, so the chunk size is not fixed", "pass --chunk-size"
    )


def stacked(answers: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-chunk answers as one array per output, chunks along the first axis."""
    return {name: np.concatenate([a[name] for a in answers], axis=0) for name in answers[0]}
