"""A second model family through the INT8 path: MTCNN's ONet (convolutional; weights from facenet-pytorch).

One run:
1. writes calibration crops (the portrait's face + china.jpg backgrounds) and held-out crops (other face crops +
   flower.jpg backgrounds), see ``examples/mtcnn_onet.py``;
2. builds ONet twice with the CLI, ``tritongen build onet.pt --model-factory examples/mtcnn_onet.py:make_onet
   --target local``: FP32, and ``--precision int8 --calib-data calib.npz`` (the accuracy guard checks it on the
   calibration file's held-out quarter);
3. agreement with PyTorch FP32 on the held-out crops, which neither calibration nor the guard saw: face / not-face
   top-1 (argmax of the probabilities), the detector's decision at its ONet threshold (p(face) >= 0.7), cosine of
   each output, and the landmarks' and box offsets' largest error in pixels of the 48-pixel crop;
4. the INT8 form, its share of weight-GEMM FLOPs, and the integer kernels ONNX Runtime's optimised graph runs
   (``QLinearConv``/``QGemm`` for ``--target local``'s CPU form);
5. model size, in-process ONNX Runtime throughput (batches of ``--batch`` crops, FP32 and INT8 alternated over
   ``--rounds``), and served throughput through the real Triton (``bench/served_precision.py``), each as int8/fp32.

    .venv/bin/python bench/precision_second_model.py [--rounds 5] [--batch 64] [--no-served]
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
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DETECT_THRESHOLD = 0.7  # facenet-pytorch's MTCNN default for its third stage (thresholds=[0.6, 0.7, 0.7])


def _build(work: Path, precision: str, batch: int, min_cosine: float) -> float:
    from examples.mtcnn_onet import OUTPUTS, onet_weights_path

    command = [
        sys.executable,
        "-m",
        "tritongen",
        "build",
        str(onet_weights_path()),
        "--name",
        f"onet_{precision}",
        "--model-factory",
        str(ROOT / "examples/mtcnn_onet.py") + ":make_onet",
        "--input",
        "x:FP32:3,48,48",
        "--max-batch-size",
        str(batch),
        "--target",
        "local",
        "--repo",
        str(work / "repo"),
        "--force",
    ]
    for name in OUTPUTS:
        command += ["--output", name]
    if precision == "int8":
        command += ["--precision", "int8", "--calib-data", str(work / "calib.npz"), "--min-cosine", str(min_cosine)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"tritongen build failed:\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - start


def _cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    g, w = got.reshape(len(got), -1).astype(np.float64), want.reshape(len(want), -1).astype(np.float64)
    return np.sum(g * w, axis=1) / np.maximum(np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1), 1e-30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="max batch size, and the in-process batch")
    parser.add_argument("--calib", type=int, default=400, help="calibration crops (a quarter held out by the guard)")
    parser.add_argument("--heldout", type=int, default=400, help="crops for the agreement figures")
    parser.add_argument("--min-cosine", type=float, default=0.99, help="the INT8 build's accuracy bar (guard)")
    parser.add_argument("--no-served", action="store_true", help="skip the served throughput (no tritonserver)")
    parser.add_argument("--work", type=Path, help="keep the models here (default: a new temp folder)")
    args = parser.parse_args()

    import onnxruntime as ort
    import torch

    from bench.served_precision import served_throughput_rps
    from examples.mtcnn_onet import OUTPUTS, onet_crops, pretrained_onet

    work = args.work or Path(tempfile.mkdtemp(prefix="tritongen-bench-onet-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TRITONGEN_CACHE_DIR", str(work / "cache"))
    np.savez(work / "calib.npz", x=onet_crops(args.calib, seed=1, background="china"))
    heldout = onet_crops(args.heldout, seed=2, background="flower")
    np.savez(work / "heldout.npz", x=heldout)
    built_s = {p: _build(work, p, args.batch, args.min_cosine) for p in ("fp32", "int8")}
    repo = work / "repo"
    guard = json.loads((repo / "onet_int8" / "1" / "tritongen" / "manifest.json").read_text())["precision"]

    with torch.inference_mode():
        want = [t.numpy() for t in pretrained_onet()(torch.from_numpy(heldout))]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sessions = {
        p: ort.InferenceSession(
            str(repo / f"onet_{p}" / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        for p in ("fp32", "int8")
    }
    import onnx

    optimized = ort.SessionOptions()  # the graph ONNX Runtime really runs for the INT8 file, after its optimiser
    optimized.log_severity_level = 3
    optimized.optimized_model_filepath = str(work / "int8-optimized.onnx")
    ort.InferenceSession(str(repo / "onet_int8" / "1" / "model.onnx"), optimized, providers=["CPUExecutionProvider"])
    ran = Counter(n.op_type for n in onnx.load(optimized.optimized_model_filepath, load_external_data=False).graph.node)
    got = {p: s.run(list(OUTPUTS), {"x": heldout}) for p, s in sessions.items()}
    faces = int(np.sum(want[2][:, 1] >= DETECT_THRESHOLD))

    batch = heldout[: args.batch]
    for s in sessions.values():
        s.run(None, {"x": batch})
    times: dict[str, list[float]] = {p: [] for p in sessions}
    reps = 20
    for _ in range(args.rounds):
        for p, s in sessions.items():
            start = time.perf_counter()
            for _ in range(reps):
                s.run(None, {"x": batch})
            times[p].append((time.perf_counter() - start) / reps)
    crops_s = {p: args.batch / statistics.median(t) for p, t in times.items()}
    sizes = {p: sum(f.stat().st_size for f in (repo / f"onet_{p}" / "1").glob("model.onnx*")) for p in sessions}

    print(f"MTCNN ONet (facenet-pytorch weights), CPU ONNX Runtime {ort.__version__}, {os.cpu_count()} cores")
    print(
        f"build: fp32 {built_s['fp32']:.1f}s, int8 {built_s['int8']:.1f}s (calibration on "
        f"{guard['calibration']['samples']} crops, guard on {guard['calibration']['eval_samples']} held out: "
        f"cosine mean {guard['accuracy']['cosine_mean']:.5f} min {guard['accuracy']['cosine_min']:.5f}, "
        f"{len(guard['attempts'])} attempt(s), {len(guard['kept_layers'])} layer(s) kept in FP32)"
    )
    share = guard.get("int8_weight_gemm_flops", {})
    print(
        f"INT8 form {guard['calibration'].get('int8_form')}: share of weight-GEMM FLOPs {share.get('share', 0):.1%} "
        f"({share.get('int8_nodes')}/{share.get('total_nodes')} weighted ops); ONNX Runtime runs "
        + ", ".join(
            f"{op} x{ran[op]}"
            for op in ("QLinearConv", "ConvInteger", "QGemm", "MatMulIntegerToFloat", "Conv", "Gemm")
            if ran[op]
        )
    )
    print(
        "guard's bars: "
        + ", ".join(
            f"{o['output']} max abs err {o['max_abs_err']:.4f} (row error bar {o['row_error_bar']:.4f}, cosine min "
            f"{o['cosine_min']:.4f})"
            for o in guard["accuracy"]["outputs"]
        )
    )
    print(
        f"held-out crops: {len(heldout)} ({faces} that FP32 calls a face at p >= {DETECT_THRESHOLD}); "
        "agreement with PyTorch FP32:"
    )
    for p in ("fp32", "int8"):
        box, landmarks, prob = got[p]
        top1 = float(np.mean(np.argmax(prob, 1) == np.argmax(want[2], 1)))
        decision = float(np.mean((prob[:, 1] >= DETECT_THRESHOLD) == (want[2][:, 1] >= DETECT_THRESHOLD)))
        cos = {n: _cosines(g, w) for n, g, w in zip(OUTPUTS, got[p], want)}
        lm_px = float(np.max(np.abs(landmarks - want[1]))) * 48
        box_px = float(np.max(np.abs(box - want[0]))) * 48
        print(
            f"  {p}: face top-1 {top1:.4f}, decision at {DETECT_THRESHOLD} {decision:.4f}, max |dp(face)| "
            f"{float(np.max(np.abs(prob - want[2]))):.4f}, landmarks max error {lm_px:.3f} px, box max error "
            f"{box_px:.3f} px, cosine mean/min "
            + ", ".join(f"{n} {c.mean():.5f}/{c.min():.5f}" for n, c in cos.items())
        )
    print(
        f"model size: fp32 {sizes['fp32'] / 2**20:.2f} MiB, int8 {sizes['int8'] / 2**20:.2f} MiB "
        f"(int8/fp32 = {sizes['int8'] / sizes['fp32']:.2f})"
    )
    print(
        f"in-process ONNX Runtime, batch {args.batch}: fp32 {crops_s['fp32']:.0f} crops/s, int8 "
        f"{crops_s['int8']:.0f} crops/s, int8/fp32 = {crops_s['int8'] / crops_s['fp32']:.2f}x"
    )
    if not args.no_served:
        import tritongen

        rps: dict[str, list[float]] = {"fp32": [], "int8": []}
        with tritongen.serve(repo) as server:
            for _ in range(3):
                for p in rps:
                    rps[p].append(
                        served_throughput_rps(
                            repo,
                            f"onet_{p}",
                            concurrency=32,
                            duration_s=4.0,
                            input_data=work / "heldout.npz",
                            url=server.grpc_url,
                        )
                    )
        median = {p: statistics.median(v) for p, v in rps.items()}
        print(
            f"served (tritonserver, Python backend, batch-1 requests at concurrency 32): fp32 {median['fp32']:.0f}"
            f" crops/s, int8 {median['int8']:.0f} crops/s"
        )
        print(f"int8/fp32 = {median['int8'] / median['fp32']:.2f}x")


if __name__ == "__main__":
    main()
