"""resemblyzer's voice encoder (a 3-layer LSTM over mel frames -> a 256-d L2-normed speaker embedding), with the
trained weights that ship inside the ``resemblyzer`` PyPI package (``resemblyzer/pretrained.pt``; nothing is
downloaded). The number of frames is a dynamic dimension:

    tritongen build $(python examples/resemblyzer_encoder.py) \\
        --model-factory examples/resemblyzer_encoder.py:make_encoder --name voice \\
        --input mels:FP32:-1,40 --output embedding --dim-range mels:0:40:160:400

The package is installed with ``pip install --no-deps resemblyzer==0.1.4`` (scripts/setup.sh does): its audio
front end needs webrtcvad and librosa, which serving the encoder does not. The file is found without importing the
package, and the architecture below is a copy of its ``VoiceEncoder`` (resemblyzer, Apache-2.0 licence, Corentin
Jemine) without the device and weight loading; the checkpoint keeps the weights under ``model_state`` beside the
optimizer's state, which tritongen reads as a training checkpoint.

    python examples/resemblyzer_encoder.py      # prints the weights path
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

MEL_CHANNELS = 40
HIDDEN = 256


def encoder_weights_path() -> Path:
    """``pretrained.pt`` inside the installed resemblyzer package (found without importing it)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("resemblyzer is not installed: pip install --no-deps resemblyzer==0.1.4")
    path = Path(list(spec.submodule_search_locations)[0]) / "pretrained.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed resemblyzer")
    return path


class VoiceEncoder(nn.Module):
    """resemblyzer.VoiceEncoder's network: mels (batch, frames, 40) -> embedding (batch, 256), positive, L2-normed."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(MEL_CHANNELS, HIDDEN, 3, batch_first=True)
        self.linear = nn.Linear(HIDDEN, HIDDEN)
        self.relu = nn.ReLU()
        # the training loss's two scalars, saved in the checkpoint (resemblyzer loads it with strict=False); unused here
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        embeds_raw = self.relu(self.linear(hidden[-1]))
        return embeds_raw / torch.norm(embeds_raw, dim=1, keepdim=True)


def make_encoder() -> VoiceEncoder:
    """The architecture only; ``tritongen build pretrained.pt`` loads the package's weights into it."""
    return VoiceEncoder().eval()


def pretrained_encoder() -> VoiceEncoder:
    net = make_encoder()
    checkpoint = torch.load(encoder_weights_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(checkpoint["model_state"])
    return net


if __name__ == "__main__":
    print(encoder_weights_path())
