"""Build manifests: resolved spec, tool versions, sha256 of every file, accuracy results.

Each build writes ``<model>/<version>/tritongen/manifest.json``. File paths in it are relative to the model
folder, so the repository can be moved and still be verified.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

ARTIFACT_DIR = "tritongen"
MANIFEST_NAME = "manifest.json"
SAMPLES_NAME = "samples.npz"
REFERENCE_NAME = "reference_outputs.npz"
_TOOLS = ("tritongen", "torch", "onnx", "onnxruntime", "onnxscript", "onnx-graphsurgeon", "numpy", "tritonclient")


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
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


def manifest_path(model_dir: Path, version: int) -> Path:
    return model_dir / str(version) / ARTIFACT_DIR / MANIFEST_NAME


def write_manifest(model_dir: Path, version: int, content: dict[str, Any]) -> Path:
    path = manifest_path(model_dir, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")
    return path


def rehash_files(model_dir: Path, version: int, paths: Iterable[Path]) -> Path | None:
    """After a later step rewrote or added ``paths`` (tune's config and record), record their new sha256 in the
    manifest of ``version``, so ``tritongen verify`` accepts what tritongen wrote."""
    path = manifest_path(model_dir, version)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    data.setdefault("files", {}).update(file_hashes(model_dir, paths))
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(model_dir: Path, version: int) -> dict[str, Any]:
    return json.loads(manifest_path(model_dir, version).read_text())


def command_line() -> str:
    return " ".join(sys.argv)
