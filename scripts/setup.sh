#!/usr/bin/env bash
# Creates .venv/ at the repository root with tritongen and everything its stages, tests and demo need.
# Idempotent: a second run with an unchanged pyproject.toml and setup script is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

stamp=".venv/.tritongen-setup"
want="$(cat pyproject.toml scripts/setup.sh scripts/install_perf_analyzer.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/tritongen ]; then
  exit 0
fi

echo "setting up .venv (python: $($PY --version 2>&1)) ..." >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "[1/4] pip ..." >&2
.venv/bin/python -m pip install -q --upgrade pip
echo "[2/4] torch 2.13.0 (CPU build, about 1 GB; a minute or two) ..." >&2
# torch first, pinned to the CPU build (on PyPI's CPU index or this machine's wheel cache) so the project's
# 'torch>=...' requirement does not pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
echo "[3/4] tritongen and its stages: ONNX, ONNX Runtime, Triton 2.51 (nvidia-pytriton), transformers, ... (a few minutes on a first run) ..." >&2
.venv/bin/python -m pip install -q -e ".[convert,server,image,report,hf,sign,deploy,test,examples]"
# facenet-pytorch for the MTCNN ONet example (examples/mtcnn_onet.py: weights in the package, 1.9 MB): without its
# dependencies, which pin torch<2.3 and torchvision; the example reads the weights file and never imports the package.
.venv/bin/python -m pip install -q --no-deps "facenet-pytorch==2.6.0"
# resemblyzer for its voice encoder (examples/resemblyzer_encoder.py: weights in the package, 17 MB): without its
# audio front end's dependencies (webrtcvad, librosa); the example reads the weights file and never imports the package.
.venv/bin/python -m pip install -q --no-deps "resemblyzer==0.1.4"
echo "[4/4] perf_analyzer ..." >&2
# perf_analyzer: the binary from tritonclient 2.48's wheel, extracted into the venv (the venv keeps 2.73).
bash scripts/install_perf_analyzer.sh
.venv/bin/python - <<'PY'
import numpy
assert numpy.__version__.startswith("1."), f"numpy {numpy.__version__}: Triton 2.51's Python backend needs numpy<2"
PY
echo "$want" > "$stamp"
echo "ready: .venv/bin/tritongen" >&2
