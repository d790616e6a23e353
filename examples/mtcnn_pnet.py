"""MTCNN's proposal network (PNet), with the trained weights that ship inside the ``facenet-pytorch`` PyPI package.

PNet is fully convolutional: an RGB image of any height and width (at least 12, its receptive field; values
``(pixel - 127.5) / 128``, NCHW) gives a map of box corrections (4 channels) and face / not-face probabilities
(2 channels, softmax over the channels), one cell per 2 pixels. Served with every spatial size a dynamic
dimension allows:

    tritongen build $(python examples/mtcnn_pnet.py) --model-factory examples/mtcnn_pnet.py:make_pnet \\
        --name pnet --input x:FP32:3,-1,-1 --output box --output prob \\
        --dim-range x:1:12:48:160 --dim-range x:2:12:64:160

The weights are ``facenet_pytorch/data/pnet.pt`` (a state_dict), found without importing the package (its metadata
pins torch < 2.3 and it imports torchvision; scripts/setup.sh installs it with ``--no-deps``). The architecture below
is a copy of its ``PNet`` (facenet-pytorch, MIT licence, Copyright (c) 2019 Timothy Esler) without the weight loading.

    python examples/mtcnn_pnet.py      # prints the weights path
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn


def pnet_weights_path() -> Path:
    """``pnet.pt`` inside the installed facenet-pytorch package (found without importing it)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("facenet-pytorch is not installed: pip install --no-deps facenet-pytorch==2.6.0")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "pnet.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed facenet-pytorch")
    return path


class PNet(nn.Module):
    """MTCNN PNet, as in facenet_pytorch.models.mtcnn.PNet (forward returns box corrections, face probabilities)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


def make_pnet() -> PNet:
    """The architecture only; ``tritongen build pnet.pt`` loads the package's weights into it."""
    return PNet().eval()


def pretrained_pnet() -> PNet:
    net = make_pnet()
    net.load_state_dict(torch.load(pnet_weights_path(), map_location="cpu", weights_only=True))
    return net


if __name__ == "__main__":
    print(pnet_weights_path())
