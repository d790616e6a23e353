"""Reading sample arrays from ``.npz``/``.npy`` files safely, with bounded memory; writing them whatever their
names (:func:`npz_bytes`).

Below :mod:`tritongen.spec` and :mod:`tritongen.samples` (both read sample files), above :mod:`tritongen.archive`.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .archive import open_archive
from .errors import TritongenError
from .names import shown

Arrays = dict[str, np.ndarray]

MAX_SAMPLE_FILE_BYTES = 512 * 2**20  # the arrays of one .npz (or .npy) file, together
MAX_SAMPLE_ARRAYS = 1024
MAX_DIMS = 32  # numpy's limit (NPY_MAXDIMS): an array of more cannot be made
_NPY_HEADER_LIMIT_BYTES = 64 * 1024
_NPZ_FIX = "save the samples with numpy.savez(path, name=array, ...)"
_SMALLER_FIX = "save fewer or smaller samples (a few batches are enough)"


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` holding ``arrays`` by name, as ``numpy.savez`` writes one, for any names: ``savez(f, **arrays)``
    takes a tensor named ``file`` for its own argument (a TypeError). An object array of bytes or text (a BYTES
    tensor) is written as fixed-width bytes, never pickled, so :func:`arrays_from_npz` reads it back."""
    seen: set[str] = set()
    for name in arrays:  # what arrays_from_npz (tritongen.archive) reads back: no path, one name ignoring case
        bad = not name or name in (".", "..") or any(c in "/\\" or not c.isprintable() for c in name)
        if bad or name.lower() in seen:
            raise TritongenError(
                f"the name {shown(repr(name), 60)} cannot name an array of an .npz file (a '/' or '\\', a control "
                "character, '.' or '..', or another name equal but for case)",
                "read such arrays from the Python API (InferResult.outputs), or rename the tensor",
            )
        seen.add(name.lower())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            array = np.asanyarray(array)
            if array.dtype == object:
                values = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
                if any(v.endswith(b"\0") for v in values):  # fixed-width bytes end at the first trailing NUL
                    raise TritongenError(
                        f"tensor {shown(repr(name), 60)} holds bytes ending in NUL, which an .npz file's fixed-width "
                        "bytes would drop",
                        "read it from the Python API (InferResult.outputs), where every byte is kept",
                    )
                array = np.array(values, dtype=np.bytes_).reshape(array.shape)  # bytes_ even when empty
            with archive.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, array, allow_pickle=False)
    return buffer.getvalue()


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """:func:`npz_bytes` into ``path``."""
    Path(path).write_bytes(npz_bytes(arrays))


def arrays_from_npz(path: Path) -> Arrays:
    """:func:`arrays_and_form_from_npz`'s arrays (a single ``.npy`` array as ``"input"``)."""
    return arrays_and_form_from_npz(path)[0]


