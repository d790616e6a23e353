"""Which form a model file is in, from its content (never its extension), through the checked archive reader."""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..archive import Archive, open_archive
from ..errors import TritongenError
from .common import FORMS_HELP

# torch.save's legacy (non-zip) format starts with this number, pickled (torch/serialization.py MAGIC_NUMBER).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


# safetensors' own limit on its JSON header.
_SAFETENSORS_HEADER_LIMIT_BYTES = 100_000_000


# What tritongen reads into memory from a model archive to check it: JSON configs, a torch.save file's data.pkl.
JSON_LIMIT_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Format:
    kind: str  # "torchscript" | "torch.export" | "torch.save" | "safetensors" | "pickle" | "onnx"
    note: str = ""  # how it was recognized, for messages


def detect_format(path: Path) -> Format:
    """Recognize the file's form from its content. Raises :class:`TritongenError` when it is none of them."""
    path = Path(path)
    if not path.exists():
        raise TritongenError(f"model file {path} does not exist", f"check the path; {FORMS_HELP}")
    if path.is_dir():
        raise TritongenError(
            f"{path} is a directory, not a model file", f"point to the saved model file inside it; {FORMS_HELP}"
        )
    if not path.is_file():
        raise TritongenError(f"{path} is not a regular file", FORMS_HELP)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise TritongenError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    if size == 0:
        raise TritongenError(f"{path} is empty (0 bytes)", f"save the model again; {FORMS_HELP}")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _detect_zip(path)
    if _is_safetensors(path, head, size):
        return Format("safetensors")
    from ..onnx_input import is_onnx_file

    if is_onnx_file(head):
        return Format("onnx")
    if head[:1] == b"\x80":  # pickle protocol 2+
        first = _first_pickle_value(head)
        if first == _LEGACY_MAGIC:
            return Format("torch.save", "legacy torch.save format")
        if first is not _NOT_PICKLE:
            return Format("pickle")
    raise TritongenError(f"{path} is not a model file tritongen recognizes ({_describe_bytes(head)})", FORMS_HELP)


def _detect_zip(path: Path) -> Format:
    with open_model_archive(path, verify=True) as archive:
        names = archive.names
        records = record_names(names)
        if "archive_format" in records:
            if archive.read(records["archive_format"], limit_bytes=64).strip() != b"pt2":
                raise TritongenError(f"{path} is a zip archive with an unknown archive_format", FORMS_HELP)
            return Format("torch.export")
        if "serialized_exported_program.json" in (n.lower() for n in names):
            return Format("torch.export", "torch.export archive from torch <= 2.7")
    if "constants.pkl" in records and "data.pkl" in records:
        return Format("torchscript")
    if "data.pkl" in records:
        return Format("torch.save", "torch.save zip format")
    shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
    raise TritongenError(f"{path} is a zip archive but not a PyTorch one (it holds {shown or 'nothing'})", FORMS_HELP)


def open_model_archive(path: Path, verify: bool = False) -> Archive:
    """The model file as a checked archive (:mod:`tritongen.archive`): the one way this module opens a zip."""
    return open_archive(path, "model file", f"copy or save the model again; {FORMS_HELP}", verify=verify)


def record_names(names: list[str]) -> dict[str, str]:
    """Record name relative to the archive's root folder -> full member name (torch puts all under one folder).

    Record names are lower-cased: torch's reader finds them ignoring ASCII case (the archive reader refuses
    names that differ only in case), so a check must look them up the same way."""
    roots = {n.split("/", 1)[0] for n in names if "/" in n}
    if len(roots) != 1 or any("/" not in n for n in names):
        return {}
    return {n.split("/", 1)[1].lower(): n for n in names}


def _is_safetensors(path: Path, head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    if not 2 <= n <= min(size - 8, _SAFETENSORS_HEADER_LIMIT_BYTES) or head[8:9] != b"{":
        return False
    try:
        with path.open("rb") as f:
            f.seek(8)
            header = json.loads(f.read(n))
    except (ValueError, OSError, RecursionError):
        return False
    return isinstance(header, dict)


_NOT_PICKLE = object()


def _first_pickle_value(head: bytes) -> Any:
    """The value of the first pickle in ``head`` when it is a plain int (torch's magic number), else None;
    :data:`_NOT_PICKLE` when ``head`` does not start like a pickle at all. Reads opcodes, never unpickles."""
    import pickletools

    try:
        ops = pickletools.genops(io.BytesIO(head))
        proto = next(ops)
        if proto[0].name != "PROTO" or not isinstance(proto[1], int) or not 2 <= proto[1] <= 5:
            return _NOT_PICKLE
        value = next(ops)
        return value[1] if value[0].name in ("LONG1", "LONG4", "INT", "BININT") else None
    except Exception:  # noqa: BLE001 -- anything odd means "not a pickle"
        return _NOT_PICKLE


def _describe_bytes(head: bytes) -> str:
    sample = head[:512]
    if b"\x00" not in sample:
        try:
            sample.decode("utf-8")
            return "it is a text file"
        except UnicodeDecodeError as exc:
            if exc.start > len(sample) - 4:  # cut in the middle of a character
                return "it is a text file"
    return "it starts with bytes " + head[:8].hex(" ")
