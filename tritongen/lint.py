"""Offline TensorRT compatibility lint for an ONNX model (no TensorRT needed).

There is no CPU-only way to ask TensorRT whether a graph will parse (design notes, section 3), so this
checks what can be checked: the opset range, every operator against the TensorRT ONNX parser's documented
support list (onnx-tensorrt ``docs/operators.md``, TensorRT 10.x), non-standard domains, INT64 tensors,
every dynamic dimension covered by an optimization profile, the file size / external data layout, and the
placement of INT8 Q/DQ nodes (:mod:`tritongen.precision.qdq_lint`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TritongenError
from .findings import Finding
from .layout import version_of_folder

MIN_OPSET, MAX_OPSET = 9, 22  # what the TensorRT 10.x ONNX parser documents
PROTOBUF_LIMIT_BYTES = 2 << 30

# Operators the TensorRT 10.x ONNX parser documents as supported (onnx-tensorrt docs/operators.md).
TRT_ONNX_OPS = frozenset(
    """
Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu CenterCropPad Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout DynamicQuantizeLinear Einsum Elu Equal Erf Exp Expand
EyeLike Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity
If ImageScaler InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg
NonMaxSuppression NonZero Not OneHot Or PRelu Pad ParametricSoftplus Pow QuantizeLinear RMSNormalization RNN
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape
Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split()
)


FILE_CODES = (
    "external-data",
    "file-size",
)  # findings about the file itself: every runtime meets them, not TensorRT only


@dataclass(frozen=True)
class LintReport:
    path: Path
    findings: tuple[Finding, ...]
    opset: int
    ops: tuple[str, ...]

    # Where the build says TensorRT never parses this model (``--target local``: ONNX Runtime on CPU, in the Python
    # backend), why; its findings are then for information, and it fails no lint of the repository.
    not_for_tensorrt: str = ""

    @property
    def ok(self) -> bool:
        """No error, or where TensorRT never parses the model, none about the file itself (:data:`FILE_CODES`)."""
        return not any(
            f.level == "error" and (not self.not_for_tensorrt or f.code in FILE_CODES) for f in self.findings
        )

    def text(self) -> str:
        refused = any(f.level == "error" for f in self.findings)
        verdict = "NOT compatible" if refused else "ok"
        if self.not_for_tensorrt:
            verdict = f"{'would not pass' if refused else 'would pass'} TensorRT, which never parses it: " + (
                self.not_for_tensorrt
            )
            if not self.ok:
                verdict = "NOT usable (its file itself; TensorRT never parses it: " + self.not_for_tensorrt + ")"
        head = f"{self.path}: opset {self.opset}, {len(self.ops)} operator types: {verdict}"
        return "\n".join([head] + [f"  {f.level:<7} {f.code:<18} {f.message}" for f in self.findings])

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "opset": self.opset, "findings": [f.to_dict() for f in self.findings]}


def _dims(value_info) -> list[int | str]:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return dims


def lint_from_onnx(onnx_path: Path, profiles: Iterable[dict] | None = None) -> LintReport:
    """Check ``onnx_path`` for TensorRT; ``profiles`` (as in ``engine.json``) must cover every dynamic dim."""
    import onnx
    from onnx import TensorProto

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise TritongenError(f"{onnx_path} does not exist", "pass an ONNX file or a model repository")
    findings: list[Finding] = []
    size = onnx_path.stat().st_size
    if size >= PROTOBUF_LIMIT_BYTES:
        findings.append(
            Finding(
                "error",
                "file-size",
                f"{onnx_path.name} is {size / 2**30:.1f} GiB: protobuf's "
                "limit is 2 GiB; save the weights as external data",
            )
        )
    from .onnx_input import is_onnx_file

    with open(onnx_path, "rb") as fh:
        head = fh.read(16)
    if not is_onnx_file(head):  # protobuf parses an empty file, or two bytes of text, as an empty model
        raise _not_onnx(onnx_path, ValueError("it does not start as an ONNX model (ir_version first)"))
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise _not_onnx(onnx_path, exc) from None
    locations = set()
    for init in model.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL:
            entry = {e.key: e.value for e in init.external_data}
            locations.add(entry.get("location", ""))
    for loc in sorted(locations):
        if not (onnx_path.parent / loc).is_file():
            findings.append(
                Finding("error", "external-data", f"external data file '{loc}' is missing beside {onnx_path.name}")
            )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        findings.append(
            Finding("error", "opset", f"opset {opset} is outside the TensorRT parser's {MIN_OPSET}..{MAX_OPSET}")
        )
    ops = sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")})
    for n in sorted({(n.domain, n.op_type) for n in model.graph.node if n.domain not in ("", "ai.onnx")}):
        findings.append(
            Finding(
                "error",
                "custom-domain",
                f"operator {n[0]}::{n[1]} is not standard ONNX; TensorRT needs a plugin for it",
            )
        )
    for op in ops:
        if op not in TRT_ONNX_OPS:
            findings.append(
                Finding("error", "unsupported-op", f"operator {op} is not in the TensorRT ONNX parser's support list")
            )
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.type.tensor_type.elem_type == TensorProto.INT64:
            findings.append(
                Finding(
                    "warning", "int64-io", f"{vi.name} is INT64: TensorRT 10 takes it, older TensorRT casts to INT32"
                )
            )
    big = [
        i.name
        for i in model.graph.initializer
        if i.data_type == TensorProto.INT64
        and i.data_location != TensorProto.EXTERNAL
        and any(abs(int(v)) > 2**31 - 1 for v in first_int64_values(i, 4096))
    ]
    for name in big[:5]:
        findings.append(
            Finding(
                "warning",
                "int64-range",
                f"initializer {name} holds INT64 values beyond the INT32 range (clamped by TensorRT)",
            )
        )
    from .precision.qdq_lint import qdq_findings

    findings.extend(qdq_findings(model))
    findings.extend(_profile_findings(model, profiles))
    return LintReport(onnx_path, tuple(findings), opset, tuple(ops))


