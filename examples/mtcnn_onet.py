"""MTCNN's output network (ONet), with the trained weights that ship inside the ``facenet-pytorch`` PyPI package.

ONet is the last stage of the MTCNN face detector: for a 48x48 RGB crop (values ``(pixel - 127.5) / 128``,
NCHW) it returns the bounding-box correction (4), five facial landmarks (10: x1..x5, y1..y5 as fractions of the
crop) and the face / not-face probabilities (2, softmax). Four convolutions and two dense layers: a small
convolutional network, the kind INT8 kernels are made for.

The weights are ``facenet_pytorch/data/onet.pt`` (a state_dict) in the installed package; nothing is downloaded.
The package is installed with ``pip install --no-deps facenet-pytorch==2.6.0`` (scripts/setup.sh does): its
metadata pins torch < 2.3 and torchvision, and importing it needs torchvision, which this project does not use.
So the file is located without importing the package, and the architecture below is a copy of its ``ONet``
(facenet-pytorch, MIT licence, Copyright (c) 2019 Timothy Esler) without the weight loading, for
``tritongen build onet.pt --model-factory examples/mtcnn_onet.py:make_onet``.

Crops for calibration and evaluation come from pictures that ship in installed packages: matplotlib's sample
portrait (``grace_hopper.jpg``; crops around the face, shifted, scaled and mirrored, as MTCNN's earlier stages
propose them) and scikit-learn's two sample photographs (``china.jpg``, ``flower.jpg``: crops without faces).

    python examples/mtcnn_onet.py --out work/      # writes work/calib.npz and work/heldout.npz, prints the weights path
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

CROP = 48
FACE_BOX = (160, 135, 370, 345)  # left, top, right, bottom of the face in grace_hopper.jpg (512 x 600)
OUTPUTS = ("box", "landmarks", "face_prob")


def onet_weights_path() -> Path:
    """``onet.pt`` inside the installed facenet-pytorch package (found without importing it)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("facenet-pytorch is not installed: pip install --no-deps facenet-pytorch==2.6.0")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "onet.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed facenet-pytorch")
    return path


class ONet(nn.Module):
    """MTCNN ONet, as in facenet_pytorch.models.mtcnn.ONet (forward returns box, landmarks, face probabilities)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


def make_onet() -> ONet:
    """The architecture only; ``tritongen build onet.pt`` loads the package's weights into it."""
    return ONet().eval()


def pretrained_onet() -> ONet:
    net = make_onet()
    net.load_state_dict(torch.load(onet_weights_path(), map_location="cpu", weights_only=True))
    return net


def _images() -> dict[str, np.ndarray]:
    from matplotlib import cbook
    from PIL import Image
    from sklearn.datasets import load_sample_image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
        portrait = np.asarray(im.convert("RGB"))
    return {"portrait": portrait, "china": load_sample_image("china.jpg"), "flower": load_sample_image("flower.jpg")}


def _crop(image: np.ndarray, box: tuple[float, float, float, float], mirror: bool) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    left, top, right, bottom = (int(round(v)) for v in box)
    left, top = max(0, left), max(0, top)
    right, bottom = min(w, max(right, left + 2)), min(h, max(bottom, top + 2))
    patch = Image.fromarray(image[top:bottom, left:right]).resize((CROP, CROP), Image.BILINEAR)
    array = np.asarray(patch, dtype=np.float32)
    return array[:, ::-1] if mirror else array


def onet_crops(count: int, seed: int, background: str) -> np.ndarray:
    """``count`` ONet inputs [count, 3, 48, 48] (FP32, MTCNN's normalisation): half around the portrait's face
    (centre shifted by up to 25% of its size, side scaled 0.75-1.35x, mirrored at random), half random squares of
    the ``background`` picture ("china" or "flower"), 30-250 px wide. Different seeds give different crops."""
    rng = np.random.default_rng(seed)
    images = _images()
    l0, t0, r0, b0 = FACE_BOX
    side0, cx0, cy0 = r0 - l0, (l0 + r0) / 2, (t0 + b0) / 2
    crops = []
    for i in range(count):
        if i % 2 == 0:
            side = side0 * rng.uniform(0.75, 1.35)
            cx, cy = cx0 + side0 * rng.uniform(-0.25, 0.25), cy0 + side0 * rng.uniform(-0.25, 0.25)
            crops.append(_crop(images["portrait"], (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2),
                               bool(rng.integers(2))))
        else:
            image = images[background]
            side = rng.uniform(30, 250)
            left, top = rng.uniform(0, image.shape[1] - side), rng.uniform(0, image.shape[0] - side)
            crops.append(_crop(image, (left, top, left + side, top + side), bool(rng.integers(2))))
    batch = np.stack(crops).transpose(0, 3, 1, 2)
    return np.ascontiguousarray((batch - 127.5) * 0.0078125, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("onet-work"))
    parser.add_argument("--calib", type=int, default=400, help="calibration crops (china.jpg backgrounds)")
    parser.add_argument("--heldout", type=int, default=400, help="held-out crops (flower.jpg backgrounds)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "calib.npz", x=onet_crops(args.calib, seed=1, background="china"))
    np.savez(args.out / "heldout.npz", x=onet_crops(args.heldout, seed=2, background="flower"))
    print(onet_weights_path())


if __name__ == "__main__":
    main()
