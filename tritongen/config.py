"""Model configuration decisions: everything that goes into a config.pbtxt is decided here, in Python.

The template ``templates/config.pbtxt.j2`` only lays the values out in Triton's syntax.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .layout import LABELS_FILENAME
from .scheduling import dynamic_batching_entries, rate_limiter_entry
from .sequence import STATES_PARAMETER, sequence_batching_entry
from .spec import BuildSpec, TensorSpec
from .templates import render


@dataclass(frozen=True)
class EntryKind:
    """How one target serves the ONNX model: backend and instance kind."""

    backend: str
    instance_kind: str
    parameters: Mapping[str, str]
    platform: str = ""
    model_filename: str = ""


def entry_kind(target: str) -> EntryKind:
    if target == "local":
        # The Python backend runs model.onnx with ONNX Runtime on the CPU (the server available here).
        return EntryKind(backend="python", instance_kind="KIND_CPU", parameters={"intra_op_thread_count": "0"})
    if target == "tensorrt":  # model.plan comes from `tritongen engine` on a host with TensorRT
        return EntryKind(
            backend="", instance_kind="KIND_GPU", parameters={}, platform="tensorrt_plan", model_filename="model.plan"
        )
    return EntryKind(backend="onnxruntime", instance_kind="KIND_GPU", parameters={}, model_filename="model.onnx")


# ONNX Runtime's TensorRT accelerator: keys we write (a subset of those the backend accepts; any other key
# fails the model load).
ORT_TRT_KEYS = frozenset({"precision_mode", "max_workspace_size_bytes"})
ORT_TRT_WORKSPACE_BYTES = 1 << 30


def gpu_accelerators(spec: BuildSpec) -> list[dict[str, Any]]:
    """``--target onnxruntime`` with FP16/INT8: let Triton's ONNX Runtime build a TensorRT engine at load time.

    The ONNX already carries the precision (FP16 casts or Q/DQ); ``precision_mode`` lets TensorRT use it.
    """
    if spec.target != "onnxruntime" or getattr(spec, "precision", "fp32") == "fp32":
        return []
    params = {"precision_mode": spec.precision.upper(), "max_workspace_size_bytes": str(ORT_TRT_WORKSPACE_BYTES)}
    return [{"name": "tensorrt", "parameters": {k: v for k, v in params.items() if k in ORT_TRT_KEYS}}]


def preferred_batch_sizes(spec: BuildSpec) -> tuple[int, ...]:
    """The user's choice, else half the maximum and the maximum (the sizes worth waiting for)."""
    if spec.preferred_batch_sizes:
        return tuple(sorted(set(spec.preferred_batch_sizes)))
    return tuple(sorted({b for b in (spec.max_batch_size // 2, spec.max_batch_size) if b > 0}))


def batching_text(spec: BuildSpec, steps: int = 1) -> str:
    """One line on how the config batches requests, and what its queue delay costs a lone request (at each of an
    ensemble's ``steps``: every step has its own batcher)."""
    if not spec.batched:
        return "batching: none (max batch size 0): each request runs alone"
    batcher = "sequence batcher" if spec.states else "dynamic batcher"
    preferred = (spec.max_batch_size,) if spec.states else preferred_batch_sizes(spec)  # as the entries say
    head = (
        f"batching: {batcher}, up to {spec.max_batch_size} per run (preferred {', '.join(map(str, preferred))}), "
        f"{spec.instance_count} instance{'s' if spec.instance_count > 1 else ''}"
    )
    if not spec.max_queue_delay_us:
        return head + "; no queue delay: a run takes whatever waits when an instance is free"
    measure = "tritongen perf measures it" if spec.states else "tritongen tune measures what pays"  # tune: no sequences
    return (
        f"{head}; a request short of a preferred batch waits up to {spec.max_queue_delay_us} us for others"
        + (f" at each of the {steps} steps" if steps > 1 else "")
        + f", which at low load is added to every answer (--queue-delay-us 0 for the lowest latency; {measure})"
    )


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


def tensor_entries(tensors: tuple[TensorSpec, ...], ragged: bool = False) -> list[dict[str, Any]]:
    """Template entries (name, dtype, dims, label_filename, allow_ragged_batch) for config.pbtxt tensors."""
    return [
        {
            "name": t.name,
            "dtype": t.dtype,
            "dims": list(t.dims),
            "label_filename": "",
            "allow_ragged_batch": ragged and bool(t.dynamic_axes),
            "scalar": t.scalar,
        }
        for t in tensors
    ]


def ragged_inputs(spec: BuildSpec) -> bool:
    """Let the dynamic batcher combine requests whose variable dims differ, for the local target only:
    its Python model groups the requests of one batch by shape, so nothing is padded. Triton's ONNX Runtime
    backend cannot take ragged batches."""
    return spec.target == "local" and spec.batched


def config_text_from_spec(
    spec: BuildSpec,
    warmup_samples: Mapping[str, np.ndarray] | None,
    cc_model_filenames: Mapping[str, str] | None = None,
) -> str:
    """``cc_model_filenames``: compute capability -> plan file, when plans exist for several GPUs."""
    kind = entry_kind(spec.target)
    dynamic = None
    if spec.batched and not spec.states:
        dynamic = {
            "preferred_batch_sizes": preferred_batch_sizes(spec),
            "max_queue_delay_us": spec.max_queue_delay_us,
            **dynamic_batching_entries(spec.priority_levels, spec.default_priority, spec.queue_policies),
        }
    parameters = dict(kind.parameters)
    sequence = None
    if spec.states:  # the sequence batcher; state tensors travel inside Triton (or the local model), not in the I/O
        sequence = sequence_batching_entry(
            spec.states,
            spec.inputs,
            target=spec.target,
            max_batch_size=spec.max_batch_size,
            max_queue_delay_us=spec.max_queue_delay_us,
        )
        if spec.target == "local":
            parameters[STATES_PARAMETER] = ",".join(p.text for p in spec.states)
    state_names = {n for p in spec.states for n in (p.input, p.output)}
    inputs = tuple(t for t in spec.inputs if t.name not in state_names)
    outputs = tuple(t for t in spec.outputs if t.name not in state_names)
    return render(
        "config.pbtxt.j2",
        name=spec.name,
        platform=kind.platform,
        backend=kind.backend,
        max_batch_size=spec.max_batch_size,
        default_model_filename=kind.model_filename,
        cc_model_filenames=dict(sorted((cc_model_filenames or {}).items())),
        gpu_accelerators=gpu_accelerators(spec),
        inputs=tensor_entries(inputs, ragged=ragged_inputs(spec) and not spec.states),
        outputs=[
            dict(t, label_filename=LABELS_FILENAME if (spec.labels and i == 0) else "")
            for i, t in enumerate(tensor_entries(outputs))
        ],
        dynamic_batching=dynamic,
        sequence_batching=sequence,
        instance_groups=[
            {
                "kind": kind.instance_kind,
                "count": spec.instance_count,
                "rate_limiter": rate_limiter_entry(spec.rate_limiter, spec.rate_limiter_priority),
            }
        ],
        warmups=warmup_entries(spec, warmup_samples)
        if (spec.warmup and warmup_samples is not None and not spec.states)
        else [],
        parameters=parameters,
    )