def first_int64_values(tensor: Any, count: int) -> Any:
    """At most ``count`` of an INT64 initializer's first values, read without making the whole array (a 100 MB
    field of packed zeros became 800 MB of array and 3.4 GB of memory); none where its fields disagree."""
    import numpy as np

    if tensor.HasField("segment"):
        return np.zeros(0, np.int64)
    if tensor.raw_data:
        usable = min(count, len(tensor.raw_data) // 8)
        return np.frombuffer(tensor.raw_data, dtype="<i8", count=usable)
    return np.asarray(tensor.int64_data[:count], dtype=np.int64)


def _not_onnx(path: Path, exc: Exception) -> TritongenError:
    """The error for a file ONNX cannot read: a PyTorch file is named as such, with the build that makes ONNX."""
    from .load.detect import detect_format

    try:
        kind = detect_format(path).kind
    except TritongenError:
        kind = "onnx"
    if kind != "onnx":
        return TritongenError(
            f"{path} is a {kind} file, not ONNX: lint checks the ONNX graph a build exports",
            f"build it first (tritongen build {path} ...), then lint the repository or its model.onnx",
        )
    return TritongenError(f"cannot read {path}: {str(exc).splitlines()[0][:200]}", "pass a valid ONNX file")


def _profile_findings(model, profiles) -> list[Finding]:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    dynamic = {i.name: _dims(i) for i in inputs if any(not isinstance(d, int) or d <= 0 for d in _dims(i))}
    if profiles is None:
        return [  # not a fault: the profile is made when the model is prepared for TensorRT
            Finding(
                "note",
                "profile",
                f"input {name} has dynamic dims {dims} and no optimization profile yet: `tritongen build --target "
                "tensorrt` derives one (--dim-range sets its sizes)",
            )
            for name, dims in dynamic.items()
        ]
    out = []
    profiles = list(profiles)
    if not profiles and dynamic:
        return [Finding("error", "profile", "the model has dynamic inputs and no optimization profile")]
    for k, prof in enumerate(profiles):
        for vi in inputs:
            dims = _dims(vi)
            shapes = prof.get(vi.name)
            if shapes is None:
                if vi.name in dynamic:
                    out.append(
                        Finding("error", "profile", f"profile {k} does not cover dynamic input {vi.name} {dims}")
                    )
                continue
            lo, opt, hi = (list(shapes[key]) for key in ("min", "opt", "max"))
            if not len(lo) == len(opt) == len(hi) == len(dims):
                out.append(
                    Finding(
                        "error",
                        "profile",
                        f"profile {k}: {vi.name} has rank {len(dims)} but the profile gives {len(lo)}",
                    )
                )
                continue
            for axis, d in enumerate(dims):
                if isinstance(d, int) and d > 0 and not lo[axis] == opt[axis] == hi[axis] == d:
                    out.append(
                        Finding(
                            "error",
                            "profile",
                            f"profile {k}: {vi.name} axis {axis} is fixed at "
                            f"{d} but the profile says {lo[axis]}..{hi[axis]}",
                        )
                    )
                elif not 1 <= lo[axis] <= opt[axis] <= hi[axis]:
                    out.append(
                        Finding(
                            "error",
                            "profile",
                            f"profile {k}: {vi.name} axis {axis} needs 1 <= min <= "
                            f"opt <= max, got {lo[axis]}/{opt[axis]}/{hi[axis]}",
                        )
                    )
    return out


MAX_ENGINE_PLAN_BYTES = 1 << 20  # engine.json: a few profiles and settings, a few KiB


def engine_plan_from_file(plan: Path) -> dict[str, Any]:
    """``engine.json`` (what ``tritongen build --target tensorrt`` writes), read within a bound and checked: an
    object whose ``onnx`` names a file in the same folder and whose ``profiles`` is a list."""
    from .files import json_from_bytes, read_problem, regular_bytes

    fix = "build the model again with tritongen build --target tensorrt (it writes engine.json)"
    try:
        data = json_from_bytes(regular_bytes(plan, MAX_ENGINE_PLAN_BYTES))
    except OSError as exc:
        raise TritongenError(f"{plan} {read_problem(exc)}", fix) from None
    except ValueError as exc:
        raise TritongenError(f"{plan} is not JSON ({str(exc)[:120]})", fix) from None
    if not isinstance(data, dict) or not _bare_name(data.get("onnx")):
        raise TritongenError(f"{plan} does not name an ONNX file in its own folder", fix)
    if "plan" in data and not _bare_name(data["plan"]):  # where the engine is written: the version folder, no further
        raise TritongenError(f"{plan} does not name a plan file in the model's version folder", fix)
    if not isinstance(data.get("profiles"), list):
        raise TritongenError(f"{plan} has no list of profiles", fix)
    for name in ("workspace_bytes", "builder_optimization_level"):
        value = data.get(name)
        if value is not None and (type(value) is not int or value < 0):
            raise TritongenError(f"{plan} has {name} {ascii(value)[:40]}, not a whole number", fix)
    return data


def not_for_tensorrt(onnx_path: Path) -> str:
    """Why TensorRT never parses ``onnx_path`` where its build says so (its version's manifest records
    ``--target local``), else "". An INT8 model built so is in the CPU's asymmetric Q/DQ form, which lint's TensorRT
    rules refuse by design."""
    from .manifest import read_manifest

    version_dir = Path(onnx_path).parent
    version = version_of_folder(version_dir.name)
    if Path(onnx_path).name != "model.onnx" or version is None:
        return ""
    try:
        target = read_manifest(version_dir.parent, version).spec_record().get("target")
    except (TritongenError, ValueError):
        return ""
    if target != "local":
        return ""
    return (
        "built with --target local (ONNX Runtime on CPU, in the Python backend; --target tensorrt prepares a model "
        "for it)"
    )


def _bare_name(value: Any) -> bool:
    """A file name without a folder: what engine.json may name (its ONNX, the plan it writes)."""
    return isinstance(value, str) and bool(value) and Path(value).name == value and not value.startswith(".")


def lint_targets(path: Path) -> list[tuple[Path, list | None]]:
    """(ONNX file, profiles or None) for an ONNX file, for one model's folder (``REPO/NAME``, holding
    ``config.pbtxt``: each of its versions), or for every model in a repository."""
    from .layout import ARTIFACT_DIR, ENGINE_PLAN_NAME, is_model_folder

    path = Path(path)
    if path.is_file():
        plan = path.parent / ENGINE_PLAN_NAME
        return [(path, engine_plan_from_file(plan)["profiles"] if plan.is_file() else None)]
    if not path.is_dir():
        raise TritongenError(
            f"{path} does not exist", "pass an .onnx file, a model repository or one model's folder in it (REPO/NAME)"
        )
    model_folder = is_model_folder(path)
    found = []
    folders = path.glob("*" if model_folder else "*/*")
    for version_dir in sorted(p for p in folders if p.is_dir() and version_of_folder(p.name) is not None):
        plan = version_dir / ARTIFACT_DIR / ENGINE_PLAN_NAME
        if plan.is_file():
            content = engine_plan_from_file(plan)
            found.append((version_dir / ARTIFACT_DIR / content["onnx"], content["profiles"]))
        elif (version_dir / "model.onnx").is_file():
            found.append((version_dir / "model.onnx", None))
    if not found and model_folder:
        step = path.parent / f"{path.name}_model"
        raise TritongenError(
            f"model folder {path} holds no ONNX model (no <version>/model.onnx, no <version>/{ARTIFACT_DIR}/"
            f"{ENGINE_PLAN_NAME})",
            f"its model step is the one to lint: tritongen lint {step}"
            if is_model_folder(step)
            else "pass an .onnx file, or a model folder or repository built by tritongen",
        )
    if not found:
        raise TritongenError(
            f"no ONNX model found in {path}",
            "pass an .onnx file, a repository built by tritongen, or one model's folder in it (REPO/NAME)",
        )
    return found
