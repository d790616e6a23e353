"""Build manifests: resolved spec, tool versions, sha256 of every file, accuracy results.

Each build writes ``<model>/<version>/tritongen/manifest.json``. File paths in it are relative to the model
folder, so the repository can be moved and still be verified. A manifest is a typed :class:`Manifest`, written
(:func:`write_manifest`, :func:`update_manifest`) and read (:func:`load_manifest`) only here; reading checks its
schema: a bounded size, ``manifest_schema`` (absent in manifests of
older tritongen builds, read as 1), and ``files`` mapping relative paths confined to the model folder to sha256
hex digests.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import stat
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

from .errors import TritongenError
from .files import leads_through_loop, replace_file
from .layout import manifest_path

MANIFEST_SCHEMA = 1
MAX_MANIFEST_BYTES = 8 << 20
MAX_MANIFEST_FILES = 100_000
MAX_PATH_CHARS = 1024
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_TOOLS = ("tritongen", "torch", "onnx", "onnxruntime", "onnxscript", "onnx-graphsurgeon", "numpy", "tritonclient")


MODEL, ENSEMBLE, PYTHON_STEP = "model", "ensemble", "python_step"
_KNOWN = (
    "manifest_schema",
    "tritongen_version",
    "command",
    "created_unix_s",
    "version",
    "kind",
    "tools",
    "files",
    "engines",
    "tensorrt_version",
)


def finite_number(value: Any) -> TypeGuard[int | float]:
    """A number as JSON carries it that tritongen can compute with: an int or a float, not a bool, finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Manifest:
    """One build's manifest: what made the version folder and the sha256 of every file Triton may load from it.

    ``kind``: :data:`MODEL` (an ONNX model; absent from the JSON), :data:`ENSEMBLE` or :data:`PYTHON_STEP`.
    ``details`` holds the kind's own record, written as top-level JSON fields in this order (``source``,
    ``export``, ``spec``, ``parity``, ``precision``, ``model``, ``steps``, ...). ``engines`` (compute capability ->
    plan record) and ``tensorrt_version`` are added by ``tritongen engine``.
    """

    files: dict[str, str]
    version: int | None = None
    kind: str = MODEL
    tritongen_version: str = ""
    command: str | None = None
    created_unix_s: float = 0.0
    tools: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    tensorrt_version: str | None = None
    schema: int = MANIFEST_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"manifest_schema": self.schema, "tritongen_version": self.tritongen_version}
        if self.command is not None:
            out["command"] = self.command
        out["created_unix_s"] = self.created_unix_s
        if self.version is not None:
            out["version"] = self.version
        if self.kind != MODEL:
            out["kind"] = self.kind
        out.update(self.details)
        out["tools"] = dict(self.tools)
        out["files"] = dict(self.files)
        if self.engines:
            out["engines"] = dict(self.engines)
        if self.tensorrt_version is not None:
            out["tensorrt_version"] = self.tensorrt_version
        return out

    def spec_record(self, *keys: str) -> dict[str, Any]:
        """The build's spec as this manifest records it (``details["spec"]``, or for ``keys=("model",)`` an
        ensemble's model step's ``details["model"]["spec"]``); empty where it records none as a mapping."""
        record: Any = self.details
        for key in (*keys, "spec"):
            record = record.get(key) if isinstance(record, dict) else None
        return record if isinstance(record, dict) else {}

    def tolerances(self, *keys: str) -> tuple[float, float]:
        """The parity gate's ``(atol, rtol)`` the build recorded (:meth:`spec_record`); a manifest without them as
        finite numbers of 0 or more (edited by hand: a manifest vouches for the files, not for itself) is refused."""
        spec = self.spec_record(*keys)
        atol, rtol = spec.get("atol"), spec.get("rtol")
        if finite_number(atol) and atol >= 0 and finite_number(rtol) and rtol >= 0:
            return float(atol), float(rtol)
        raise TritongenError(
            f"the manifest of version {self.version} records no parity tolerances tritongen can use "
            f"({'.'.join((*keys, 'spec'))}.atol/rtol: {str(atol)[:40]}, {str(rtol)[:40]})",
            "rebuild the model with tritongen build (its manifest records them)",
        )

    @property
    def precision_record(self) -> dict[str, Any]:
        """The build's ``precision`` record (precision, accuracy guard, INT8 figures); empty where none is."""
        record = self.details.get("precision")
        return record if isinstance(record, dict) else {}

    @property
    def precision(self) -> str:
        """The precision the version was built at: ``fp16``, ``int8``, or ``fp32`` (also where no record says)."""
        value = self.precision_record.get("precision")
        return value if value in ("fp16", "int8") else "fp32"

    @property
    def int8_flop_share(self) -> float | None:
        """INT8 share of the weight-GEMM FLOPs (``precision.int8_weight_gemm_flops.share``); None when the build
        was not INT8 or predates the figure."""
        flops = self.precision_record.get("int8_weight_gemm_flops")
        share = flops.get("share") if isinstance(flops, dict) else None
        return float(share) if finite_number(share) else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """From parsed JSON that passed :func:`check_manifest`."""
        engines = data.get("engines")
        return cls(
            files=dict(data["files"]),
            version=data.get("version"),
            kind=str(data.get("kind") or MODEL),
            tritongen_version=str(data.get("tritongen_version", "")),
            command=data.get("command"),
            created_unix_s=float(data.get("created_unix_s") or 0.0),
            tools=dict(data.get("tools") or {}),
            details={k: v for k, v in data.items() if k not in _KNOWN},
            engines=dict(engines) if isinstance(engines, dict) else {},
            tensorrt_version=data.get("tensorrt_version"),
            schema=int(data.get("manifest_schema", 1)),
        )