def arrays_and_form_from_npz(path: Path) -> tuple[Arrays, bool]:
    """Read an ``.npz`` (or ``.npy`` for a single input) safely and with bounded memory: the arrays, and whether the
    file was a single ``.npy`` array (read as ``"input"``), from the same read (a caller opening the file again to
    tell could find another one swapped in).

    Every archive member goes through :mod:`tritongen.archive`; each ``.npy`` header is parsed and its shape
    times item size checked against :data:`MAX_SAMPLE_FILE_BYTES` and the member's real length before any
    array exists (``np.load`` allocates whatever a header claims). Object dtypes (pickles) are refused. Each
    array is a view of the bytes read, so a file costs its arrays' size once."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "is not a regular file" if path.exists() else "does not exist"
        raise TritongenError(f"sample file {path} {what}", "pass an .npz with one array per model input")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
            if magic == b"\x93NUMPY":  # a single .npy array
                fh.seek(0)
                head = fh.read(_NPY_HEADER_LIMIT_BYTES)
                _npy_header(head, path.stat().st_size, path, "its array")
                fh.seek(0)
                data = bytearray(fh.read(MAX_SAMPLE_FILE_BYTES + _NPY_HEADER_LIMIT_BYTES))
                head = bytes(data[:_NPY_HEADER_LIMIT_BYTES])
                shape, fortran, dtype, data_at = _npy_header(head, len(data), path, "its array")
                return {"input": _array(data, data_at, shape, fortran, dtype)}, True
    except OSError as exc:
        why = exc.strerror or exc
        raise TritongenError(f"cannot read sample file {path}: {why}", "check the file's permissions") from None
    if magic.startswith(b"RIFF"):  # audio: what infer --sequence reads (tritongen.infer_sequence)
        raise TritongenError(
            f"cannot read sample file {path}: it is a WAV audio file, not an .npz or .npy file",
            "stream it to a stateful model with tritongen infer NAME --sequence --input-file FILE; elsewhere "
            + _NPZ_FIX,
        )
    if not magic.startswith(b"PK\x03\x04") and not magic.startswith(b"PK\x05\x06"):
        raise TritongenError(f"cannot read sample file {path}: it is not an .npz or .npy file", _NPZ_FIX)
    with open_archive(path, "sample file", _NPZ_FIX) as archive:
        names = archive.names
        if len(names) > MAX_SAMPLE_ARRAYS:
            raise TritongenError(
                f"sample file {path} holds {len(names)} arrays, more than {MAX_SAMPLE_ARRAYS}", _NPZ_FIX
            )
        odd = [n for n in names if not n.endswith(".npy") or n == ".npy"]
        if odd:
            raise TritongenError(f"sample file {path} holds {odd[0]!r}, which is not an array (.npy)", _NPZ_FIX)
        total_bytes = sum(archive.size_bytes(n) for n in names)
        if total_bytes > MAX_SAMPLE_FILE_BYTES + _NPY_HEADER_LIMIT_BYTES * len(names):
            raise TritongenError(
                f"sample file {path} holds {total_bytes} bytes of arrays, more than the "
                f"{MAX_SAMPLE_FILE_BYTES} tritongen reads",
                _SMALLER_FIX,
            )
        arrays: Arrays = {}
        for name in names:
            data = archive.read(name, MAX_SAMPLE_FILE_BYTES + _NPY_HEADER_LIMIT_BYTES)
            head = bytes(data[:_NPY_HEADER_LIMIT_BYTES])
            shape, fortran, dtype, data_at = _npy_header(head, len(data), path, f"array {name!r}")
            arrays[name[: -len(".npy")]] = _array(data, data_at, shape, fortran, dtype)
    return arrays, False


def _npy_header(head: bytes, size_bytes: int, path: Path, what: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data offset)`` of an .npy whose first bytes are ``head`` and whose whole
    length is ``size_bytes``; refused unless the data is exactly shape x item size bytes, within the bound."""
    stream = io.BytesIO(head)
    try:
        major, _minor = np.lib.format.read_magic(stream)
        if major not in (1, 2):
            raise ValueError(f".npy format version {major} is not read here")
        reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(stream, max_header_size=_NPY_HEADER_LIMIT_BYTES - 16)  # type: ignore[call-arg]
    except Exception as exc:  # noqa: BLE001 -- numpy parses the header with tokenize and literal_eval: any failure
        why = " ".join(str(exc).split())[:200]
        raise TritongenError(f"cannot read sample file {path}: {what} has a damaged header ({why})", _NPZ_FIX) from None
    if dtype.hasobject:
        raise TritongenError(
            f"sample file {path} holds pickled objects ({what} has dtype {dtype})",
            "save numbers as numeric arrays, and text (a STRING/BYTES input) as bytes or str arrays "
            "(np.array([b'a', b'b']) or dtype 'U'), with numpy.savez",
        )
    if dtype.subdtype is not None:  # '(2,)<f4': each item an array, so the data holds more items than the shape says
        raise TritongenError(
            f"cannot read sample file {path}: {what} has the subarray dtype {str(dtype)[:80]}",
            "save the array with a plain dtype (its item shape as dimensions of the array)",
        )
    if dtype.itemsize == 0:
        raise TritongenError(f"sample file {path}: {what} has dtype {dtype} with no bytes per item", _NPZ_FIX)
    if not all(type(dim) is int for dim in shape):  # literal_eval's (True, 16): bool is an int to isinstance
        raise TritongenError(
            f"cannot read sample file {path}: {what} has a shape that is not whole numbers ({str(shape)[:80]})",
            _NPZ_FIX,
        )
    if any(dim < 0 for dim in shape):
        raise TritongenError(
            f"cannot read sample file {path}: {what} has a negative dimension in shape {list(shape)}", _NPZ_FIX
        )
    if len(shape) > MAX_DIMS:
        raise TritongenError(
            f"sample file {path}: {what} claims {len(shape)} dimensions, more than the {MAX_DIMS} an array may have",
            _NPZ_FIX,
        )
    claimed_bytes = dtype.itemsize
    for dim in shape:
        claimed_bytes *= dim
    if claimed_bytes > MAX_SAMPLE_FILE_BYTES:
        raise TritongenError(
            f"sample file {path}: {what} claims shape {list(shape)} of {dtype}, "
            f"{claimed_bytes} bytes, more than the {MAX_SAMPLE_FILE_BYTES} tritongen reads",
            _SMALLER_FIX,
        )
    if claimed_bytes == 0:  # an empty array: its other dimensions bounded as if the empty one held one item
        spread = dtype.itemsize
        for dim in shape:
            spread *= max(dim, 1)
        if spread > MAX_SAMPLE_FILE_BYTES:
            raise TritongenError(
                f"sample file {path}: {what} claims the empty shape {shown(list(shape), 80)}, whose other "
                f"dimensions span {spread} bytes of {dtype}, more than the {MAX_SAMPLE_FILE_BYTES} tritongen reads",
                _SMALLER_FIX,
            )
    data_at = stream.tell()
    if size_bytes - data_at != claimed_bytes:
        raise TritongenError(
            f"sample file {path}: {what} claims shape {list(shape)} of {dtype} "
            f"({claimed_bytes} bytes) but holds {size_bytes - data_at} bytes",
            _NPZ_FIX,
        )
    return tuple(shape), bool(fortran), dtype, data_at


def _array(data: bytearray, data_at: int, shape: tuple[int, ...], fortran: bool, dtype: np.dtype) -> np.ndarray:
    flat = np.frombuffer(memoryview(data)[data_at:], dtype=dtype)
    return flat.reshape(shape, order="F" if fortran else "C")
