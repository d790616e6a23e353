"""Parity gate: ONNX Runtime (CPU) against PyTorch on the same inputs, per output.

A pair of arrays passes when ``|onnx - torch| <= atol + rtol * |torch|`` everywhere (NumPy's ``allclose``
rule), neither holds NaN where the other does not, and an infinity stands where the other holds the same one.
The report keeps the worst absolute and relative errors (of the finite pairs) so a failure says exactly which
output drifted and by how much.
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

INF_MISMATCH = "infinity mismatch"  # an infinity on one side only, or of the other sign


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


def _as_bytes(array: np.ndarray) -> list[bytes]:
    return [v if isinstance(v, bytes) else str(v).encode() for v in np.asarray(array).reshape(-1).tolist()]


def compare_arrays(
    case: str, name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float, equal_nan: bool = False
) -> OutputParity:
    """Compare one output: shapes, NaN placement, then the allclose rule (text as bytes, equal or not; complex
    numbers whole). ``equal_nan``: NaN where ``want`` holds NaN passes (a user's expected outputs); otherwise a NaN
    reference fails, since nothing can be checked against it."""
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
    if {got.dtype.kind, want.dtype.kind} & {"S", "U", "O"}:  # text (a STRING output): equal as bytes, or not
        equal = _as_bytes(got) == _as_bytes(want)
        return OutputParity(case, name, tuple(want.shape), 0.0 if equal else float("inf"), 0.0, equal)
    if want.dtype.kind not in "fc":
        equal = bool(np.array_equal(got, want))
        diff = 0.0 if equal else float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
        return OutputParity(case, name, tuple(want.shape), diff, 0.0 if equal else float("inf"), equal)
    exact = np.complex128 if "c" in (got.dtype.kind, want.dtype.kind) else np.float64  # complex keeps its imaginary
    g = got.astype(exact)
    w = want.astype(exact)
    nan_mismatch = bool(np.any(np.isnan(g) != np.isnan(w)))
    if np.any(np.isnan(w)) and not equal_nan:
        return OutputParity(
            case, name, tuple(want.shape), float("nan"), float("nan"), False, "PyTorch output holds NaN"
        )
    if equal_nan:  # NaN where the reference holds NaN is the answer expected (nan_mismatch covers the rest)
        g, w = np.where(np.isnan(w), 0.0, g), np.where(np.isnan(w), 0.0, w)
    # an infinity (a masked logit's -inf) equals the same infinity, as np.isclose has it; any other pairing with
    # one is a mismatch no tolerance covers. Only finite pairs have an error.
    infinite = np.isinf(g) | np.isinf(w)
    inf_mismatch = bool(np.any(infinite & (g != w)))
    g, w = np.where(infinite, 0.0, g), np.where(infinite, 0.0, w)
    diff = np.abs(g - w)
    max_abs = float(np.nanmax(diff)) if diff.size else 0.0
    rel = diff / np.maximum(np.abs(w), np.finfo(np.float64).tiny)
    max_rel = float(np.nanmax(rel)) if rel.size else 0.0
    ok = not nan_mismatch and not inf_mismatch and bool(np.all(diff <= atol + rtol * np.abs(w)))
    note = "NaN mismatch" if nan_mismatch else INF_MISMATCH if inf_mismatch else ""
    return OutputParity(case, name, tuple(want.shape), max_abs, max_rel, ok, note)


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


def _unbatched_fix(spec: BuildSpec) -> str:
    first = spec.inputs[0]
    whole = ",".join(str(d) for d in (-1, *first.dims))
    shape = f"--input {first.name}:{first.dtype}:{whole}"
    return f"or build it unbatched: --max-batch-size 0 with each input's whole shape ({shape})"


def _batch_first_fix(spec: BuildSpec) -> str:
    if spec.inputs_from == "onnx":
        return f"export the graph with the batch first in every output, {_unbatched_fix(spec)}"
    return (
        "return every output batch-first: a squeeze() drops the batch axis at batch 1 (name the dim to squeeze), an "
        "nn.LSTM, GRU or RNN with batch_first=False answers [time, batch, ...] (set batch_first=True or transpose), "
        f"an output sized by its content (nonzero, NMS) has no batch axis; {_unbatched_fix(spec)}"
    )


# An item's answer alone and among a batch's others, as a share of its size (the relative L2 distance): above
# this the model mixes the items (a softmax over the batch differs by multiples); ONNX Runtime's dynamic
# quantization, whose activation scale is the batch's, moves answers by a percent at most, and batches as is.
MIXED_ITEMS_REL = 0.05


def check_outputs_follow_batch(
    spec: BuildSpec, cases: tuple[tuple[str, Mapping[str, np.ndarray]], ...], answers: list[list[np.ndarray]]
) -> None:
    """A batching model answers each case with as many rows as it was given, in every output: Triton splits an
    answer by its first dimension, so any other first dimension hands one request rows of another's answer."""
    if not spec.batched:
        return
    first = spec.inputs[0].name
    for (label, inputs), outputs in zip(cases, answers):
        rows = int(inputs[first].shape[0])
        for tensor, array in zip(spec.outputs, outputs):
            if array.ndim == 0 or array.shape[0] != rows:
                found = "is a single value" if array.ndim == 0 else f"has {array.shape[0]} rows {list(array.shape)}"
                where = "" if label == f"batch {rows}" else f" ({label})"
                raise TritongenError(
                    f"output '{tensor.name}' {found} for a batch of {rows}{where}: its first dimension is not the "
                    "batch, so Triton would hand each request part of another's answer",
                    _batch_first_fix(spec),
                )


DYNAMIC_QUANT_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"})


def _dynamically_quantized(onnx_path: Path) -> bool:
    import onnx

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - the gate loaded it already; an unreadable file is not this check's to name
        return False
    return any(n.op_type in DYNAMIC_QUANT_OPS for n in graph.node)


def check_items_independent(
    session: Any,
    spec: BuildSpec,
    case: tuple[str, Mapping[str, np.ndarray]],
    answers: list[np.ndarray],
    onnx_path: Path | None = None,
) -> None:
    """The first item of the largest batch, run alone, gets about the answer it got among the others: a model that
    mixes the items of a batch (a softmax or a norm over the batch dimension) would answer a request differently
    with every neighbour Triton's dynamic batcher gives it. Judged on float outputs by the relative distance
    (:data:`MIXED_ITEMS_REL`), not the gate's tolerances: a dynamically quantized graph moves a little with its
    batch and serves fine batched."""
    label, inputs = case
    rows = int(inputs[spec.inputs[0].name].shape[0])
    if not spec.batched or spec.states or rows < 2:
        return
    alone = session.run(
        [t.name for t in spec.outputs], {t.name: np.ascontiguousarray(inputs[t.name][:1]) for t in spec.inputs}
    )
    for tensor, together, single in zip(spec.outputs, answers, alone):
        if together.shape[1:] != single.shape[1:] or together.dtype.kind not in "fc":
            continue  # sized by the batch's content (padding), or integers (an argmax may flip on a near tie)
        mine, single = together[:1].astype(np.float64), single.astype(np.float64)
        if not (np.isfinite(mine).all() and np.isfinite(single).all()):
            continue  # the gate judged NaN and infinities already
        scale = max(float(np.linalg.norm(mine)), float(np.linalg.norm(single)), 1e-12)
        distance = float(np.linalg.norm(single - mine)) / scale
        if distance > MIXED_ITEMS_REL and onnx_path is not None and _dynamically_quantized(onnx_path):
            from .cpus import u8s8_saturates

            why = "; this CPU has no VNNI, so its INT8 kernels saturate and that scale matters"
            why = why if u8s8_saturates() else ""
            raise TritongenError(
                f"output '{tensor.name}' of the first item differs when it runs with {rows - 1} others ({label}) "
                f"from its answer alone by {distance:.0%} of its size: a dynamically quantized graph takes one "
                f"activation scale per batch{why}, so Triton's dynamic batcher would change each request's answer "
                "with its neighbours",
                "quantize with one scale for every batch (the FP32 model with --precision int8 --calib-data FILE), "
                + _unbatched_fix(spec),
            )
        if distance > MIXED_ITEMS_REL:
            raise TritongenError(
                f"output '{tensor.name}' of the first item differs when it runs with {rows - 1} others ({label}) "
                f"from its answer alone by {distance:.0%} of its size: the model mixes the items of a batch, so "
                "Triton's dynamic batcher would change each request's answer with its neighbours",
                "compute each item from its own row only (a softmax or norm over the item's dimensions, BatchNorm "
                f"in eval mode), {_unbatched_fix(spec)}",
            )
