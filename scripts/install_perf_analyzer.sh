#!/usr/bin/env bash
# Installs perf_analyzer (the binary shipped in the manylinux wheel of tritonclient==2.48.0) into the venv,
# without installing that old tritonclient: the wheel is downloaded (no deps) into a cache and only the
# binary is extracted to .venv/lib/tritongen-tools/perf_analyzer. Its runtime needs: libcudart.so.12 (PyPI
# nvidia-cuda-runtime-cu12, installed into the venv; tritongen puts it on LD_LIBRARY_PATH) and Debian's
# libb64-0d (apt, installed here when running as root). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PA_VERSION="2.48.0"
tools="$VENV/lib/tritongen-tools"
target="$tools/perf_analyzer"
cache="${TRITONGEN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tritongen}/wheels"

if [ ! -x "$target" ]; then
  mkdir -p "$cache" "$tools"
  wheel="$(ls "$cache"/tritonclient-"$PA_VERSION"-*manylinux*x86_64.whl 2>/dev/null | head -n1 || true)"
  if [ -z "$wheel" ]; then
    "$VENV/bin/python" -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --python-version 3 \
      -d "$cache" "tritonclient==$PA_VERSION"
    wheel="$(ls "$cache"/tritonclient-"$PA_VERSION"-*.whl | head -n1)"
  fi
  "$VENV/bin/python" - "$wheel" "$target" <<'PY'
import sys, zipfile, shutil, os
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith("/data/bin/perf_analyzer")]
    if not names:
        sys.exit(f"{wheel} has no perf_analyzer binary")
    tmp = target + ".tmp"
    with z.open(names[0]) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
PY
fi

if ! "$VENV/bin/python" -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('nvidia.cuda_runtime') else 1)" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "nvidia-cuda-runtime-cu12>=12,<13"
fi

if ! ldconfig -p 2>/dev/null | grep -q libb64.so.0d; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    (apt-get install -y -q libb64-0d >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q libb64-0d >/dev/null; })
  else
    echo "perf_analyzer needs libb64-0d: run 'sudo apt-get install -y libb64-0d'" >&2
  fi
fi

cudart="$("$VENV/bin/python" -c "import nvidia.cuda_runtime, os; print(os.path.join(list(nvidia.cuda_runtime.__path__)[0], 'lib'))")"
if LD_LIBRARY_PATH="$cudart${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$target" --help >/dev/null 2>&1 \
   || LD_LIBRARY_PATH="$cudart${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$target" --version >/dev/null 2>&1; then
  echo "perf_analyzer ready: $target" >&2
else
  echo "perf_analyzer installed at $target but does not start; missing libraries:" >&2
  LD_LIBRARY_PATH="$cudart${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$target" | grep "not found" >&2 || true
  exit 1
fi
