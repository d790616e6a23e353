"""An ONNX Runtime session on the CPU, quiet, with a clear refusal for a graph it rejects."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from .errors import TritongenError


def onnx_session(onnx_path: Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # fatal only: its errors come back as exceptions, each made one error line; logged, they came first, coloured
    options.log_severity_level = 4
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise TritongenError(
            f"ONNX Runtime cannot load {onnx_path.name}: {str(exc).splitlines()[0][:300]}",
            "the export produced a graph ONNX Runtime rejects; try another --opset",
        ) from None


LOAD_PROBE_TIMEOUT_S = 600.0
_LOAD_PROBE = (
    "import sys, onnxruntime as ort\n"
    "options = ort.SessionOptions()\n"
    "options.log_severity_level = 3\n"
    "ort.InferenceSession(sys.argv[1], options, providers=['CPUExecutionProvider'])\n"
)


def loads_in_a_child(onnx_path: Path) -> str | None:
    """Whether ONNX Runtime can open ``onnx_path`` (as :func:`onnx_session` and the served runner do) without
    crashing: None when it can (or when it raises: the caller's own session says why), else how the child ended
    ("signal SIGSEGV"). ONNX Runtime 1.32's graph optimiser crashes the process on some graphs (an FP16 two-layer
    GRU): the build died with no error line, leaving its staging folders behind."""
    try:
        proc = subprocess.run(
            # isolated (-I): neither the current folder (an onnxruntime.py there ran in the child) nor PYTHON* env
            [sys.executable, "-I", "-c", _LOAD_PROBE, str(onnx_path)],
            capture_output=True,
            timeout=LOAD_PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {LOAD_PROBE_TIMEOUT_S:g} s"
    if proc.returncode >= 0:
        return None
    try:
        return f"signal {signal.Signals(-proc.returncode).name}"
    except ValueError:
        return f"signal {-proc.returncode}"
