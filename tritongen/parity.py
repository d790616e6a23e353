"""Parity gate: ONNX Runtime (CPU) against PyTorch on the same inputs, per output.

A pair of arrays passes when ``|onnx - torch| <= atol + rtol * |torch|`` everywhere (NumPy's ``allclose``
rule) and neither holds NaN where the other does not. The report keeps the worst absolute and relative
errors so a failure says exactly which output drifted and by how much.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TritongenError
from .ort_session import onnx_session
from .spec import BuildSpec


@dataclass(frozen=True)
class OutputParity:
    case: str  # "batch 1", "batch 32", ...
    output: str
    shape: tuple[int, ...]
    max_abs_err: float
    max_rel_err: float
    ok: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "output": self.output,
            "shape": list(self.shape),
            "max_abs_err": self.max_abs_err,
            "max_rel_err": self.max_rel_err,
            "ok": self.ok,
            "note": self.note,
        }


@dataclass(frozen=True)
class ParityReport:
    atol: float
    rtol: float
    results: tuple[OutputParity, ...]
    # what was compared with what, as the table's tolerance line names them: the exported graph with PyTorch at a
    # build, the server's answers with the build's PyTorch reference at tritongen infer --check
    got: str = "onnx"
    want: str = "torch"

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def table(self) -> str:
        width = max([10] + [len(r.case) for r in self.results])
        rows = [f"{'case':<{width}} {'output':<20} {'shape':<18} {'max abs err':>12} {'max rel err':>12}  result"]
        for r in self.results:
            verdict = "ok" if r.ok else "FAIL" + (f" ({r.note})" if r.note else "")
            rows.append(
                f"{r.case:<{width}} {r.output:<20} {str(list(r.shape)):<18} {r.max_abs_err:>12.3g} "
                f"{r.max_rel_err:>12.3g}  {verdict}"
            )
        got, want = self.got, self.want
        rows.append(f"(tolerance: |{got} - {want}| <= {self.atol:g} + {self.rtol:g} * |{want}|)")
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return {"atol": self.atol, "rtol": self.rtol, "ok": self.ok, "results": [r.to_dict() for r in self.results]}


def compare_arrays(case: str, name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> OutputParity:
    """Compare one output: shapes, NaN placement, then the allclose rule."""
    if got.shape != want.shape:
        return OutputParity(
            case,
            name,
            tuple(want.shape),
            float("inf"),
            float("inf"),
            False,
            f"shape {list(got.shape)} != {list(want.shape)}",
        )
    if want.dtype.kind not in "fc":
        equal = bool(np.array_equal(got, want))
        diff = 0.0 if equal else float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
        return OutputParity(case, name, tuple(want.shape), diff, 0.0 if equal else float("inf"), equal)
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    nan_mismatch = bool(np.any(np.isnan(g) != np.isnan(w)))
    if np.any(np.isnan(w)):
        return OutputParity(
            case, name, tuple(want.shape), float("nan"), float("nan"), False, "PyTorch output holds NaN"
        )
    diff = np.abs(g - w)
    max_abs = float(np.nanmax(diff)) if diff.size else 0.0
    rel = diff / np.maximum(np.abs(w), np.finfo(np.float64).tiny)
    max_rel = float(np.nanmax(rel)) if rel.size else 0.0
    ok = (not nan_mismatch) and bool(np.all(diff <= atol + rtol * np.abs(w)))
    return OutputParity(case, name, tuple(want.shape), max_abs, max_rel, ok, "NaN mismatch" if nan_mismatch else "")


def parity_from_onnx(
    onnx_path: Path,
    torch_outputs: Mapping[str, list[np.ndarray]],
    cases: tuple[tuple[str, Mapping[str, np.ndarray]], ...],
    spec: BuildSpec,
    session: Any = None,
) -> ParityReport:
    """Run every case through ONNX Runtime and compare with the PyTorch outputs computed for it."""
    session = session or onnx_session(onnx_path)
    results = []
    output_names = [t.name for t in spec.outputs]
    for label, inputs in cases:
        feed = {t.name: np.ascontiguousarray(inputs[t.name]) for t in spec.inputs}
        try:
            got = session.run(output_names, feed)
        except Exception as exc:
            shapes = ", ".join(f"{n}{list(a.shape)}" for n, a in feed.items())
            raise TritongenError(
                f"ONNX Runtime failed on the {label} samples ({shapes}): {str(exc).splitlines()[0][:300]}",
                "the exported graph does not accept these shapes: check that variable dims are -1 in --input, and "
                "that forward() computes sizes with torch operations (a Python number fixes the size in the graph)",
            ) from None
        for name, g, w in zip(output_names, got, torch_outputs[label]):
            results.append(compare_arrays(label, name, g, w, spec.atol, spec.rtol))
    want = "original" if spec.inputs_from == "onnx" else "torch"
    return ParityReport(atol=spec.atol, rtol=spec.rtol, results=tuple(results), want=want)
