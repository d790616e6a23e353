"""Rewrite a Q/DQ graph into the form ONNX Runtime and TensorRT fuse: one Q/DQ pair per quantized op input.

``quantize_static`` quantizes each tensor once and points every reader at the one DequantizeLinear output. Two
things then cost speed (design notes, section 8):

- Q, K and V sharing one pair stay as dequantize + float MatMul in ONNX Runtime's CPU optimiser, which turns
  DequantizeLinear -> MatMul into ``MatMulIntegerToFloat`` only when each MatMul has its own pair. So every
  quantized reader gets its own QuantizeLinear/DequantizeLinear, and the duplicates' scales are nudged up by
  a few ulps (a relative change below 1e-6) so ORT's constant-sharing and common-subexpression passes do not
  merge them again.
- Readers that are not quantized ops (a residual Add, a Shape) would read the rounded tensor: they are wired
  back to the float tensor the QuantizeLinear reads.

Everything stays TensorRT-compatible: symmetric scales, zero point 0, per-tensor activations.

For ONNX Runtime on the CPU the pair on a Conv's *output* is kept whole (``keep_output_pairs``): it closes the
DequantizeLinear -> Conv -> QuantizeLinear node unit that becomes ``QLinearConv``, and the float ops after it
(PRelu, MaxPool) read its DequantizeLinear, the last step of the unit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

QDQ_CONSUMERS = ("MatMul", "Gemm", "Conv", "ConvTranspose")


@dataclass(frozen=True)
class QdqForm:
    pairs: int  # activation Q/DQ pairs after the rewrite
    duplicated: int  # pairs added so that each quantized op has its own
    rewired: int  # non-quantized readers moved back to the float tensor


def fusable_qdq(model: Any, keep_output_pairs: Sequence[str] = ()) -> QdqForm:
    """Rewrite ``model`` (an ``onnx.ModelProto``) in place; see the module docstring.

    ``keep_output_pairs``: op types whose output pairs stay as they are (``("Conv",)`` for the CPU form).
    """
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[tuple[Any, int]]] = defaultdict(list)
    for n in graph.node:
        for k, name in enumerate(n.input):
            readers[name].append((n, k))
    graph_outputs = {o.name for o in graph.output}
    added: list[tuple[Any, Any, Any]] = []  # (new Q, new DQ, after this DQ)
    dead: set[int] = set()
    pairs = duplicated = rewired = 0
    for position, dq in enumerate(list(graph.node)):
        if dq.op_type != "DequantizeLinear":
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits:
            continue  # a weight's DequantizeLinear (int8 initializer) or a lone DQ
        if len(readers[q.output[0]]) != 1 or dq.output[0] in graph_outputs:
            continue
        source = q.input[0]
        if source in producers and producers[source].op_type in keep_output_pairs:
            pairs += 1
            continue
        quantized: list[tuple[Any, int]] = []
        other: list[tuple[Any, int]] = []
        for node, k in readers[dq.output[0]]:
            (quantized if node.op_type in QDQ_CONSUMERS else other).append((node, k))
        for node, k in other:
            node.input[k] = source
            rewired += 1
        if not quantized:
            dead.add(position)
            continue
        pairs += 1
        scale = numpy_helper.to_array(inits[q.input[1]])
        for i, (node, k) in enumerate(quantized[1:], start=1):
            nudged = scale.astype(np.float32)
            for _ in range(i):
                nudged = np.nextafter(nudged, np.float32(np.inf), dtype=np.float32)
            tag = f"{dq.output[0]}_{i}"
            graph.initializer.append(numpy_helper.from_array(nudged, f"{tag}_scale"))
            new_q = onnx.helper.make_node(
                "QuantizeLinear", [source, f"{tag}_scale", *q.input[2:]], [f"{tag}_q"], name=f"{q.name}_{i}"
            )
            new_q.attribute.extend(q.attribute)
            new_dq = onnx.helper.make_node(
                "DequantizeLinear", [f"{tag}_q", f"{tag}_scale", *dq.input[2:]], [tag], name=f"{dq.name}_{i}"
            )
            new_dq.attribute.extend(dq.attribute)
            node.input[k] = tag
            added.append((new_q, new_dq, position))
            duplicated += 1
            pairs += 1
    dead_outputs = {graph.node[p].input[0] for p in dead}  # the dead pairs' QuantizeLinear outputs
    after: dict[int, list[Any]] = defaultdict(list)
    for new_q, new_dq, position in added:
        after[position].extend([new_q, new_dq])
    ordered = []
    for position, n in enumerate(graph.node):
        if position in dead or (n.op_type == "QuantizeLinear" and n.output[0] in dead_outputs):
            continue
        ordered.append(n)
        ordered.extend(after.get(position, []))
    copies = [onnx.NodeProto() for _ in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
    return QdqForm(pairs, duplicated, rewired)
