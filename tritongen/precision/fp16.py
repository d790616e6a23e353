"""FP16 variant: FP16 weights and compute, overflow-prone operations kept in FP32, model I/O types kept.

Delegates to ONNX Runtime's converter (``onnxruntime.transformers.float16``), which inserts the Cast nodes
around every operation it leaves in FP32.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..errors import TritongenError
from ..export import ONNX_DATA_FILENAME, ONNX_FILENAME

# Reductions and large-range operations: FP16 overflows (65504) or loses the small terms of a sum.
FP32_OPS = (
    "LayerNormalization",
    "SkipLayerNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceL2",
    "ReduceLogSumExp",
    "Pow",
    "Sqrt",
    "Exp",
    "Log",
    "Erf",
    "InstanceNormalization",
    "GroupNormalization",
    "CumSum",
    "TopK",
    "NonMaxSuppression",
    "Range",
    "RoiAlign",
)


def fp16_onnx_from_onnx(src: Path, dst_dir: Path, keep_nodes: Iterable[str] = (), keep_io_types: bool = True) -> Path:
    """Write ``dst_dir/model.onnx`` (+ external data) in mixed precision; ``keep_nodes`` stay FP32 too."""
    import onnx
    from onnxruntime.transformers import float16

    model = onnx.load(str(src), load_external_data=True)
    try:
        converted = float16.convert_float_to_float16(
            model,
            keep_io_types=keep_io_types,
            op_block_list=sorted(set(FP32_OPS) | set(float16.DEFAULT_OP_BLOCK_LIST)),
            node_block_list=sorted(set(keep_nodes)),
            disable_shape_infer=False,
        )
    except Exception as exc:
        raise TritongenError(
            f"the FP16 conversion failed: {str(exc).splitlines()[0][:300]}",
            "build with --precision fp32, or report the model",
        ) from None
    dst_dir.mkdir(parents=True, exist_ok=True)
    path = dst_dir / ONNX_FILENAME
    onnx.save_model(
        converted,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=ONNX_DATA_FILENAME,
        size_threshold=1024,
    )
    return path


def fp16_candidates(src: Path) -> list[str]:
    """Weighted nodes (Conv, MatMul, Gemm with initializer weights): what the guard may keep in FP32."""
    import onnx

    model = onnx.load(str(src), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    heavy = ("Conv", "ConvTranspose", "MatMul", "Gemm")
    weighted = [n.name for n in model.graph.node if n.op_type in heavy and any(i in inits for i in n.input[1:])]
    return weighted
