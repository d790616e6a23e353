"""Streaming voice activity detection: silero-vad (its PyPI package ships the model) on Triton's sequence batcher.

1. ``tritongen build`` the packaged TorchScript model as it is: ``forward(x, sr)`` takes a Python int (fixed with
   ``--const sr=16000``) and keeps its recurrent state and audio context in attributes between calls
   (``--state-from-attributes auto`` makes them state tensors; the local target's model keeps one state per
   sequence, keyed by correlation ID).
2. Boot tritonserver on the repository (validated and verified first).
3. Stream 16 kHz speech-like audio in 512-sample chunks over several concurrent sequences, and compare every
   chunk's served speech probability with the packaged model run in-process over the same stream.
4. Print the largest difference and the server's statistics: fewer executions than inferences means chunks of
   different streams ran together.

    python examples/silero_vad_stream.py [--streams 8] [--seconds 2] [--repo DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's tritongen, as the other examples use
SAMPLE_RATE = 16_000
CHUNK = 512


def speech_like(seed: int, seconds: float) -> np.ndarray:
    """Deterministic speech-like audio: voiced syllables (harmonics of a 100-220 Hz pitch under a syllable-rate
    envelope) between pauses, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = rng.uniform(100, 220)
    voiced = sum(np.sin(2 * np.pi * pitch * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2.5, 4.5) * t), 0, None) ** 2
    pause = (t % 1.0) < rng.uniform(0.5, 0.8)
    return (0.3 * voiced * envelope * pause + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def in_process(chunks: list[np.ndarray]) -> np.ndarray:
    import silero_vad
    import torch

    model = silero_vad.load_silero_vad()  # a fresh model per stream: its state starts empty
    with torch.inference_mode():
        return np.array([float(model(torch.from_numpy(c)[None], SAMPLE_RATE)) for c in chunks])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repo", type=Path, help="model repository to write (default: a temporary folder)")
    args = parser.parse_args()

    import silero_vad
    import torch

    import tritongen
    from tritongen.client import infer_sequences_concurrently, model_statistics

    work = Path(tempfile.mkdtemp(prefix="silero-"))
    repo = args.repo or work / "model_repository"
    model_file = work / "silero_vad.pt"
    torch.jit.save(silero_vad.load_silero_vad(), str(model_file))
    result = tritongen.build(
        model_file,
        name="silero_vad",
        inputs=[f"x:FP32:{CHUNK}"],
        consts=[f"sr={SAMPLE_RATE}"],
        state_from_attributes="auto",
        max_batch_size=args.streams,
        repo=repo,
        force=True,
        progress=print,
    )
    print(f"state pairs: {', '.join(p.text for p in result.spec.states)}")
    count = int(args.seconds * SAMPLE_RATE) // CHUNK
    streams = [np.split(speech_like(seed, count * CHUNK / SAMPLE_RATE), count) for seed in range(args.streams)]
    with tritongen.serve(repo) as server:
        answers = infer_sequences_concurrently(
            server.grpc_url, "silero_vad", [[{"x": c[None]} for c in chunks] for chunks in streams]
        )
        stats = model_statistics(server.grpc_url, "silero_vad")
    worst = 0.0
    for i, (chunks, answer) in enumerate(zip(streams, answers)):
        served = np.array([float(a["output"].ravel()[0]) for a in answer])
        worst = max(worst, float(np.abs(served - in_process(chunks)).max()))
        print(f"stream {i}: speech probability " + " ".join(f"{p:.2f}" for p in served[:: max(1, count // 12)]))
    print(
        f"{args.streams} streams x {count} chunks: max |served - in-process| = {worst:.2e}; "
        f"{stats['inference_count']} inferences in {stats['execution_count']} executions"
    )
    if worst > 1e-4:
        raise SystemExit("MISMATCH")
    print("MATCH")


if __name__ == "__main__":
    main()
