"""Wall time of ``tritongen build`` for all-MiniLM-L6-v2 as a ratio to a bare ``torch.onnx.export``.

Both run as fresh processes (so both pay for Python start-up, ``import torch`` and loading ``model.pt``),
alternating, several rounds in one run; the ratio of the medians is printed. The bare export is what a user
would write by hand: load the TorchScript model, ``torch.onnx.export`` with dynamic batch and sequence axes.
Target (issue 2): at most 1.5x.

    .venv/bin/python bench/build_overhead.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BARE = """
import sys, numpy as np, torch
model = torch.jit.load(sys.argv[1]).eval()
samples = np.load(sys.argv[2])
args = tuple(torch.from_numpy(samples[n][:2]) for n in ("input_ids", "attention_mask"))
axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}}
torch.onnx.export(model, args, sys.argv[3], input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                  dynamic_axes=axes, opset_version=18, dynamo=False)
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tritongen = str(Path(sys.executable).parent / "tritongen")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "minilm_to_torchscript.py"), "--out", str(work)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        model, samples = work / "minilm.pt", work / "minilm_samples.npz"
        bare_cmd = [sys.executable, "-c", BARE, str(model), str(samples), str(work / "bare.onnx")]
        build_cmd = [
            tritongen,
            "build",
            str(model),
            "--name",
            "minilm",
            "--input",
            "input_ids:INT64:-1",
            "--input",
            "attention_mask:INT64:-1",
            "--output",
            "embedding",
            "--sample-inputs",
            str(samples),
            "--max-batch-size",
            "16",
            "--repo",
            str(work / "repo"),
            "--force",
        ]
        timed(bare_cmd)  # warm the page cache for both
        bare_s, build_s = [], []
        for _ in range(args.rounds):
            bare_s.append(timed(bare_cmd))
            build_s.append(timed(build_cmd))
        stages = subprocess.run(build_cmd, check=True, capture_output=True, text=True).stderr
    print(f"bare torch.onnx.export: median {statistics.median(bare_s):.2f}s  runs {[round(x, 2) for x in bare_s]}")
    print(f"tritongen build:        median {statistics.median(build_s):.2f}s  runs {[round(x, 2) for x in build_s]}")
    print("tritongen build stages (last run):")
    print("  " + "\n  ".join(line for line in stages.splitlines() if line.strip()))
    ratio = statistics.median(build_s) / statistics.median(bare_s)
    print(f"RATIO build / bare export: {ratio:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
