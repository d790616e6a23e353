"""An ONNX Runtime session on the CPU, quiet, with a clear refusal for a graph it rejects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import TritongenError


def onnx_session(onnx_path: Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise TritongenError(
            f"ONNX Runtime cannot load {onnx_path.name}: {str(exc).splitlines()[0][:300]}",
            "the export produced a graph ONNX Runtime rejects; try another --opset",
        ) from None
