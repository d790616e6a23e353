"""SmoothQuant-style scale migration: move activation outliers into the weights before INT8 calibration.

A weight MatMul ``y = x @ W`` equals ``(x / s) @ (diag(s) W)`` for any per-channel ``s > 0``. With
``s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)`` the activation's outlier channels shrink and the weights'
rows grow, so both quantize per tensor / per channel with less error (Xiao et al., SmoothQuant, 2023).
Two patterns are found by graph structure, not by names:

- **LayerNormalization -> weight MatMul(s)** (Q, K, V; the FFN up-projection): ``1/s`` is folded into the
  LayerNorm's gamma and beta, ``s`` into every consumer's weight rows. Any other reader of the LayerNorm output
  (a post-LN residual Add, a Shape) reads ``Mul(x / s, s)``, the original tensor.
- **GELU -> weight MatMul** (the FFN down-projection): GELU does not commute with a per-channel scale, so an
  explicit ``Mul(1/s)`` feeds the MatMul and ``s`` goes into its weight rows.

In floating point the migrated graph computes the same function as the original (up to rounding).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .probe import channel_absmax

ALPHA_NORM = 0.7  # LayerNorm-fed MatMuls (design notes, section 8)
ALPHA_GELU = 0.8  # GELU-fed MatMuls
GELU_TAIL_OPS = ("Mul", "Div", "Add")  # ops a decomposed GELU may end with after Erf/Tanh
_EPS = 1e-5


@dataclass(frozen=True)
class SmoothedGroup:
    tensor: str  # the activation whose channels were divided by s
    kind: str  # "layernorm" | "gelu"
    matmuls: tuple[str, ...]
    alpha: float
    scale_max: float  # largest s (how much migration happened)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensor": self.tensor,
            "kind": self.kind,
            "matmuls": list(self.matmuls),
            "alpha": self.alpha,
            "scale_max": self.scale_max,
        }


@dataclass(frozen=True)
class _Group:
    tensor: str
    kind: str
    producer: Any  # NodeProto
    position: int  # the producer's index in graph.node
    matmuls: tuple[Any, ...]  # NodeProto


def _is_gelu(node: Any, producers: dict[str, Any], depth: int = 4) -> bool:
    """``node`` ends a GELU: a Gelu op, or a Mul/Div/Add chain reaching Erf or Tanh within ``depth`` steps."""
    if node.op_type in ("Gelu", "FastGelu", "BiasGelu"):
        return True
    if node.op_type not in GELU_TAIL_OPS or depth == 0:
        return False
    for name in node.input:
        parent = producers.get(name)
        if parent is not None and (parent.op_type in ("Erf", "Tanh") or _is_gelu(parent, producers, depth - 1)):
            return True
    return False


def smoothing_groups(model: Any) -> list[_Group]:
    """Weight MatMuls grouped by activation input, for activations a LayerNorm or a GELU produces."""
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    position = {o: k for k, n in enumerate(model.graph.node) for o in n.output}
    readers: dict[str, list[Any]] = defaultdict(list)
    for n in model.graph.node:
        if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in inits and len(inits[n.input[1]].dims) == 2:
            if n.input[0] not in inits:
                readers[n.input[0]].append(n)
    groups = []
    for tensor, matmuls in readers.items():
        producer = producers.get(tensor)
        if producer is None:
            continue
        k = inits[matmuls[0].input[1]].dims[0]
        if producer.op_type == "LayerNormalization" and _layernorm_foldable(producer, inits, k):
            groups.append(_Group(tensor, "layernorm", producer, position[tensor], tuple(matmuls)))
        elif _is_gelu(producer, producers):
            groups.append(_Group(tensor, "gelu", producer, position[tensor], tuple(matmuls)))
    return groups


def _layernorm_foldable(node: Any, inits: dict[str, Any], channels: int) -> bool:
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    if axis != -1 or len(node.input) < 2 or node.input[1] not in inits:
        return False
    if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
        return False
    return list(inits[node.input[1]].dims) == [channels]


def _own(model: Any, node: Any, index: int, users: dict[str, int]) -> Any:
    """The initializer ``node.input[index]`` reads, copied under a new name first if other nodes read it too."""

    name = node.input[index]
    init = next(i for i in model.graph.initializer if i.name == name)
    if users[name] <= 1:
        return init
    copy = model.graph.initializer.add()  # the graph's own message: append() would store a copy of a new one
    copy.CopyFrom(init)
    copy.name = f"{name}_smooth_{node.name or id(node)}"
    node.input[index] = copy.name
    users[name] -= 1
    users[copy.name] = 1
    return copy


def _set(init: Any, values: np.ndarray) -> None:
    from onnx import numpy_helper

    init.CopyFrom(numpy_helper.from_array(values.astype(numpy_helper.to_array(init).dtype), init.name))


def _scale_tensor(model: Any, name: str, values: np.ndarray) -> str:
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(values.astype(np.float32), name))
    return name


def smooth_model(
    model: Any, batches: list[dict], alpha_norm: float = ALPHA_NORM, alpha_gelu: float = ALPHA_GELU
) -> tuple[Any, tuple[SmoothedGroup, ...]]:
    """Migrate scales in ``model`` (an ``onnx.ModelProto`` with its weights loaded), in place."""
    import onnx
    from onnx import numpy_helper

    groups = smoothing_groups(model)
    if not groups:
        return model, ()
    amax = channel_absmax(model, [g.tensor for g in groups], batches)
    users: dict[str, int] = defaultdict(int)
    for n in model.graph.node:
        for name in n.input:
            users[name] += 1
    done = []
    new_nodes: list[tuple[Any, int]] = []  # (node to insert, after the node at this index)
    for g in groups:
        alpha = alpha_norm if g.kind == "layernorm" else alpha_gelu
        weights = [_own(model, m, 1, users) for m in g.matmuls]
        arrays = [numpy_helper.to_array(w).astype(np.float64) for w in weights]
        w_max = np.max(np.stack([np.max(np.abs(a), axis=1) for a in arrays]), axis=0)
        x_max = amax[g.tensor]
        s = np.maximum(x_max, _EPS) ** alpha / np.maximum(w_max, _EPS) ** (1.0 - alpha)
        s = np.clip(s, _EPS, 1.0 / _EPS)
        s = np.where(np.isfinite(s), s, 1.0).astype(np.float32).astype(np.float64)
        for w, a in zip(weights, arrays):
            _set(w, a * s[:, None])
        smoothed = f"{g.tensor}_smoothed"
        if g.kind == "layernorm":
            for index in (1, 2):
                if len(g.producer.input) > index and g.producer.input[index]:
                    init = _own(model, g.producer, index, users)
                    _set(init, numpy_helper.to_array(init).astype(np.float64) / s)
            g.producer.output[0] = smoothed  # every other reader keeps the original name: Mul(x / s, s)
            scale = _scale_tensor(model, f"{g.tensor}_smooth_scale", s)
            restore = onnx.helper.make_node("Mul", [smoothed, scale], [g.tensor], name=f"{g.producer.name}_unsmooth")
            new_nodes.append((restore, g.position))
        else:
            scale = _scale_tensor(model, f"{g.tensor}_smooth_inv_scale", 1.0 / s)
            divide = onnx.helper.make_node("Mul", [g.tensor, scale], [smoothed], name=f"{g.producer.name}_smooth")
            new_nodes.append((divide, g.position))
        for m in g.matmuls:
            m.input[0] = smoothed
        done.append(SmoothedGroup(g.tensor, g.kind, tuple(m.name for m in g.matmuls), alpha, float(np.max(s))))
    _insert_after(model, new_nodes)
    return model, tuple(done)


def _insert_after(model: Any, pairs: list[tuple[Any, int]]) -> None:
    """Insert each new node right after the node at its index, keeping the node list topologically sorted."""
    after: dict[int, list[Any]] = defaultdict(list)
    for node, anchor in pairs:
        after[anchor].append(node)
    ordered = []
    for k, n in enumerate(model.graph.node):
        ordered.append(n)
        ordered.extend(after.get(k, []))
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del model.graph.node[:]
    model.graph.node.extend(copies)


def smoothed_onnx_from_onnx(
    src: Path, dst: Path, batches: list[dict], alpha_norm: float = ALPHA_NORM, alpha_gelu: float = ALPHA_GELU
) -> tuple[Path, tuple[SmoothedGroup, ...]]:
    """Write the scale-migrated ``src`` to ``dst`` (weights as external data beside it). The migration computes
    the same function: checked on the first batch, and where the migrated graph answers otherwise (a weight-sharing
    pattern the migration does not know) ``src`` itself is returned, unmigrated, and a warning logged."""
    import onnx

    from ..export import ONNX_DATA_FILENAME

    model = onnx.load(str(src))
    model, groups = smooth_model(model, batches, alpha_norm, alpha_gelu)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    (dst.parent / ONNX_DATA_FILENAME).unlink(missing_ok=True)
    onnx.save(model, str(dst), save_as_external_data=True, location=ONNX_DATA_FILENAME, size_threshold=1024)
    if groups and batches:
        changed = _answers_differ(src, dst, batches[0])
        if changed:
            logging.getLogger(__name__).warning("scale migration left out: %s", changed)
            return src, ()
    return dst, groups


def _answers_differ(src: Path, dst: Path, batch: dict) -> str | None:
    """Where the migrated ``dst`` answers ``batch`` otherwise than ``src`` beyond float rounding: which output, by
    how much; None where they agree."""
    from ..ort_session import onnx_session

    want_session, got_session = onnx_session(src), onnx_session(dst)
    feed = {i.name: batch[i.name] for i in want_session.get_inputs() if i.name in batch}
    want, got = want_session.run(None, feed), got_session.run(None, feed)
    for meta, w, g in zip(want_session.get_outputs(), want, got):
        if np.asarray(w).dtype.kind not in "fiub":  # text: nothing the scales move
            continue
        w, g = np.asarray(w, np.float64), np.asarray(g, np.float64)
        if w.shape != g.shape:
            return f"output '{meta.name}' changed shape {list(w.shape)} -> {list(g.shape)}"
        finite = np.isfinite(w)
        if not np.array_equal(finite, np.isfinite(g)) or not np.array_equal(w[~finite], g[~finite], equal_nan=True):
            return f"output '{meta.name}' changed where it is not finite (inf or NaN)"
        w, g = w[finite], g[finite]
        scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
        error = float(np.max(np.abs(g - w))) if w.size else 0.0
        if not error <= 1e-3 * scale:
            return f"output '{meta.name}' moved by {error:.3g} (largest value {scale:.3g})"
    return None
