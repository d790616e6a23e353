"""Q/DQ checks for ``tritongen lint``: the explicit-quantization form TensorRT takes and fuses.

TensorRT builds INT8 kernels from QuantizeLinear -> DequantizeLinear pairs on the *inputs* of MatMul, Gemm and
Conv (symmetric, zero point 0; per-tensor activations; per-channel weights). Errors: a non-zero zero point,
a per-channel activation scale, a QuantizeLinear not followed by a DequantizeLinear. Warnings (TensorRT
builds the graph but the INT8 does not pay): a DequantizeLinear output read by an op other than those
(the op computes on rounded values in floating point; readers like a residual Add belong on the float
tensor), and a weighted op with only one of its two inputs quantized (it runs in floating point).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from ..findings import Finding

QDQ_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")
_SHAPE_ONLY = ("Shape", "Size")  # read the shape, not the values: harmless


MAX_QDQ_PARAM_ELEMENTS = 1 << 16  # a scale or zero point: one per channel at most


def qdq_findings(model: Any) -> list[Finding]:
    """Findings for the Q/DQ nodes of ``model`` (an ``onnx.ModelProto``; weights need not be loaded)."""
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[Any]] = defaultdict(list)
    for n in graph.node:
        for name in n.input:
            readers[name].append(n)
    out: list[Finding] = []

    def small(name: str) -> np.ndarray | None:
        """A scale or zero point: read only where it is small and whole (its dims and data agree)."""
        init = inits.get(name)
        if init is None or init.data_location == TensorProto.EXTERNAL or init.HasField("segment"):
            return None
        if int(np.prod([max(int(d), 0) for d in init.dims], dtype=np.float64)) > MAX_QDQ_PARAM_ELEMENTS:
            return None
        try:
            return numpy_helper.to_array(init)
        except (ValueError, TypeError):  # data that does not fill its dims
            return None

    for n in graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(n.input) < 2 or not n.input[0] or not n.input[1] or len(n.output) < 1 or not n.output[0]:
            out.append(
                Finding(
                    "error",
                    "qdq-arity",
                    f"{n.op_type} '{n.name}' has {len(n.input)} input(s) and {len(n.output)} output(s): it takes "
                    "an input and a scale (and a zero point) and gives one output",
                )
            )
            continue
        label = f"{n.op_type} '{n.name or n.output[0]}'"
        zero = small(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zero is not None and np.any(zero != 0):
            out.append(
                Finding("error", "qdq-zero-point", f"{label} has a non-zero zero point: TensorRT needs symmetric Q/DQ")
            )
        scale = small(n.input[1])
        activation = n.op_type == "QuantizeLinear" and n.input[0] not in inits
        if activation and scale is not None and scale.size > 1:
            out.append(
                Finding(
                    "error",
                    "qdq-per-channel",
                    f"{label} quantizes an activation per channel: TensorRT takes "
                    "per-tensor activation scales (per-channel is for weights)",
                )
            )
        if n.op_type == "QuantizeLinear":
            bad = [r for r in readers[n.output[0]] if r.op_type != "DequantizeLinear"]
            if bad:
                out.append(
                    Finding(
                        "error",
                        "qdq-pair",
                        f"{label} feeds {bad[0].op_type} '{bad[0].name}', not a "
                        "DequantizeLinear: TensorRT needs Q/DQ pairs",
                    )
                )
            continue
        for r in readers[n.output[0]]:
            if r.op_type not in QDQ_OPS and r.op_type not in _SHAPE_ONLY:
                out.append(
                    Finding(
                        "warning",
                        "qdq-placement",
                        f"{label} feeds {r.op_type} '{r.name}': TensorRT fuses Q/DQ "
                        "into MatMul/Gemm/Conv inputs; this op reads rounded values (wire it to the float tensor)",
                    )
                )
    for n in graph.node:
        if n.op_type not in QDQ_OPS or len(n.input) < 2:
            continue
        quantized = [
            producers.get(name) is not None and producers[name].op_type == "DequantizeLinear" for name in n.input[:2]
        ]
        if any(quantized) and not all(quantized):
            which = "weight" if quantized[0] else "activation"
            out.append(
                Finding(
                    "warning",
                    "qdq-half",
                    f"{n.op_type} '{n.name}' has Q/DQ on one input only (its {which} "
                    "is float): it runs in floating point",
                )
            )
    return out
