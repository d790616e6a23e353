"""INT8 variant: explicit QuantizeLinear/DequantizeLinear pairs as TensorRT wants them (or, for ONNX Runtime on the
CPU, as its integer kernels want them: :class:`Int8Form`).

Symmetric (zero point 0) INT8 for weights and activations, per-channel weights, inputs of Conv, Gemm and
weight MatMul quantized; everything else (LayerNorm, Softmax, GELU, residual Adds, activation x activation
MatMuls) stays in floating point. Calibration runs on the CPU with ONNX Runtime
(``onnxruntime.quantization.quantize_static``, QDQ format); its tensor ranges are cached in a file keyed by
the ONNX model, the calibration data and the method, and reused while those are unchanged.

Before calibration, activation outliers are migrated into the weights (:mod:`.smoothquant`); with
``--calib-method auto`` each activation's range is min/max or a percentile, chosen per tensor
(:mod:`.tensor_ranges`); after quantization the graph is rewritten into the form ONNX Runtime and TensorRT
fuse, one Q/DQ pair per quantized op with residual readers on the float tensor (:mod:`.qdq_form`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import TritongenError
from ..export import ONNX_DATA_FILENAME, ONNX_FILENAME
from ..layout import cache_root
from ..logs import quieted
from .calibration import MIN_CALIB_SAMPLES, CalibrationData
from .qdq_form import QdqForm, fusable_qdq
from .smoothquant import SmoothedGroup, smoothed_onnx_from_onnx
from .tensor_ranges import RangeChoice, activation_inputs, quant_overrides, range_choices

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class Int8Form:
    """Where the INT8 graph runs decides where its Q/DQ go and how they round (design notes, section 8).

    - ``tensorrt``: symmetric INT8, Q/DQ on the inputs of the weighted ops only, as TensorRT wants them (also for
      ONNX Runtime's TensorRT and CUDA accelerators); ``tritongen lint`` checks this placement.
    - ``cpu`` (``--target local``, ONNX Runtime on the CPU), for graphs with a Conv: Conv outputs are quantized
      too and the biases are INT32, so each Conv is a whole QDQ node unit (DequantizeLinear on input, weight and
      bias -> Conv -> QuantizeLinear) that ONNX Runtime's QDQ transformer turns into ``QLinearConv`` (and Gemm into
      ``QGemm``); with Q/DQ on the inputs alone it dequantizes the weights on every run and convolves in floating
      point (ONet: 0.5x FP32). Activations are asymmetric UINT8 (U8S8, the kind ONNX Runtime's x86 kernels
      prefer): it also uses the full range of a PReLU's one-sided outputs. On an x86 CPU without VNNI (AVX2 only,
      or AVX-512 without VNNI) the U8S8 kernels add two 255 x 127 products in 16 bits, which saturate: the same
      graph answers further from FP32 there (ONet's face probability: min cosine 0.30 against 0.99+ with VNNI).
      The guard measures this host's kernels, so a build on such a host keeps more layers in FP32;
      :func:`tritongen.cpus.u8s8_saturates` tells, the manifest records it, and ``infer --check`` on the serving
      host measures it there. (7-bit weights, ``reduce_range``, avoid the saturation but cost more accuracy than
      the guard's kept layers: on ONet it kept 6 layers with them against 4 without.)
      Graphs without a Conv (transformers) keep the TensorRT form, which ONNX Runtime already fuses into
      ``MatMulIntegerToFloat``.
    """

    name: str
    output_ops: tuple[str, ...]  # ops whose outputs get a Q/DQ pair too
    asymmetric: bool  # UINT8 activations with a zero point (else symmetric INT8)
    quantize_bias: bool


INT8_FORMS = {
    "tensorrt": Int8Form("tensorrt", (), asymmetric=False, quantize_bias=False),
    "cpu": Int8Form("cpu", ("Conv",), asymmetric=True, quantize_bias=True),
}


@dataclass(frozen=True)
class Int8Result:
    onnx_path: Path
    cache_path: Path
    cache_hit: bool
    calib_samples: int  # samples the calibrator saw
    quantized_nodes: tuple[str, ...]
    smoothed: tuple[SmoothedGroup, ...] = ()
    ranges: tuple[RangeChoice, ...] = ()  # per-tensor range choices (--calib-method auto)
    qdq_form: QdqForm | None = None
    form: str = "tensorrt"  # the INT8_FORMS key the graph was made in


def cache_dir() -> Path:
    return cache_root() / "calibration"


MAX_CACHE_ENTRY_BYTES = 64 << 20  # one calibration's tensor ranges (a few MB for the largest models here)


def _usable_cache_entry(path: Path) -> bool:
    """Whether ``path`` holds a calibration ONNX Runtime can read back: a regular file, not a link, of bounded size,
    a JSON object. Anything else there (a truncated write, a FIFO, a link) is removed, and calibration runs again:
    a damaged entry failed every rebuild with "check that the calibration samples are valid inputs"."""
    import json
    import stat

    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise TritongenError(f"cannot read the calibration cache {path}: {exc.strerror or exc}", _CACHE_FIX) from None
    if stat.S_ISREG(info.st_mode) and info.st_size <= MAX_CACHE_ENTRY_BYTES:
        try:
            if isinstance(json.loads(path.read_bytes()), dict):
                return True
        except (OSError, ValueError):
            pass
    try:
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as exc:
        raise TritongenError(
            f"the calibration cache entry {path} is damaged and cannot be removed ({exc.strerror or exc})", _CACHE_FIX
        ) from None
    return False


_CACHE_FIX = "remove it (or the folder $TRITONGEN_CACHE_DIR names) and build again"


def onnx_digest(src: Path) -> str:
    """sha256 of the ONNX file and its external data."""
    h = hashlib.sha256()
    for p in (src, src.with_name(ONNX_DATA_FILENAME)):
        if p.is_file():
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def weighted_nodes(src: Path) -> tuple[list[str], list[str]]:
    """(nodes whose weights are initializers: quantized by default, activation x activation MatMuls: kept)."""
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    weighted: list[str] = []
    activation_only: list[str] = []
    for n in model.graph.node:
        if n.op_type in QUANTIZED_OPS:
            (weighted if len(n.input) > 1 and n.input[1] in inits else activation_only).append(n.name)
    return weighted, activation_only


def _method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {
        "auto": CalibrationMethod.MinMax,  # min/max, with per-tensor percentile overrides
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[name]


def _uniform_batches(data: CalibrationData, method: str) -> list[dict]:
    """Histogram calibrators stack every batch's tensors, so they need one shape: keep the commonest."""
    batches = list(data.calib)
    if method in ("minmax", "auto"):
        return batches
    sig = lambda b: tuple((k, a.shape) for k, a in sorted(b.items()))  # noqa: E731
    common, _ = Counter(sig(b) for b in batches).most_common(1)[0]
    kept = [b for b in batches if sig(b) == common]
    rows = sum(data.rows(b) for b in kept)
    if rows < MIN_CALIB_SAMPLES:
        raise TritongenError(
            f"--calib-method {method} needs calibration samples of one shape, and only {rows} share one",
            "pad the samples to one shape, or use --calib-method minmax",
        )
    return kept


def prepared_batches(data: CalibrationData, method: str) -> list[dict]:
    """The calibration batches ``method`` can use (histogram methods need one shape)."""
    return _uniform_batches(data, method)


def int8_onnx_from_onnx(
    src: Path,
    dst_dir: Path,
    data: CalibrationData,
    method: str = "auto",
    exclude_nodes: Iterable[str] = (),
    *,
    smooth: bool = True,
    ranges: Sequence[RangeChoice] | None = None,
    form: str = "tensorrt",
) -> Int8Result:
    """Write ``dst_dir/model.onnx`` (+ external data) with symmetric INT8 Q/DQ calibrated on ``data.calib``.

    ``smooth``: migrate activation outliers into the weights first (a caller that smoothed ``src`` already,
    like the guard, passes False). ``ranges``: per-tensor range choices already measured on ``src`` (for
    ``method="auto"``; measured here when None). ``form``: a key of :data:`INT8_FORMS`, where the graph will run
    (``cpu`` falls back to ``tensorrt`` for a graph without a Conv; the result says which was made).
    """
    import onnx

    if form not in INT8_FORMS:
        raise ValueError(form)
    batches = _uniform_batches(data, method)
    weighted, activation_only = weighted_nodes(src)
    chosen = INT8_FORMS[form]
    if chosen.output_ops and not _has_op(src, chosen.output_ops):
        chosen = INT8_FORMS["tensorrt"]
    if not weighted:
        raise TritongenError(
            "the model has no Conv, Gemm or MatMul with weights to quantize",
            "INT8 gains nothing here: build with --precision fp16 or fp32",
        )
    excluded = sorted(set(exclude_nodes) | set(activation_only))
    dst_dir.mkdir(parents=True, exist_ok=True)
    out = dst_dir / ONNX_FILENAME
    for stale in (out, dst_dir / ONNX_DATA_FILENAME):
        stale.unlink(missing_ok=True)
    smoothed: tuple[SmoothedGroup, ...] = ()
    work = dst_dir / ".smooth"
    digest = onnx_digest(src)
    try:
        if smooth:
            src, smoothed = smoothed_onnx_from_onnx(src, work / ONNX_FILENAME, batches)
        if method == "auto" and ranges is None:
            model = onnx.load(str(src))
            ranges = range_choices(model, activation_inputs(model, QUANTIZED_OPS), batches)
            del model
        ranges = tuple(ranges or ()) if method == "auto" else ()
        cache_path, hit = _quantize(src, out, batches, method, excluded, ranges, digest, data.digest, smooth, chosen)
        model = onnx.load(str(out))
        rewritten = fusable_qdq(model, keep_output_pairs=chosen.output_ops)
        for stale in (out, dst_dir / ONNX_DATA_FILENAME):
            stale.unlink(missing_ok=True)  # onnx appends to an existing external data file
        onnx.save(model, str(out), save_as_external_data=True, location=ONNX_DATA_FILENAME, size_threshold=1024)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    quantized = tuple(n for n in weighted if n not in excluded)
    rows = sum(data.rows(b) for b in batches)
    return Int8Result(
        onnx_path=out,
        cache_path=cache_path,
        cache_hit=hit,
        calib_samples=rows,
        quantized_nodes=quantized,
        smoothed=smoothed,
        ranges=ranges,
        qdq_form=rewritten,
        form=chosen.name,
    )


def _has_op(src: Path, op_types: Sequence[str]) -> bool:
    import onnx

    return any(n.op_type in op_types for n in onnx.load(str(src), load_external_data=False).graph.node)


def _quantize(
    src: Path,
    out: Path,
    batches: list[dict],
    method: str,
    excluded: list[str],
    ranges: Sequence[RangeChoice],
    src_digest: str,
    data_digest: str,
    smooth: bool,
    form: Int8Form,
) -> tuple[Path, bool]:
    """``quantize_static`` in ``form``; returns (calibration cache file, whether it was reused)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from .smoothquant import ALPHA_GELU, ALPHA_NORM

    key = hashlib.sha256(
        "|".join(
            [
                src_digest,
                data_digest,
                method,
                ",".join(QUANTIZED_OPS),
                "sym-int8-v2",
                f"smooth={smooth}:{ALPHA_NORM}:{ALPHA_GELU}",
                ",".join(str(len(b)) for b in batches),
                *([f"form={form.name}"] if form.name != "tensorrt" else []),
            ]
        ).encode()
    ).hexdigest()[:32]
    cache_path = cache_dir() / f"{key}.json"
    hit = _usable_cache_entry(cache_path)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self):
            return next(self._it, None)

    try:  # ORT's "please consider pre-processing" chatter goes to the root logger
        with contextlib.redirect_stdout(io.StringIO()), quieted("", "onnxruntime"):
            quantize_static(
                str(src),
                str(out),
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                reduce_range=False,
                activation_type=QuantType.QUInt8 if form.asymmetric else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                use_external_data_format=True,
                calibrate_method=_method(method),
                calibration_cache_path=str(cache_path),
                extra_options={
                    "ActivationSymmetric": not form.asymmetric,
                    "WeightSymmetric": True,
                    # an INT32 bias (scale = input scale x weight scale) completes ONNX Runtime's Conv node unit
                    "QuantizeBias": form.quantize_bias,
                    "CalibTensorRangeSymmetric": not form.asymmetric,
                    "QDQKeepRemovableActivations": True,
                    # Q/DQ on the inputs of weighted ops only, as TensorRT recommends (and Conv outputs for the CPU)
                    "OpTypesToExcludeOutputQuantization": [o for o in QUANTIZED_OPS if o not in form.output_ops],
                    "TensorQuantOverrides": quant_overrides(ranges),
                },
            )
    except TritongenError:
        raise
    except Exception as exc:
        raise TritongenError(
            f"INT8 calibration/quantization failed: {str(exc).splitlines()[0][:300]}",
            "check that the calibration samples are valid inputs for the model, or try --calib-method minmax",
        ) from None
    return cache_path, hit
