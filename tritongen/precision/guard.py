"""Accuracy guard: build a precision variant, measure it against the FP32 reference, fall back layer by layer.

1. Build the variant with the default policy (FP16: overflow-prone ops in FP32; INT8: Q/DQ on weighted
   Conv/Gemm/MatMul) and measure it on held-out samples against the reference outputs.
2. Below the bar: per-layer sensitivity. Each candidate layer is converted *alone* and measured on a few
   held-out batches; its loss (1 - mean cosine, plus the top-1 loss when that is gated) ranks it.
3. Rank the layers by loss per FLOP that keeping them in FP32 would cost (INT8: weight-GEMM FLOPs on a real
   batch; FP16: loss alone) and keep the first k in FP32, with the smallest k whose predicted loss (the sum of
   the remaining layers' losses) fits in three quarters of the allowed loss; measure again; double k on failure,
   at most ``max_attempts`` builds in all, fewer when an attempt would keep every layer in FP32 (no variant left:
   the failure says "retries skipped" and why). The kept layers and every attempt's figures are reported; if no
   attempt passes the build fails with that report, and its fix names the bars that failed with the measured
   figures (a ``--max-abs-error`` bar to raise to the measured error). Nothing below the bar is returned.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TritongenError
from ..ort_session import loads_in_a_child
from ..progress import Progress
from .accuracy import AccuracyReport, accuracy_from_outputs
from .calibration import CalibrationData
from .flops import FlopShare, flop_share, loss_per_flop, recurrent_nodes, weight_gemm_flops

DEFAULT_MAX_ATTEMPTS = 4
SENSITIVITY_SAMPLES = 32  # held-out samples used to rank layers (the full held-out set checks each attempt)


@dataclass(frozen=True)
class Attempt:
    kept: tuple[str, ...]  # layers kept in FP32 beyond the default policy
    accuracy: AccuracyReport

    def to_dict(self) -> dict[str, Any]:
        return {"kept_layers": list(self.kept), "accuracy": self.accuracy.to_dict()}


@dataclass(frozen=True)
class GuardResult:
    precision: str
    onnx_path: Path
    accuracy: AccuracyReport
    attempts: tuple[Attempt, ...]
    sensitivity: tuple[tuple[str, float], ...]  # (layer, loss when converted alone), worst first; empty if not needed
    calibration: dict[str, Any]
    flops: FlopShare | None = None  # INT8: the share of weight-GEMM FLOPs that runs in INT8
    # calibration data given: the first held-out batch and its FP32 PyTorch outputs, which the build saves as the
    # samples infer --check sends (data like the guard's, not the build's random samples a calibrated range misses)
    check_sample: tuple[Mapping[str, np.ndarray], list[np.ndarray]] | None = None

    @property
    def kept_layers(self) -> tuple[str, ...]:
        return self.attempts[-1].kept

    @property
    def guard_kicked_in(self) -> bool:
        return len(self.attempts) > 1

    def summary(self) -> str:
        a = self.accuracy
        top1 = f", top-1 {a.top1:.4f}" if a.top1 is not None else ""
        kept = (
            f"; kept {len(self.kept_layers)} layer(s) in FP32 after {len(self.attempts)} attempts"
            if self.guard_kicked_in
            else ""
        )
        share = f"; {self.flops.text()}" if self.flops is not None else ""
        return f"{self.precision}: cosine mean {a.cosine_mean:.5f} min {a.cosine_min:.5f}{top1}{kept}{share}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "ok": self.accuracy.ok,
            "accuracy": self.accuracy.to_dict(),
            "kept_layers": list(self.kept_layers),
            "attempts": [t.to_dict() for t in self.attempts],
            "sensitivity": [{"layer": n, "loss": s} for n, s in self.sensitivity[:20]],
            "calibration": self.calibration,
            **({"int8_weight_gemm_flops": self.flops.to_dict()} if self.flops is not None else {}),
        }


def outputs_from_onnx(path: Path, batches: Sequence[dict], output_names: Sequence[str]) -> list[list[np.ndarray]]:
    from ..parity import onnx_session

    session = onnx_session(path)
    names = [i.name for i in session.get_inputs()]
    return [session.run(list(output_names), {n: b[n] for n in names}) for b in batches]


def _loss(report: AccuracyReport) -> float:
    """1 - mean cosine of the cosine-judged outputs, plus the top-1 loss when gated, plus for each output judged
    by a given absolute-error bar its error as a share of that bar, in units of the allowed cosine loss."""
    judged = [o.cosine_mean for o in report.outputs if o.max_abs_error_bar is None]
    loss = 1.0 - min(judged) if judged else 0.0
    allowed = 1.0 - report.min_cosine
    for o in report.outputs:
        if o.max_abs_error_bar is not None and o.max_abs_error_bar > 0:
            loss += allowed * o.max_abs_err / o.max_abs_error_bar
    if report.min_top1 is not None and report.top1 is not None:
        loss += 1.0 - report.top1
    return max(loss, 0.0) if np.isfinite(loss) else float("inf")


class _Variant:
    """Builds one variant of ``src`` with a given set of kept layers (FP16 or INT8)."""

    def __init__(
        self, precision: str, src: Path, data: CalibrationData, method: str, work: Path, form: str = "tensorrt"
    ) -> None:
        self.precision, self.src, self.data, self.method, self.form = precision, src, data, method, form
        self.calibration: dict[str, Any] = {}
        self.flops: dict[str, int] = {}
        self.float_only: list[str] = []
        self.ranges: list[Any] | None = None
        if precision == "int8":
            self._prepare_int8(work)
        else:
            from .fp16 import fp16_candidates

            self.candidates = fp16_candidates(src)

    def _prepare_int8(self, work: Path) -> None:
        """Once for every attempt: migrate scales, choose the per-tensor ranges, count the FLOPs."""
        import onnx

        from .int8 import QUANTIZED_OPS, prepared_batches, weighted_nodes
        from .smoothquant import smoothed_onnx_from_onnx
        from .tensor_ranges import activation_inputs, range_choices

        self.candidates = weighted_nodes(self.src)[0]
        batches = prepared_batches(self.data, self.method)
        self.src, self.smoothed = smoothed_onnx_from_onnx(self.src, work / "smoothed" / self.src.name, batches)
        model = onnx.load(str(self.src))
        if self.method == "auto":
            self.ranges = range_choices(model, activation_inputs(model, QUANTIZED_OPS), batches)
        sample = (self.data.eval or self.data.calib)[0]
        self.flops = weight_gemm_flops(model, sample)
        self.float_only = recurrent_nodes(model)  # weighted, counted, never INT8

    def build(self, dst: Path, kept: Sequence[str]) -> Path:
        if self.precision == "fp16":
            from .fp16 import fp16_onnx_from_onnx

            return fp16_onnx_from_onnx(self.src, dst, keep_nodes=kept)
        from ..cpus import u8s8_saturates
        from .int8 import int8_onnx_from_onnx

        result = int8_onnx_from_onnx(
            self.src, dst, self.data, self.method, exclude_nodes=kept, smooth=False, ranges=self.ranges, form=self.form
        )
        if not self.calibration:
            clipped = [r.to_dict() for r in result.ranges if r.method != "minmax"]
            self.calibration = {
                "method": self.method,
                "samples": result.calib_samples,
                "cache_hit": result.cache_hit,
                "cache": str(result.cache_path),
                **self.data.to_dict(),
                "smoothquant": [g.to_dict() for g in self.smoothed],
                "percentile_tensors": clipped,  # --calib-method auto: tensors whose outliers set the range
                "qdq_pairs": result.qdq_form.pairs if result.qdq_form else None,
                "int8_form": result.form,  # where the Q/DQ sit: "tensorrt" (inputs) or "cpu" (Conv outputs too)
                # the CPU form measured on a host whose U8S8 kernels saturate (x86 without VNNI)
                **({"u8s8_saturation": u8s8_saturates()} if result.form == "cpu" else {}),
            }
        return result.onnx_path

    def only(self, dst: Path, layer: str) -> Path:
        """The variant with only ``layer`` converted (every other candidate kept)."""
        return self.build(dst, [c for c in self.candidates if c != layer])


def layer_sensitivity(
    variant: _Variant,
    work: Path,
    batches: Sequence[dict],
    reference: Sequence[Sequence[np.ndarray]],
    output_names: Sequence[str],
    min_cosine: float,
    min_top1: float | None,
    progress: Progress,
    max_abs_error: Mapping[str, float] | None = None,
) -> list[tuple[str, float]]:
    """Loss of each candidate layer converted alone, worst first."""
    scores = []
    for i, layer in enumerate(variant.candidates):
        path = variant.only(work / "probe", layer)
        report = accuracy_from_outputs(
            output_names,
            outputs_from_onnx(path, batches, output_names),
            reference,
            min_cosine,
            min_top1,
            max_abs_error=max_abs_error,
        )
        scores.append((layer, _loss(report)))
        if (i + 1) % 10 == 0:
            progress(f"      sensitivity: {i + 1}/{len(variant.candidates)} layers")
    shutil.rmtree(work / "probe", ignore_errors=True)
    return sorted(scores, key=lambda s: -s[1])


def _keep_count(scores: list[tuple[str, float]], budget: float) -> int:
    remaining = sum(s for _, s in scores)
    for k, (_, s) in enumerate(scores):
        if remaining <= budget:
            return k
        remaining -= s
    return len(scores)


def guarded_onnx_from_onnx(
    src: Path,
    work: Path,
    precision: str,
    data: CalibrationData,
    reference: Sequence[Sequence[np.ndarray]],
    output_names: Sequence[str],
    *,
    min_cosine: float,
    min_top1: float | None = None,
    method: str = "auto",
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    progress: Progress | None = None,
    int8_form: str = "tensorrt",
    max_abs_error: Mapping[str, float] | None = None,
    check: tuple[Mapping[str, np.ndarray], Sequence[np.ndarray]] | None = None,
) -> GuardResult:
    """The ``precision`` variant of ``src`` that meets the bar on ``data.eval`` against ``reference``, and on
    ``check`` (the batch ``infer --check`` will send, with its FP32 reference) on its own.

    ``reference[b]`` holds the FP32 reference outputs (PyTorch's) for ``data.eval[b]``. The variant is written
    under ``work``; the returned path is the one that passed. ``int8_form``: where an INT8 graph will run
    (:data:`.int8.INT8_FORMS`). ``max_abs_error``: outputs judged by their largest absolute error alone
    (:mod:`.accuracy`). ``check``: held to the same bar (and the row error bars measured on ``data.eval``, as
    ``infer --check`` applies them): a variant that passed on held-out calibration rows and failed on the samples
    the build saves was a build whose own ``infer --check`` read MISMATCH (MiniLM INT8 calibrated on random words:
    held-out mean cosine 0.9947, the saved sentences 0.9875). Raises :class:`TritongenError` with every
    attempt's figures when none passes.
    """
    say = progress or (lambda message: None)
    if precision not in ("fp16", "int8"):
        raise ValueError(precision)
    if len(reference) != len(data.eval):
        raise ValueError("one reference per evaluation batch")
    variant = _Variant(precision, src, data, method, work, int8_form)
    attempts: list[Attempt] = []
    scores: list[tuple[str, float]] = []
    # the check batch is measured with the held-out rows (first, so that the layer sensitivities see it) and on
    # its own; the worse of the two reports gives the fix's figures
    eval_batches, eval_reference = list(data.eval), [list(r) for r in reference]
    if check is not None and not any(b is check[0] for b in eval_batches):
        eval_batches.insert(0, dict(check[0]))
        eval_reference.insert(0, list(check[1]))
    check_reports: list[AccuracyReport] = []  # per attempt, when the check batch failed on its own

    def attempt(kept: Sequence[str]) -> tuple[Path, AccuracyReport]:
        path = variant.build(work / f"attempt-{len(attempts) + 1}", kept)
        crash = loads_in_a_child(path) if not attempts else None  # the first variant: every layer converted
        if crash is not None:
            raise TritongenError(
                f"ONNX Runtime, opening the {precision} variant of this model in a child process, ended with "
                f"{crash} (the guard's own session would take the build down with it)",
                "build with --precision fp32"
                + (" or fp16" if precision == "int8" else " or int8 --calib-data FILE")
                + " (ONNX Runtime's bug on this graph: a two-layer GRU in FP16 is one)",
            )
        report = accuracy_from_outputs(
            output_names,
            outputs_from_onnx(path, eval_batches, output_names),
            eval_reference,
            min_cosine,
            min_top1,
            max_abs_error=max_abs_error,
        )
        check_reports.clear()
        if check is not None and report.ok:
            checked = accuracy_from_outputs(
                output_names,
                outputs_from_onnx(path, [dict(check[0])], output_names),
                [list(check[1])],
                min_cosine,
                min_top1,
                max_abs_error=max_abs_error,
                row_error_bars=report.row_error_bars(),
            )
            where = "on the samples the build saves for infer --check"
            report = dataclasses.replace(report, also_failing=tuple(f"{where}: {f}" for f in checked.failures()))
            if not checked.ok:
                check_reports.append(checked)
        attempts.append(Attempt(tuple(kept), report))
        say(
            f"      attempt {len(attempts)} ({len(kept)} layer(s) kept in FP32): cosine mean {report.cosine_mean:.5f}"
            f" min {report.cosine_min:.5f}"
            + (f" top-1 {report.top1:.4f}" if report.top1 is not None else "")
            + (" ok" if report.ok else " below the bar")
            + (
                f" on the samples the build saves for infer --check (cosine mean {check_reports[0].cosine_mean:.5f}"
                f" min {check_reports[0].cosine_min:.5f})"
                if check_reports
                else ""
            )
        )
        return path, report

    path, report = attempt([])
    skipped, why = "", ""  # why the guard stopped before max_attempts builds, when it did (and the figures)
    if not report.ok and not variant.candidates:
        skipped = "the graph has no layer the guard can keep in FP32"
    elif not report.ok and max_attempts <= 1:
        skipped = f"at most {max_attempts} build is allowed"
    if not report.ok and variant.candidates and max_attempts > 1:
        probe_batches, probe_ref, rows = [], [], 0
        for b, r in zip(eval_batches, eval_reference):
            if rows >= SENSITIVITY_SAMPLES:
                break
            probe_batches.append(b)
            probe_ref.append(r)
            rows += data.rows(b)
        say(f"      below the bar: measuring the sensitivity of {len(variant.candidates)} layers")
        scores = layer_sensitivity(
            variant, work, probe_batches, probe_ref, output_names, min_cosine, min_top1, say, max_abs_error
        )
        budget = 0.75 * ((1.0 - min_cosine) + (0.0 if min_top1 is None else (1.0 - min_top1)))
        loss = dict(scores)
        order = [n for n, _ in loss_per_flop(scores, variant.flops)] if variant.flops else [n for n, _ in scores]
        predicted = _keep_count([(n, loss[n]) for n in order], budget)
        k = max(1, predicted)
        if predicted >= len(order):
            skipped = f"all {len(order)} layer(s) would have to stay in FP32 to fit the bar"
            why = (
                f"by the measured sensitivities (even the last-ranked layer alone, {order[-1]}, loses "
                f"{loss[order[-1]]:.3g}, beyond the allowed {budget:.3g}), which leaves no {precision} variant to try"
            )
        elif k >= len(order):  # one layer, whose predicted loss fits though the measured variant does not
            skipped = f"the next attempt would keep the only layer, {order[0]}, in FP32"
            why = f"which leaves no {precision} variant to try"
        while not report.ok and len(attempts) < max_attempts and k < len(order):
            path, report = attempt(order[:k])
            k = max(k + 1, 2 * k)
        if not report.ok and len(attempts) < max_attempts and k >= len(order) and not skipped:
            skipped = f"the next attempt would keep all {len(order)} layer(s) in FP32"
            why = f"(doubling the {len(attempts[-1].kept)} kept), which leaves no {precision} variant to try"
    result = GuardResult(
        precision=precision,
        onnx_path=path,
        accuracy=report,
        attempts=tuple(attempts),
        sensitivity=tuple(scores),
        calibration=dict(variant.calibration),
        flops=flop_share(variant.flops, [*attempts[-1].kept, *variant.float_only]) if variant.flops else None,
    )
    if not report.ok:
        lines = [
            f"attempt {i + 1}: kept {len(a.kept)} layer(s): " + "; ".join(a.accuracy.failures())
            for i, a in enumerate(attempts)
        ]
        if scores:
            lines.append("most sensitive layers: " + ", ".join(f"{n} ({s:.3g})" for n, s in scores[:5]))
        if result.flops is not None:
            lines.append(result.flops.text())
        lines.append(report.table())
        if len(eval_batches) > len(data.eval):
            lines.append(
                f"(measured on {data.eval_samples} held-out row(s) and the {data.rows(eval_batches[0])} row(s) the "
                "build saves for infer --check)"
            )
        if skipped:
            lines.insert(len(attempts), f"retries skipped: {skipped} {why}".rstrip())
        raise TritongenError(
            f"the {precision} variant stays below the accuracy bar after {len(attempts)} attempt(s)"
            + (f" of up to {max_attempts} (retries skipped: {skipped})" if skipped else ""),
            (
                "give more or more representative --calib-data or try another --calib-method; "
                if precision == "int8"
                else ""  # FP16 has no calibration: its ranges are the model's own
            )
            + f"if the loss is acceptable, {_relaxed_bars((check_reports or [report])[0], len(attempts))}; "
            "or use a higher --precision",
            details="\n".join(lines),
        )
    return result


def _above(value: float) -> str:
    """``value`` rounded up to two significant digits: a bar the measured value meets."""
    text = f"{value:.2g}"
    return text if float(text) >= value else f"{float(text) + 10 ** (math.floor(math.log10(value)) - 1):.2g}"


def _relaxed_bars(report: AccuracyReport, attempt: int = 1) -> str:
    """What to change for ``report`` (of attempt ``attempt``, the last) to pass: raise each failing
    ``--max-abs-error`` bar to the measured error, lower ``--min-cosine``/``--min-top1`` where those failed."""
    hints = []
    over = [
        o
        for o in report.outputs
        if o.max_abs_error_bar is not None and np.isfinite(o.max_abs_err) and o.max_abs_err > o.max_abs_error_bar
    ]
    for o in over:
        hints.append(
            f"raise --max-abs-error for {o.output} to its measured max abs error {o.max_abs_err:.4g}"
            + (f" (attempt {attempt})" if attempt > 1 else "")
            + f": --max-abs-error {o.output}={_above(o.max_abs_err)}"
        )
    failures = report.failures()
    if any("cosine" in f for f in failures):
        hints.append(
            f"lower --min-cosine (mean cosine measured {report.cosine_mean:.6g}) or give --max-abs-error OUTPUT=VALUE "
            "(outputs whose meaning is absolute)"
        )
    if any("top-1" in f for f in failures):
        hints.append("lower --min-top1" + (f" (measured {report.top1:.6g})" if report.top1 is not None else ""))
    return "; or ".join(hints) if hints else "lower --min-cosine/--min-top1"
