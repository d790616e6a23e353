"""INT8 variant: explicit QuantizeLinear/DequantizeLinear pairs as TensorRT wants them.

Symmetric (zero point 0) INT8 for weights and activations, per-channel weights, inputs of Conv, Gemm and
weight MatMul quantized; everything else (LayerNorm, Softmax, GELU, residual Adds, activation x activation
MatMuls) stays in floating point. Calibration runs on the CPU with ONNX Runtime
(``onnxruntime.quantization.quantize_static``, QDQ format); its tensor ranges are cached in a file keyed by
the ONNX model, the calibration data and the method, and reused while those are unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import TritongenError
from ..export import ONNX_DATA_FILENAME, ONNX_FILENAME
from ..layout import cache_root
from ..logs import quieted
from .calibration import MIN_CALIB_SAMPLES, CalibrationData

QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class Int8Result:
    onnx_path: Path
    cache_path: Path
    cache_hit: bool
    calib_samples: int  # samples the calibrator saw
    quantized_nodes: tuple[str, ...]


def cache_dir() -> Path:
    return cache_root() / "calibration"


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
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[name]


def _uniform_batches(data: CalibrationData, method: str) -> list[dict]:
    """Histogram calibrators stack every batch's tensors, so they need one shape: keep the commonest."""
    batches = list(data.calib)
    if method == "minmax":
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


def int8_onnx_from_onnx(
    src: Path, dst_dir: Path, data: CalibrationData, method: str = "minmax", exclude_nodes: Iterable[str] = ()
) -> Int8Result:
    """Write ``dst_dir/model.onnx`` (+ external data) with symmetric INT8 Q/DQ calibrated on ``data.calib``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    batches = _uniform_batches(data, method)
    weighted, activation_only = weighted_nodes(src)
    if not weighted:
        raise TritongenError(
            "the model has no Conv, Gemm or MatMul with weights to quantize",
            "INT8 gains nothing here: build with --precision fp16 or fp32",
        )
    excluded = sorted(set(exclude_nodes) | set(activation_only))
    key = hashlib.sha256(
        "|".join(
            [
                onnx_digest(src),
                data.digest,
                method,
                ",".join(QUANTIZED_OPS),
                "sym-int8-v1",
                ",".join(str(len(b)) for b in batches),
            ]
        ).encode()
    ).hexdigest()[:32]
    cache_path = cache_dir() / f"{key}.json"
    hit = cache_path.is_file()

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self):
            return next(self._it, None)

    dst_dir.mkdir(parents=True, exist_ok=True)
    out = dst_dir / ONNX_FILENAME
    for stale in (out, dst_dir / ONNX_DATA_FILENAME):
        stale.unlink(missing_ok=True)
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
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                use_external_data_format=True,
                calibrate_method=_method(method),
                calibration_cache_path=str(cache_path),
                extra_options={
                    "ActivationSymmetric": True,
                    "WeightSymmetric": True,
                    "QuantizeBias": False,
                    "CalibTensorRangeSymmetric": True,
                    "QDQKeepRemovableActivations": True,
                    # Q/DQ on the inputs of weighted ops only, as TensorRT recommends
                    "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
                },
            )
    except TritongenError:
        raise
    except Exception as exc:
        raise TritongenError(
            f"INT8 calibration/quantization failed: {str(exc).splitlines()[0][:300]}",
            "check that the calibration samples are valid inputs for the model, or try --calib-method minmax",
        ) from None
    quantized = tuple(n for n in weighted if n not in excluded)
    rows = sum(data.rows(b) for b in batches)
    return Int8Result(
        onnx_path=out, cache_path=cache_path, cache_hit=hit, calib_samples=rows, quantized_nodes=quantized
    )