def new_manifest(
    version: int, files: dict[str, str], *, kind: str = MODEL, with_command: bool = True, **details: Any
) -> Manifest:
    """A manifest for a version folder this process just wrote: tritongen's and the tools' versions, the time,
    the command line (unless ``with_command`` is False), and ``details`` as the kind's own record."""
    from . import __version__

    return Manifest(
        files=dict(files),
        version=version,
        kind=kind,
        tritongen_version=__version__,
        command=command_line() if with_command else None,
        created_unix_s=round(time.time(), 3),
        tools=tool_versions(),
        details=dict(details),
    )


def open_regular(path: Path) -> int:
    """A read-only descriptor of ``path``, refusing symlinks, FIFOs and devices (reading one could hang)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    return fd


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_regular_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """:func:`sha256_file` of a regular file that is not a symlink (``OSError`` otherwise)."""
    digest = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as fh:
        for block in iter(lambda: fh.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(model_dir: Path, paths: Iterable[Path]) -> dict[str, str]:
    return {p.relative_to(model_dir).as_posix(): sha256_file(p) for p in sorted(paths) if p.is_file()}


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _dump(path: Path, manifest: Manifest) -> None:
    replace_file(path, json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")  # a link is not followed


def write_manifest(model_dir: Path, version: int, manifest: Manifest) -> Path:
    """Write ``manifest`` as ``<model_dir>/<version>/tritongen/manifest.json``; returns its path."""
    path = manifest_path(model_dir, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    _dump(path, manifest)
    return path


def update_manifest(path: Path, files: dict[str, str], **fields: Any) -> Manifest:
    """Add ``files`` (relative path -> sha256) and set ``fields`` (:class:`Manifest` fields, e.g. ``engines``) in
    the manifest at ``path``, after a later step (tune, engine) rewrote or added files; the manifest is read
    through the schema check first."""
    manifest = load_manifest(path, path.parent.parent.parent)
    manifest = replace(manifest, files={**manifest.files, **files}, **fields)
    _dump(path, manifest)
    return manifest


def rehash_files(model_dir: Path, version: int, paths: Iterable[Path]) -> Path | None:
    """After a later step rewrote or added ``paths`` (tune's config and record), record their new sha256 in the
    manifest of ``version``, so ``tritongen verify`` accepts what tritongen wrote."""
    path = manifest_path(model_dir, version)
    if not path.is_file():
        return None
    update_manifest(path, file_hashes(model_dir, paths))
    return path


def read_manifest(model_dir: Path, version: int) -> Manifest:
    """The manifest of ``model_dir``'s ``version`` (schema-checked)."""
    return load_manifest(manifest_path(model_dir, version), model_dir)


def engines_of(model_dir: Path, version: int) -> dict[str, dict[str, Any]]:
    """The TensorRT plans recorded in a version's manifest (compute capability -> record); empty when the
    manifest is absent or unreadable. Read without the schema check: judging manifests is ``tritongen verify``'s
    business, placing and checking plans only needs this record."""
    path = manifest_path(model_dir, version)
    try:
        data = _read_json(path) if path.is_file() else {}
    except TritongenError:
        return {}
    engines = data.get("engines") if isinstance(data, dict) else None
    return {str(k): v for k, v in engines.items() if isinstance(v, dict)} if isinstance(engines, dict) else {}


def _bad(path: Path, problem: str) -> TritongenError:
    return TritongenError(
        f"manifest {path} {problem}",
        "rebuild the model with tritongen build --force (manifests are written by builds, not by hand)",
    )


def _path_problem(rel: Any, model_dir: Path) -> str | None:
    if not isinstance(rel, str) or not rel or len(rel) > MAX_PATH_CHARS:
        return f"lists a file path that is not a non-empty string of at most {MAX_PATH_CHARS} characters"
    shown = ascii(rel)[:80]
    if any(ord(c) < 32 or c in "\\\x7f" for c in rel) or rel.startswith("/"):
        return f"lists the path {shown}, which is absolute or holds a backslash or control character"
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return f"lists the path {shown}, which has an empty, '.' or '..' component"
    root = model_dir.resolve()
    if leads_through_loop(root / PurePosixPath(rel)):
        return f"lists the path {shown}, which leads through a loop of symbolic links"
    if root not in (root / PurePosixPath(rel)).resolve().parents:
        return f"lists the path {shown}, which leads out of its model folder"
    return None


def check_manifest(data: Any, path: Path, model_dir: Path) -> dict[str, Any]:
    """``data`` (a parsed manifest) if it fits the schema, else :class:`TritongenError` naming the first problem."""
    if not isinstance(data, dict):
        raise _bad(path, f"is a JSON {type(data).__name__}, not an object")
    schema = data.get("manifest_schema", 1)  # manifests of tritongen before the field: the same layout
    if type(schema) is not int or schema != MANIFEST_SCHEMA:
        raise _bad(path, f"has manifest_schema {ascii(schema)[:20]}, this tritongen reads {MANIFEST_SCHEMA}")
    files = data.get("files")
    if not isinstance(files, dict):
        raise _bad(
            path,
            "has no 'files' object (relative path -> sha256)"
            if files is None
            else f"has 'files' as a JSON {type(files).__name__}, not an object of relative path -> sha256",
        )
    if len(files) > MAX_MANIFEST_FILES:
        raise _bad(path, f"lists {len(files)} files, more than {MAX_MANIFEST_FILES}")
    for rel, digest in files.items():
        problem = _path_problem(rel, model_dir)
        if problem is None and (not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest)):
            problem = f"gives {ascii(rel)[:80]} a digest that is not 64 lowercase hex digits"
        if problem:
            raise _bad(path, problem)
    created = data.get("created_unix_s")
    if created is not None and (type(created) not in (int, float) or not 0 <= created < 1e11):
        raise _bad(path, f"has created_unix_s {ascii(created)[:20]}, not a Unix time")
    for name in ("kind", "tritongen_version"):
        if name in data and not isinstance(data[name], str):
            raise _bad(path, f"has '{name}' as a JSON {type(data[name]).__name__}, not a string")
    tools = data.get("tools")
    if tools is not None and not (isinstance(tools, dict) and all(isinstance(v, str) for v in tools.values())):
        raise _bad(path, "has 'tools' that is not an object of tool name -> version")
    return data


def load_manifest(path: Path, model_dir: Path) -> Manifest:
    """The manifest at ``path`` (of the model folder ``model_dir``), read with a size bound and schema-checked."""
    return Manifest.from_dict(check_manifest(_read_json(path), path, model_dir))


def _read_json(path: Path) -> Any:
    """The JSON at ``path``: a regular file of at most :data:`MAX_MANIFEST_BYTES`."""
    try:
        with os.fdopen(open_regular(path), "rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise _bad(path, f"cannot be read as a regular file ({exc.strerror or exc})") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _bad(path, f"is larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise _bad(path, "is not valid UTF-8 JSON") from None
    return data


def command_line() -> str:
    return " ".join(sys.argv)
