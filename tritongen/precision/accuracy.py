"""Accuracy of a precision variant against the FP32 reference: per output max abs/rel error, cosine, top-1.

Cosine similarity is taken per sample (each row of the batch, flattened), so one bad sample shows in the
minimum even when the mean looks fine. Top-1 agreement (argmax over the last axis) is measured for
outputs shaped ``[batch, classes]`` when a ``min_top1`` bar is set (an embedding has no meaningful top-1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class OutputAccuracy:
    output: str
    samples: int
    max_abs_err: float
    max_rel_err: float
    cosine_mean: float
    cosine_min: float
    top1: float | None  # agreement of argmax over the last axis, for [batch, classes] outputs

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "samples": self.samples,
            "max_abs_err": self.max_abs_err,
            "max_rel_err": self.max_rel_err,
            "cosine_mean": self.cosine_mean,
            "cosine_min": self.cosine_min,
            "top1": self.top1,
        }


@dataclass(frozen=True)
class AccuracyReport:
    outputs: tuple[OutputAccuracy, ...]
    min_cosine: float
    min_top1: float | None

    @property
    def cosine_mean(self) -> float:
        return min(o.cosine_mean for o in self.outputs)

    @property
    def cosine_min(self) -> float:
        return min(o.cosine_min for o in self.outputs)

    @property
    def top1(self) -> float | None:
        values = [o.top1 for o in self.outputs if o.top1 is not None]
        return min(values) if values else None

    def failures(self) -> list[str]:
        """Why the variant is below the bar (empty when it passes).

        The bar: mean cosine >= ``min_cosine`` and minimum cosine >= ``min_cosine - 0.01`` for every output,
        top-1 agreement >= ``min_top1`` when set; NaN anywhere fails.
        """
        problems = []
        floor = self.min_cosine - 0.01
        for o in self.outputs:
            if not np.isfinite(o.cosine_mean) or not np.isfinite(o.max_abs_err):
                problems.append(f"{o.output}: NaN or Inf in the outputs")
                continue
            if o.cosine_mean < self.min_cosine:
                problems.append(f"{o.output}: mean cosine {o.cosine_mean:.4f} < {self.min_cosine:g}")
            if o.cosine_min < floor:
                problems.append(f"{o.output}: min cosine {o.cosine_min:.4f} < {floor:g}")
            if self.min_top1 is not None and o.top1 is not None and o.top1 < self.min_top1:
                problems.append(f"{o.output}: top-1 agreement {o.top1:.4f} < {self.min_top1:g}")
        if self.min_top1 is not None and self.top1 is None:
            problems.append("--min-top1 is set but no output is shaped [batch, classes]")
        return problems

    @property
    def ok(self) -> bool:
        return not self.failures()

    def table(self) -> str:
        rows = [
            f"{'output':<20} {'samples':>7} {'max abs err':>12} "
            f"{'max rel err':>12} {'cos mean':>9} {'cos min':>9} {'top-1':>7}"
        ]
        for o in self.outputs:
            top1 = f"{o.top1:.4f}" if o.top1 is not None else "-"
            rows.append(
                f"{o.output:<20} {o.samples:>7} {o.max_abs_err:>12.3g} {o.max_rel_err:>12.3g} "
                f"{o.cosine_mean:>9.5f} {o.cosine_min:>9.5f} {top1:>7}"
            )
        bar = f"(bar: mean cosine >= {self.min_cosine:g}, min cosine >= {self.min_cosine - 0.01:g}"
        rows.append(bar + (f", top-1 >= {self.min_top1:g})" if self.min_top1 is not None else ")"))
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "min_cosine": self.min_cosine,
            "min_top1": self.min_top1,
            "cosine_mean": self.cosine_mean,
            "cosine_min": self.cosine_min,
            "top1": self.top1,
            "failures": self.failures(),
            "outputs": [o.to_dict() for o in self.outputs],
        }


def _rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1) if a.ndim >= 2 else a.reshape(1, -1)


def _cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    g, w = _rows(got), _rows(want)
    ng, nw = np.linalg.norm(g, axis=1), np.linalg.norm(w, axis=1)
    dot = np.sum(g * w, axis=1)
    both_zero = (ng == 0) & (nw == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(both_zero, 1.0, dot / np.maximum(ng * nw, np.finfo(np.float64).tiny))
    return cos


def accuracy_from_outputs(
    names: Sequence[str],
    got: Sequence[Sequence[np.ndarray]],
    want: Sequence[Sequence[np.ndarray]],
    min_cosine: float,
    min_top1: float | None = None,
) -> AccuracyReport:
    """Compare batches of outputs (``got[batch][output]``) with the reference, output by output."""
    results = []
    for i, name in enumerate(names):
        g_all = [np.asarray(b[i]) for b in got]
        w_all = [np.asarray(b[i]) for b in want]
        cos = np.concatenate([_cosines(g, w) for g, w in zip(g_all, w_all)])
        diffs = [np.abs(g.astype(np.float64) - w.astype(np.float64)) for g, w in zip(g_all, w_all)]
        max_abs = max(float(np.max(d)) if d.size else 0.0 for d in diffs)
        max_rel = max(
            float(np.max(d / np.maximum(np.abs(w.astype(np.float64)), 1e-6))) if d.size else 0.0
            for d, w in zip(diffs, w_all)
        )
        top1 = None
        if min_top1 is not None and all(w.ndim == 2 and w.shape[1] > 1 for w in w_all):
            agree = np.concatenate([np.argmax(g, axis=1) == np.argmax(w, axis=1) for g, w in zip(g_all, w_all)])
            top1 = float(np.mean(agree))
        results.append(
            OutputAccuracy(name, int(cos.size), max_abs, max_rel, float(np.mean(cos)), float(np.min(cos)), top1)
        )
    return AccuracyReport(tuple(results), float(min_cosine), None if min_top1 is None else float(min_top1))
