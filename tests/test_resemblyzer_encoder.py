"""An LSTM from a package nobody here wrote: resemblyzer's voice encoder (its packaged training checkpoint) with a
dynamic number of mel frames, built with ``--dim-range``; the parity gate runs at MIN, OPT and MAX frames, and the
exported graph answers like PyTorch at frame counts the gate never used (an export that fixed the count would not)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_bad_input import _run
from tritongen.parity import onnx_session

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("resemblyzer") is None, reason="resemblyzer is not installed (scripts/setup.sh)"
)
FACTORY = f"{Path(__file__).resolve().parents[1] / 'examples' / 'resemblyzer_encoder.py'}:make_encoder"


def test_voice_encoder_parity_at_min_opt_max_frames_and_at_unseen_counts(tmp_path, monkeypatch):
    from examples.resemblyzer_encoder import encoder_weights_path, pretrained_encoder

    monkeypatch.setenv("TRITONGEN_CACHE_DIR", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    code, out, err = _run(
        [
            "build",
            str(encoder_weights_path()),
            "--model-factory",
            FACTORY,
            "--name",
            "voice",
            "--input",
            "mels:FP32:-1,40",
            "--output",
            "embedding",
            "--dim-range",
            "mels:0:40:160:400",
            "--max-batch-size",
            "4",
            "--target",
            "local",
            "--repo",
            str(repo),
        ]
    )
    assert code == 0, err
    manifest = json.loads((repo / "voice" / "1" / "tritongen" / "manifest.json").read_text())
    assert manifest["parity"]["ok"]
    cases = {r["case"] for r in manifest["parity"]["results"]}
    assert {"batch 1", "batch 1, min dims", "batch 1, max dims", "batch 4"} <= cases, cases
    samples = np.load(repo / "voice" / "1" / "tritongen" / "samples.npz")["mels"]
    assert samples.shape[1] == 160  # the samples at OPT
    session = onnx_session(repo / "voice" / "1" / "model.onnx")
    net = pretrained_encoder()
    rng = np.random.default_rng(0)
    for frames in (40, 97, 400, 531):  # MIN and MAX, and counts the gate never ran (531: beyond MAX)
        mels = rng.uniform(0, 1, (2, frames, 40)).astype(np.float32)
        (got,) = session.run(["embedding"], {"mels": mels})
        with torch.inference_mode():
            want = net(torch.from_numpy(mels)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # L2-normed, as the package's
