"""Served throughput of precision variants through the real Triton: all-MiniLM-L6-v2 INT8 vs FP32.

:func:`served_throughput_rps` is the reusable part (``bench/precision.py`` calls it): it measures one model of a
repository with tritongen's perf engine on a real tritonserver, booting one (verified first) unless given the
URL of a running one. The repository must hold ``--target local`` models: the Triton that installs from PyPI
here (nvidia-pytriton's) has the Python backend only, which runs each ``model.onnx`` with ONNX Runtime on the CPU.

The main builds MiniLM twice with ``--target local`` (FP32, and INT8 calibrated behind the accuracy guard) into
one repository, serves it once, and measures both models in alternating rounds (so both see the same machine
load) with the same real sentences padded to ``--seq`` tokens, sent as batch-1 requests that dynamic batching
combines. The client runs on the same cores as the server, as in any single-machine measurement here.

    .venv/bin/python bench/served_precision.py [--rounds 3] [--concurrency 16] [--duration 6] [--seq 128]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_ports() -> dict[str, int]:
    """``http_port``, ``grpc_port``, ``metrics_port`` the system hands out free now: not Triton's defaults, where
    another server on this machine (gRPC binds with SO_REUSEPORT) could share the port and answer instead."""
    sockets = [socket.socket() for _ in range(3)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return {f"{kind}_port": s.getsockname()[1] for kind, s in zip(("http", "grpc", "metrics"), sockets)}
    finally:
        for s in sockets:
            s.close()


def served_throughput_rps(
    repo: str | Path,
    name: str,
    *,
    concurrency: int = 16,
    duration_s: float = 6.0,
    input_data: str | Path | None = None,
    url: str | None = None,
) -> float:
    """Requests per second that model ``name`` of ``repo`` answers on a real tritonserver (tritongen's built-in
    perf engine, closed loop at ``concurrency`` requests in flight, batch-1 requests, gRPC).

    ``input_data``: an ``.npz`` with one array per input (batch axis first; each row is one request); default
    the samples the build saved. ``url``: a server already serving ``repo`` (its gRPC address); default: boot
    one on free ports (:func:`free_ports`) for this measurement (``tritongen.serve``: validated and verified
    first) and stop it after.
    With batch-1 requests, requests/s is rows (sequences, images) per second. Raises ``TritongenError`` when
    the repository is not servable, or when any request failed (a throughput with errors is not a figure).
    """
    from tritongen.errors import TritongenError
    from tritongen.perf import PerfSpec, perf_from_spec

    if url is None:
        import tritongen

        with tritongen.serve(repo, **free_ports()) as server:
            return served_throughput_rps(
                repo, name, concurrency=concurrency, duration_s=duration_s, input_data=input_data, url=server.grpc_url
            )
    spec = PerfSpec(
        model=name,
        url=url,
        concurrency=(concurrency,),
        duration_s=duration_s,
        repo=Path(repo),
        input_data=None if input_data is None else Path(input_data),
    )
    point = perf_from_spec(spec).points[0]
    if point.errors:
        raise TritongenError(
            f"{name}: {dict(point.errors)} failed request(s) at concurrency {concurrency}",
            "look at the server log: the served model fails on these inputs",
        )
    return point.throughput_rps


def _tokens(texts, seq: int) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    from examples.minilm_to_torchscript import minilm_dir

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    enc = tok(texts, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


def _build_minilm(work: Path, seq: int, calib: int) -> dict[str, float]:
    """Trace MiniLM, build it FP32 and INT8 with ``--target local`` into ``work/repo``; seconds per build."""
    from tests.sentences import sentences
    from tritongen.build import build
    from tritongen.spec import build_spec_from_options

    script = ROOT / "examples/minilm_to_torchscript.py"
    subprocess.run([sys.executable, str(script), "--out", str(work)], check=True, capture_output=True)
    np.savez(work / "calib.npz", **_tokens(sentences(calib, seed=1), seq))
    np.savez(work / "load.npz", **_tokens(sentences(64, seed=11), seq))  # neither calibration's nor the guard's
    common = dict(
        inputs=["input_ids:INT64:-1", "attention_mask:INT64:-1"],
        outputs=["embedding"],
        max_batch_size=16,
        repo=work / "repo",
        target="local",
        force=True,
    )
    built_s = {}
    for precision in ("fp32", "int8"):
        start = time.perf_counter()
        extra = {"precision": "int8", "calib_data": work / "calib.npz"} if precision == "int8" else {}
        build(build_spec_from_options(work / "minilm.pt", name=f"minilm_{precision}", **common, **extra))
        built_s[precision] = time.perf_counter() - start
    return built_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating FP32/INT8 measurements (median kept)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per model and round")
    parser.add_argument("--seq", type=int, default=128, help="padded sequence length of every request")
    parser.add_argument("--calib", type=int, default=288, help="calibration sentences (a quarter held out)")
    parser.add_argument("--work", type=Path, help="keep the models here (default: a new temp folder)")
    parser.add_argument("--reuse", action="store_true", help="serve the models an earlier run left in --work")
    args = parser.parse_args()

    import tritongen

    work = args.work or Path(tempfile.mkdtemp(prefix="tritongen-bench-served-precision-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TRITONGEN_CACHE_DIR", str(work / "cache"))
    repo = work / "repo"
    built_s = None if args.reuse else _build_minilm(work, args.seq, args.calib)
    guard = json.loads((repo / "minilm_int8" / "1" / "tritongen" / "manifest.json").read_text())["precision"]

    rps: dict[str, list[float]] = {"fp32": [], "int8": []}
    with tritongen.serve(repo, **free_ports()) as server:
        for precision in rps:  # one unmeasured pass each: the first requests pay for loading and warm-up
            served_throughput_rps(
                repo,
                f"minilm_{precision}",
                concurrency=args.concurrency,
                duration_s=1.0,
                input_data=work / "load.npz",
                url=server.grpc_url,
            )
        for _ in range(args.rounds):
            for precision in rps:
                rps[precision].append(
                    served_throughput_rps(
                        repo,
                        f"minilm_{precision}",
                        concurrency=args.concurrency,
                        duration_s=args.duration,
                        input_data=work / "load.npz",
                        url=server.grpc_url,
                    )
                )
    median = {p: statistics.median(v) for p, v in rps.items()}
    acc = guard["accuracy"]
    print(
        f"all-MiniLM-L6-v2 served by tritonserver (Python backend, ONNX Runtime CPU), {os.cpu_count()} cores, "
        f"batch-1 requests of {args.seq} tokens at concurrency {args.concurrency}, {args.rounds} rounds"
    )
    built = f"fp32 {built_s['fp32']:.1f}s, int8 {built_s['int8']:.1f}s" if built_s else f"reused from {work}"
    print(
        f"build: {built}; guard (held-out): cosine mean "
        f"{acc['cosine_mean']:.5f} min {acc['cosine_min']:.5f}, {len(guard['kept_layers'])} weight MatMul(s) "
        f"kept in FP32"
    )
    for p in rps:
        print(f"served {p}: " + ", ".join(f"{v:.1f}" for v in rps[p]) + f" seq/s (median {median[p]:.1f})")
    print(f"int8/fp32 = {median['int8'] / median['fp32']:.2f}x")


if __name__ == "__main__":
    main()
