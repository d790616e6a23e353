#!/usr/bin/env bash
# Sets up .venv (if needed), then builds all-MiniLM-L6-v2 into model_repository/, boots Triton on it,
# sends requests and shows that the served embeddings match PyTorch and sentence-transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/demo.py "$@"
