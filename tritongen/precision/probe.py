"""Run an ONNX model with some intermediate tensors exposed as outputs, reducing them batch by batch.

SmoothQuant needs per-channel maxima of activations, the calibration-method choice needs per-tensor
distributions, and the FLOP count needs the shapes the weighted ops see: all three read intermediate tensors
of the FP32 graph on calibration batches, and none keeps the tensors themselves (a reducer folds each batch).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TritongenError

INLINE_LIMIT_BYTES = 1 << 30  # larger models are handed to ONNX Runtime through a file
Reducer = Callable[[str, np.ndarray], None]  # (tensor name, this batch's value)


def exposed(model: Any, names: Iterable[str]) -> Any:
    """A copy of ``model`` (an ``onnx.ModelProto`` holding its weights) whose outputs are ``names``."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    for name in names:
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    return probe


def run_exposed(model: Any, names: Sequence[str], batches: Iterable[dict], reduce: Reducer) -> None:
    """Run ``model`` on every batch and hand each of ``names`` to ``reduce``; the model is not changed."""
    import onnx
    import onnxruntime as ort

    if not names:
        return
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor by name
    probe = exposed(model, names)
    try:
        if probe.ByteSize() < INLINE_LIMIT_BYTES:
            session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        else:  # protobuf cannot serialise 2 GiB: go through a file with external data
            with tempfile.TemporaryDirectory(prefix="tritongen-probe-") as tmp:
                path = Path(tmp) / "probe.onnx"
                onnx.save(probe, str(path), save_as_external_data=True, location="probe.onnx.data")
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise TritongenError(
            f"ONNX Runtime cannot run the model to collect activation statistics: {str(exc).splitlines()[0][:200]}",
            "check that the FP32 model runs in ONNX Runtime",
        ) from None
    feeds = [i.name for i in session.get_inputs()]
    for batch in batches:
        values = session.run(list(names), {n: batch[n] for n in feeds})
        for name, value in zip(names, values):
            reduce(name, value)


def channel_absmax(model: Any, names: Sequence[str], batches: Iterable[dict]) -> dict[str, np.ndarray]:
    """Per-channel (last axis) maximum of ``|x|`` over all batches, for each tensor in ``names``."""
    out: dict[str, np.ndarray] = {}

    def fold(name: str, value: np.ndarray) -> None:
        m = np.max(np.abs(value.reshape(-1, value.shape[-1])), axis=0).astype(np.float64)
        out[name] = np.maximum(out[name], m) if name in out else m

    run_exposed(model, names, batches, fold)
    return out
