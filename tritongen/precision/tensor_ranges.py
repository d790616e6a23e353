"""Per-tensor choice of the calibration range (``--calib-method auto``, the default).

Min/max keeps every value representable, which is right for most activations. Where a handful of outliers
dominate the range (the largest ``|x|`` is more than :data:`OUTLIER_RATIO` times the 99.99th percentile),
min/max spends most of the 255 levels on values that almost never occur: those tensors take the percentile
range instead (the outliers saturate). The choice is per tensor, recorded in the manifest, and passed to
``quantize_static`` as ``TensorQuantOverrides`` (symmetric ``rmin = -r``, ``rmax = r``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .probe import run_exposed

PERCENTILE = 99.99
OUTLIER_RATIO = 4.0
_TOP_SHARE = 1e-3  # each batch keeps its largest 0.1% of |x|: ten times what the percentile needs


@dataclass(frozen=True)
class RangeChoice:
    tensor: str
    method: str  # "minmax" or "percentile"
    absmax: float
    percentile: float  # the PERCENTILE-th percentile of |x|

    @property
    def range(self) -> float:
        return self.percentile if self.method == "percentile" else self.absmax

    def to_dict(self) -> dict[str, Any]:
        return {"tensor": self.tensor, "method": self.method, "absmax": self.absmax, "percentile": self.percentile}


def activation_inputs(model: Any, ops: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    """The activation (non-initializer) inputs 0 of weighted ``ops`` nodes, in graph order, once each."""
    inits = {i.name for i in model.graph.initializer}
    seen: list[str] = []
    for n in model.graph.node:
        if n.op_type in ops and n.name not in exclude and len(n.input) > 1 and n.input[1] in inits:
            if n.input[0] not in inits and n.input[0] not in seen:
                seen.append(n.input[0])
    return seen


def range_choices(model: Any, tensors: Sequence[str], batches: Sequence[dict]) -> list[RangeChoice]:
    """Measure ``tensors`` of ``model`` (a ModelProto with its weights) on ``batches`` and choose each range."""
    tops: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    counts = dict.fromkeys(tensors, 0)

    def fold(name: str, value: np.ndarray) -> None:
        flat = np.abs(value.astype(np.float32).ravel())
        keep = min(flat.size, int(np.ceil(_TOP_SHARE * flat.size)) + 1)
        tops[name].append(np.partition(flat, flat.size - keep)[flat.size - keep :])
        counts[name] += flat.size

    run_exposed(model, list(tensors), batches, fold)
    out = []
    for t in tensors:
        merged = np.sort(np.concatenate(tops[t]))[::-1] if tops[t] else np.zeros(1, np.float32)
        k = max(1, int(np.ceil((1.0 - PERCENTILE / 100.0) * counts[t])))
        absmax, pct = float(merged[0]), float(merged[min(k, merged.size) - 1])
        method = "percentile" if pct > 0 and absmax > OUTLIER_RATIO * pct else "minmax"
        out.append(RangeChoice(t, method, absmax, pct))
    return out


def quant_overrides(choices: Sequence[RangeChoice]) -> dict[str, list[dict[str, np.float32]]]:
    """``TensorQuantOverrides`` for the tensors whose range is not the calibrator's min/max."""
    return {
        c.tensor: [{"rmin": np.float32(-c.range), "rmax": np.float32(c.range)}] for c in choices if c.method != "minmax"
    }
