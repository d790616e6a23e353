"""FLOPs of the weighted GEMMs (MatMul/Gemm with a weight initializer, Conv), and the INT8 share of them.

Counts come from the shapes the ops see on a real batch (the model runs once with their outputs exposed):
``2 * output elements * reduction length``, where the reduction length is the weight's input-channel size
(MatMul ``[K, N]``: K; Gemm: K after ``transB``; Conv ``[Cout, Cin/groups, *kernel]``: ``Cin/groups * prod(kernel)``).
Activation x activation MatMuls (attention scores) are not weight GEMMs and are not counted. Recurrent layers
(LSTM, GRU, RNN: weights ``W [dirs, gates*hidden, input]`` and ``R [dirs, gates*hidden, hidden]``) are weight
GEMMs that stay in floating point (ONNX Runtime's quantizer leaves them): ``2 * steps * dirs * batch *
gates*hidden * (input + hidden)``. A 2-layer LSTM with a small Linear head read "100% (1/1 weighted ops in
INT8)" when only the head was INT8.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .probe import run_exposed

WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
RECURRENT_OPS = ("LSTM", "GRU", "RNN")  # weighted, never quantized


@dataclass(frozen=True)
class FlopShare:
    int8_flops: int
    total_flops: int
    int8_nodes: int
    total_nodes: int
    kept: tuple[tuple[str, int], ...]  # (node kept in floating point, its FLOPs), largest first

    @property
    def share(self) -> float:
        return self.int8_flops / self.total_flops if self.total_flops else 0.0

    def text(self) -> str:
        return (
            f"INT8 share of weight-GEMM FLOPs {100 * self.share:.1f}% "
            f"({self.int8_nodes}/{self.total_nodes} weighted ops in INT8)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "share": self.share,
            "int8_flops": self.int8_flops,
            "total_flops": self.total_flops,
            "int8_nodes": self.int8_nodes,
            "total_nodes": self.total_nodes,
            "kept_in_float": [{"node": n, "flops": f} for n, f in self.kept],
        }


def _reduction(node: Any, weight: Any) -> int:
    dims = list(weight.dims)
    if node.op_type == "Conv":
        return int(np.prod(dims[1:]))
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return int(dims[1] if trans_b else dims[0])
    return int(dims[-2]) if len(dims) >= 2 else int(dims[0])


def recurrent_nodes(model: Any) -> list[str]:
    """The LSTM/GRU/RNN nodes of ``model`` whose weights are initializers: counted by :func:`weight_gemm_flops`,
    never INT8."""
    inits = {i.name for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type in RECURRENT_OPS and len(n.input) > 2 and {n.input[1], n.input[2]} <= inits and n.output[0]
    ]


def weight_gemm_flops(model: Any, batch: dict) -> dict[str, int]:
    """FLOPs of every weighted Conv/Gemm/MatMul (and LSTM/GRU/RNN) of ``model`` (a ModelProto with weights) on
    ``batch``."""
    inits = {i.name: i for i in model.graph.initializer}
    nodes = [
        n
        for n in model.graph.node
        if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in inits and n.input[0] not in inits
    ]
    recurrent = set(recurrent_nodes(model))
    nodes += [n for n in model.graph.node if n.name in recurrent and n.op_type in RECURRENT_OPS]
    flops: dict[str, int] = {}
    by_output = {n.output[0]: n for n in nodes}

    def count(name: str, value: np.ndarray) -> None:
        node = by_output[name]
        if node.op_type in RECURRENT_OPS:  # Y: [steps, dirs, batch, hidden] (or batch first): a row per step
            w, r = inits[node.input[1]].dims, inits[node.input[2]].dims
            flops[node.name] = 2 * (int(value.size) // max(int(r[2]), 1)) * int(w[1]) * (int(w[2]) + int(r[2]))
            return
        flops[node.name] = 2 * int(value.size) * _reduction(node, inits[node.input[1]])

    run_exposed(model, list(by_output), [batch], count)
    return flops


def flop_share(flops: dict[str, int], kept: Iterable[str]) -> FlopShare:
    """The INT8 share when every node in ``flops`` is INT8 except ``kept``."""
    kept_set = set(kept) & set(flops)
    kept_list = sorted(((n, flops[n]) for n in kept_set), key=lambda item: -item[1])
    total = sum(flops.values())
    return FlopShare(
        int8_flops=total - sum(f for _, f in kept_list),
        total_flops=total,
        int8_nodes=len(flops) - len(kept_set),
        total_nodes=len(flops),
        kept=tuple(kept_list),
    )


def loss_per_flop(scores: Sequence[tuple[str, float]], flops: dict[str, int]) -> list[tuple[str, float]]:
    """Rank layers for fallback: accuracy lost per FLOP that keeping them in floating point costs, worst first."""
    ranked = [(n, s / max(flops.get(n, 1), 1)) for n, s in scores]
    return sorted(ranked, key=lambda item: -item[1])
