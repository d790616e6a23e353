"""A second real model family through the INT8 path: MTCNN's ONet with the weights facenet-pytorch ships.

The build calibrates on face and china.jpg crops; the figures are taken on other crops (other face positions,
flower.jpg backgrounds) that neither calibration nor the guard saw. ``bench/precision_second_model.py`` gives the
full figures (and throughput).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tritongen.build import build
from tritongen.cpus import u8s8_saturates
from tritongen.precision.guard import outputs_from_onnx
from tritongen.spec import build_spec_from_options

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("facenet_pytorch") is None, reason="facenet-pytorch is not installed (scripts/setup.sh)"
)
FACTORY_FILE = Path(__file__).resolve().parents[1] / "examples" / "mtcnn_onet.py"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRITONGEN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tritongen-cache"))


def _optimized_ops(path: Path, tmp_path: Path) -> set[str]:
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(options.optimized_model_filepath, load_external_data=False).graph.node}


def test_onet_int8_agrees_with_pytorch_fp32_on_unseen_crops(tmp_path):
    from examples.mtcnn_onet import OUTPUTS, onet_crops, onet_weights_path, pretrained_onet

    np.savez(tmp_path / "calib.npz", x=onet_crops(200, seed=1, background="china"))
    result = build(
        build_spec_from_options(
            onet_weights_path(),
            name="onet",
            inputs=["x:FP32:3,48,48"],
            outputs=list(OUTPUTS),
            max_batch_size=32,
            model_factory=f"{FACTORY_FILE}:make_onet",
            repo=tmp_path / "repo",
            target="local",
            precision="int8",
            calib_data=tmp_path / "calib.npz",
        )
    )
    record = json.loads(result.manifest_path.read_text())["precision"]
    assert record["ok"] and record["calibration"]["eval_samples"] == 50
    # the default bar: the box offsets' near-0 rows are judged by their error (within 10% of the FP32 range)
    box = next(o for o in record["accuracy"]["outputs"] if o["output"] == "box")
    assert box["row_error_bar"] > 0 and box["max_abs_error_bar"] is None
    # --target local: the CPU form, which ONNX Runtime runs with integer convolutions; with VNNI every layer is
    # INT8; an x86 CPU without it saturates (face_prob's min cosine 0.30 with every layer INT8 on an AVX2-only
    # EPYC): the guard, which measures this CPU's kernels, keeps some layers in FP32 there, and says why
    assert record["calibration"]["int8_form"] == "cpu"
    assert record["calibration"]["u8s8_saturation"] == u8s8_saturates()
    assert (record["kept_layers"] != []) if u8s8_saturates() else (record["kept_layers"] == [])
    assert {"QLinearConv", "QGemm"} <= _optimized_ops(result.model_dir / "1" / "model.onnx", tmp_path)
    kept_conv = any("conv" in layer for layer in record["kept_layers"])  # a layer kept in FP32 convolves in float
    assert ("Conv" in _optimized_ops(result.model_dir / "1" / "model.onnx", tmp_path)) == kept_conv
    heldout = onet_crops(128, seed=2, background="flower")
    with torch.inference_mode():
        want = [t.numpy() for t in pretrained_onet()(torch.from_numpy(heldout))]
    box, landmarks, prob = outputs_from_onnx(result.model_dir / "1" / "model.onnx", [{"x": heldout}], OUTPUTS)[0]
    faces = want[2][:, 1] >= 0.7
    assert 0.3 < faces.mean() < 0.7  # both kinds of crop are there, so agreement means something
    assert np.mean(np.argmax(prob, 1) == np.argmax(want[2], 1)) >= 0.98
    pixels = 3.0 if u8s8_saturates() else 2.0  # 2.16 for a box on the AVX2-only EPYC, with the guard's kept layers
    assert np.max(np.abs(landmarks - want[1])) * 48 < pixels  # pixels of the 48-pixel crop
    assert np.max(np.abs(box - want[0])) * 48 < pixels
