"""A fully convolutional net from a package nobody here wrote: MTCNN's PNet (weights from facenet-pytorch) declared
``3,-1,-1``, built with ``--dim-range`` on height and width; the parity gate runs at MIN, OPT and MAX of each, and the
exported graph answers like PyTorch at sizes the gate never used."""

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
    importlib.util.find_spec("facenet_pytorch") is None, reason="facenet-pytorch is not installed (scripts/setup.sh)"
)
FACTORY = f"{Path(__file__).resolve().parents[1] / 'examples' / 'mtcnn_pnet.py'}:make_pnet"


def _cell(n: int) -> int:
    """PNet's map size for an input side of n pixels: conv 3, pool 2 (ceil), conv 3, conv 3."""
    return -(-(n - 2) // 2) - 4


def test_pnet_parity_at_min_opt_max_and_at_unseen_sizes(tmp_path, monkeypatch):
    from examples.mtcnn_pnet import pnet_weights_path, pretrained_pnet

    monkeypatch.setenv("TRITONGEN_CACHE_DIR", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    code, out, err = _run(
        [
            "build",
            str(pnet_weights_path()),
            "--model-factory",
            FACTORY,
            "--name",
            "pnet",
            "--input",
            "x:FP32:3,-1,-1",
            "--output",
            "box",
            "--output",
            "prob",
            "--dim-range",
            "x:1:12:48:160",
            "--dim-range",
            "x:2:13:64:150",
            "--max-batch-size",
            "4",
            "--target",
            "local",
            "--repo",
            str(repo),
        ]
    )
    assert code == 0, err
    manifest = json.loads((repo / "pnet" / "1" / "tritongen" / "manifest.json").read_text())
    assert manifest["parity"]["ok"]
    shapes = {tuple(r["shape"]) for r in manifest["parity"]["results"] if r["output"] == "prob"}
    for h, w in ((12, 13), (48, 64), (160, 150)):  # MIN, OPT and MAX of both dimensions
        assert any(s[2:] == (_cell(h), _cell(w)) for s in shapes), (h, w, shapes)
    assert max(s[0] for s in shapes) == 4  # and at the maximum batch
    session = onnx_session(repo / "pnet" / "1" / "model.onnx")
    net = pretrained_pnet()
    rng = np.random.default_rng(0)
    for h, w in ((12, 150), (37, 91), (160, 13)):  # sizes the gate never ran
        x = rng.uniform(-1, 1, (2, 3, h, w)).astype(np.float32)
        box, prob = session.run(["box", "prob"], {"x": x})
        with torch.inference_mode():
            want_box, want_prob = (t.numpy() for t in net(torch.from_numpy(x)))
        assert prob.shape == (2, 2, _cell(h), _cell(w))
        np.testing.assert_allclose(box, want_box, atol=1e-4)
        np.testing.assert_allclose(prob, want_prob, atol=1e-4)
