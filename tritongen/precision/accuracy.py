"""Accuracy of a precision variant against the FP32 reference: per output max abs/rel error, cosine, top-1.

Cosine similarity is taken per sample (each row of the batch, flattened), so one bad sample shows in the
minimum even when the mean looks fine. Top-1 agreement (argmax over the last axis) is measured for
outputs shaped ``[batch, classes]`` when a ``min_top1`` bar is set (an embedding has no meaningful top-1).

Outputs whose meaning is absolute (box offsets, landmarks) are judged by error, not direction:

- ``--max-abs-error OUTPUT=VALUE`` (``max_abs_error``): OUTPUT passes when its largest absolute error is <= VALUE;
  its cosine is reported, not gated.
- Default, for every other output: the cosine bar, except that a sample whose error vector (all its values) is no
  longer than the output's *row error bar*, :data:`ROW_ERROR_OF_RANGE` (10%) of the FP32 output's range (max - min
  over the held-out samples), passes the per-sample minimum whatever its cosine. A row of values near 0 (an MTCNN
  box offset of a well-centred crop) has no meaningful direction: ONet's INT8 box error (about 0.04, a 20th of a
  typical row's length) turns such rows by 15-20 degrees. The mean cosine is still gated, a sample off by more
  still needs the floor, and since the bar is a length over the whole row, a wide output (an embedding, whose
  rows are far longer than a tenth of its values' range) gains nothing from it.

The resolved bars (absolute values) are recorded, so ``tritongen infer --check`` applies the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

ROW_ERROR_OF_RANGE = 0.1  # default row error bar: 10% of the output's FP32 range, as an error-vector length


def bar_text(bar: float) -> str:
    """A bar as given, to 12 significant digits: 0.99999999 stays 0.99999999 (``:g`` would print 1)."""
    return f"{bar:.12g}"


def compared(value: float, sign: str, bar: float, style: str = "f") -> str:
    """``"value sign bar"`` (``sign`` ``<`` or ``>``, which holds) with as many digits as it takes to read true:
    a mean cosine of 0.99988 against 0.99999 shows as ``0.99988 < 0.99999``, not ``0.9999 < 0.99999``. ``style``:
    ``f`` (decimals, from 4) or ``g`` (significant digits, from 4)."""
    holds = (lambda a, b: a < b) if sign == "<" else (lambda a, b: a > b)
    shown_bar = bar_text(bar)
    own = 0  # at least the bar's own digits: 0.99999 is met with 0.99988, not 0.9999
    if np.isfinite(bar):
        decimal = Decimal(shown_bar).as_tuple()
        own = len(decimal.digits) if style == "g" else -int(decimal.exponent)
    for digits in range(max(4, own), 18):
        shown = f"{value:.{digits}{style}}"
        if holds(float(shown), float(shown_bar)):
            return f"{shown} {sign} {shown_bar}"
    return f"{float(value)!r} {sign} {float(bar)!r}"


@dataclass(frozen=True)
class OutputAccuracy:
    output: str
    samples: int
    max_abs_err: float
    max_rel_err: float
    cosine_mean: float
    cosine_min: float
    top1: float | None  # agreement of argmax over the last axis, for [batch, classes] outputs
    max_abs_error_bar: float | None = None  # --max-abs-error: judged by max_abs_err <= this alone
    row_error_bar: float = 0.0  # samples whose error vector is at most this long pass the per-sample floor
    cosine_min_gated: float | None = None  # min cosine over the samples off by more (None: none is)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "samples": self.samples,
            "max_abs_err": self.max_abs_err,
            "max_rel_err": self.max_rel_err,
            "cosine_mean": self.cosine_mean,
            "cosine_min": self.cosine_min,
            "top1": self.top1,
            "max_abs_error_bar": self.max_abs_error_bar,
            "row_error_bar": self.row_error_bar,
            "cosine_min_gated": self.cosine_min_gated,
        }


@dataclass(frozen=True)
class AccuracyReport:
    outputs: tuple[OutputAccuracy, ...]
    min_cosine: float
    min_top1: float | None
    also_failing: tuple[str, ...] = ()  # failures measured elsewhere (the guard's check batch), with their place

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

        The bar: an output with a ``--max-abs-error`` bar has max abs error <= that bar; every other output has
        mean cosine >= ``min_cosine`` and minimum cosine >= ``min_cosine - 0.01`` over the samples whose error
        vector is longer than its row error bar; top-1 agreement >= ``min_top1`` when set; NaN anywhere fails.
        """
        problems = []
        floor = self.min_cosine - 0.01
        for o in self.outputs:
            if not np.isfinite(o.cosine_mean) or not np.isfinite(o.max_abs_err):
                problems.append(f"{o.output}: NaN or Inf in the outputs")
                continue
            if o.max_abs_error_bar is not None:
                if o.max_abs_err > o.max_abs_error_bar:
                    problems.append(
                        f"{o.output}: max abs error {compared(o.max_abs_err, '>', o.max_abs_error_bar, 'g')} "
                        "(--max-abs-error)"
                    )
                continue
            if o.cosine_mean < self.min_cosine:
                problems.append(f"{o.output}: mean cosine {compared(o.cosine_mean, '<', self.min_cosine)}")
            if o.cosine_min_gated is not None and o.cosine_min_gated < floor:
                problems.append(
                    f"{o.output}: min cosine {compared(o.cosine_min_gated, '<', floor)} on a sample whose error is "
                    f"longer than {o.row_error_bar:.4g} ({ROW_ERROR_OF_RANGE:.0%} of its FP32 range)"
                )
            if self.min_top1 is not None and o.top1 is not None and o.top1 < self.min_top1:
                problems.append(f"{o.output}: top-1 agreement {compared(o.top1, '<', self.min_top1)}")
        if self.min_top1 is not None and self.top1 is None:
            problems.append("--min-top1 is set but no output is shaped [batch, classes]")
        return problems + list(self.also_failing)

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
        bar = f"(bar: mean cosine >= {bar_text(self.min_cosine)}, min cosine >= {bar_text(self.min_cosine - 0.01)}"
        rows.append(bar + (f", top-1 >= {bar_text(self.min_top1)})" if self.min_top1 is not None else ")"))
        given = [f"{o} <= {bar_text(v)}" for o, v in self.max_abs_errors().items()]
        if given:
            rows.append("(judged by max abs error instead: " + ", ".join(given) + ")")
        return "\n".join(rows)

    def max_abs_errors(self) -> dict[str, float]:
        """The ``--max-abs-error`` bars."""
        return {o.output: o.max_abs_error_bar for o in self.outputs if o.max_abs_error_bar is not None}

    def row_error_bars(self) -> dict[str, float]:
        """Each cosine-judged output's resolved row error bar (what ``infer --check`` applies again)."""
        return {o.output: o.row_error_bar for o in self.outputs if o.max_abs_error_bar is None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "min_cosine": self.min_cosine,
            "min_top1": self.min_top1,
            "cosine_mean": self.cosine_mean,
            "cosine_min": self.cosine_min,
            "top1": self.top1,
            "failures": self.failures(),
            "max_abs_error": self.max_abs_errors(),
            "row_error_bars": self.row_error_bars(),
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


def row_error_bar(want: Sequence[np.ndarray]) -> float:
    """:data:`ROW_ERROR_OF_RANGE` of the reference's range (max - min over every sample)."""
    sized = [np.asarray(w, dtype=np.float64) for w in want if np.asarray(w).size]
    if not sized:
        return 0.0
    span = max(float(np.max(w)) for w in sized) - min(float(np.min(w)) for w in sized)
    return ROW_ERROR_OF_RANGE * span if np.isfinite(span) else 0.0


def accuracy_from_outputs(
    names: Sequence[str],
    got: Sequence[Sequence[np.ndarray]],
    want: Sequence[Sequence[np.ndarray]],
    min_cosine: float,
    min_top1: float | None = None,
    *,
    max_abs_error: Mapping[str, float] | None = None,
    row_error_bars: Mapping[str, float] | None = None,
) -> AccuracyReport:
    """Compare batches of outputs (``got[batch][output]``) with the reference, output by output.

    ``max_abs_error``: outputs judged by their largest absolute error alone. ``row_error_bars``: the other outputs'
    row error bars as a manifest recorded them; an output without one gets :func:`row_error_bar` of the reference.
    """
    given = dict(max_abs_error or {})
    recorded = dict(row_error_bars or {})
    results = []
    for i, name in enumerate(names):
        g_all = [np.asarray(b[i]) for b in got]
        w_all = [np.asarray(b[i]) for b in want]
        cos = np.concatenate([_cosines(g, w) for g, w in zip(g_all, w_all)])
        # a row of no values (a 0-length dimension) agrees trivially: it counts among the samples, not the cosines
        holds = np.concatenate([np.full(_rows(w).shape[0], _rows(w).shape[1] > 0) for w in w_all])
        judged = cos[holds] if holds.any() else cos
        diffs = [np.abs(g.astype(np.float64) - w.astype(np.float64)) for g, w in zip(g_all, w_all)]
        max_abs = max(float(np.max(d)) if d.size else 0.0 for d in diffs)
        row_bar = float(recorded[name]) if name in recorded else row_error_bar(w_all)
        row_err = np.concatenate([np.linalg.norm(_rows(d), axis=1) for d in diffs])
        off = cos[~(row_err <= row_bar)]  # NaN errors count as off
        gated = float(np.min(off)) if off.size else None
        max_rel = max(
            float(np.max(d / np.maximum(np.abs(w.astype(np.float64)), 1e-6))) if d.size else 0.0
            for d, w in zip(diffs, w_all)
        )
        top1 = None
        if min_top1 is not None and all(w.ndim == 2 and w.shape[1] > 1 for w in w_all):
            agree = np.concatenate([np.argmax(g, axis=1) == np.argmax(w, axis=1) for g, w in zip(g_all, w_all)])
            top1 = float(np.mean(agree))
        results.append(
            OutputAccuracy(
                name,
                int(cos.size),
                max_abs,
                max_rel,
                float(np.mean(judged)),
                float(np.min(judged)),
                top1,
                max_abs_error_bar=float(given[name]) if name in given else None,
                row_error_bar=row_bar,
                cosine_min_gated=gated,
            )
        )
    return AccuracyReport(tuple(results), float(min_cosine), None if min_top1 is None else float(min_top1))
