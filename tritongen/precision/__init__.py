"""Reduced-precision ONNX variants (FP16, INT8 Q/DQ) with calibration and an accuracy guard.

The precision lives in the ONNX graph (FP16 casts, explicit symmetric Q/DQ), so the same file works for
ONNX Runtime and for a strongly typed TensorRT network, and its accuracy can be measured on the CPU before any
GPU is involved (design notes, section 3).

Modules, one per step: :mod:`.calibration` (user data -> calibration and held-out batches),
:mod:`.fp16` (``fp16_onnx_from_onnx``), :mod:`.int8` (``int8_onnx_from_onnx``), :mod:`.accuracy` (figures
against the FP32 reference), :mod:`.guard` (``guarded_onnx_from_onnx``: variant, measure, per-layer
sensitivity, keep the worst layers in higher precision, retry within a bound).
"""

from __future__ import annotations

from ..spec import CALIB_METHODS, DEFAULT_MIN_COSINE, PRECISIONS  # defaults live in the spec
from .accuracy import AccuracyReport, accuracy_from_outputs  # noqa: E402
from .calibration import CalibrationData, calibration_data_from_path  # noqa: E402
from .guard import GuardResult, guarded_onnx_from_onnx  # noqa: E402

__all__ = [
    "PRECISIONS",
    "CALIB_METHODS",
    "DEFAULT_MIN_COSINE",
    "AccuracyReport",
    "accuracy_from_outputs",
    "CalibrationData",
    "calibration_data_from_path",
    "GuardResult",
    "guarded_onnx_from_onnx",
]
