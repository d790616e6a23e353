"""Model configuration decisions: everything that goes into a config.pbtxt is decided here, in Python.

The template ``templates/config.pbtxt.j2`` only lays the values out in Triton's syntax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .spec import BuildSpec, TensorSpec
from .templates import render

WARMUP_DIR = "warmup"


@dataclass(frozen=True)
class EntryKind:
    """How one target serves the ONNX model: backend and instance kind."""

    backend: str
    instance_kind: str
    parameters: Mapping[str, str]


def entry_kind(target: str) -> EntryKind:
    if target == "local":
        # The Python backend runs model.onnx with ONNX Runtime on the CPU (the server available here).
        return EntryKind(backend="python", instance_kind="KIND_CPU", parameters={"intra_op_thread_count": "0"})
    return EntryKind(backend="onnxruntime", instance_kind="KIND_GPU", parameters={})


def preferred_batch_sizes(spec: BuildSpec) -> tuple[int, ...]:
    """The user's choice, else half the maximum and the maximum (the sizes worth waiting for)."""
    if spec.preferred_batch_sizes:
        return tuple(sorted(set(spec.preferred_batch_sizes)))
    return tuple(sorted({b for b in (spec.max_batch_size // 2, spec.max_batch_size) if b > 0}))


def warmup_entries(spec: BuildSpec, samples: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """One warm-up request built from the batch-1 sample (files written by :func:`warmup_files`)."""
    inputs = []
    for t in spec.inputs:
        array = samples[t.name]
        dims = array.shape[1:] if spec.batched else array.shape
        inputs.append({"name": t.name, "dtype": t.dtype, "dims": list(dims) or [1], "file": t.name})
    return [{"name": "sample_request", "batch_size": 1, "inputs": inputs}]


def warmup_files(spec: BuildSpec, samples: Mapping[str, np.ndarray]) -> dict[str, bytes]:
    """Raw row-major bytes for each warm-up input, keyed by file name inside ``warmup/``."""
    return {t.name: np.ascontiguousarray(samples[t.name]).tobytes() for t in spec.inputs}


def _tensors(tensors: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
    return [{"name": t.name, "dtype": t.dtype, "dims": list(t.dims), "label_filename": ""} for t in tensors]


def config_text_from_spec(spec: BuildSpec, warmup_samples: Mapping[str, np.ndarray] | None) -> str:
    kind = entry_kind(spec.target)
    dynamic = None
    if spec.batched:
        dynamic = {"preferred_batch_sizes": preferred_batch_sizes(spec), "max_queue_delay_us": spec.max_queue_delay_us}
    return render(
        "config.pbtxt.j2",
        name=spec.name,
        platform="",
        backend=kind.backend,
        max_batch_size=spec.max_batch_size,
        default_model_filename="model.onnx" if kind.backend == "onnxruntime" else "",
        inputs=_tensors(spec.inputs),
        outputs=_tensors(spec.outputs),
        dynamic_batching=dynamic,
        instance_groups=[{"kind": kind.instance_kind, "count": spec.instance_count}],
        warmups=warmup_entries(spec, warmup_samples) if (spec.warmup and warmup_samples is not None) else [],
        parameters=dict(kind.parameters),
    )
