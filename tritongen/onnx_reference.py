"""The original ONNX file in ONNX Runtime as the reference of a build from an ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .onnx_input import check_static_sizes
from .ort_session import onnx_session


class OnnxReference:
    """The original ONNX file in ONNX Runtime, called like a torch module (tensors in, a tuple of tensors out): the
    reference that the parity gate and the precision guard compare with. ``path`` is the private copy the load
    made (:func:`tritongen.load.module_from_file`), which the build's cleaning reads too."""

    def __init__(self, path: Path, keep: Any = None) -> None:
        self.path = Path(path)
        self.keep = keep  # what holds ``path`` (a private copy's temporary folder): it lives as long as this
        check_static_sizes(self.path)  # before ONNX Runtime folds its constants
        self.session = onnx_session(self.path)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *tensors: Any) -> tuple[Any, ...]:
        import torch

        feed = {n: np.ascontiguousarray(t.detach().cpu().numpy()) for n, t in zip(self.input_names, tensors)}
        return tuple(torch.from_numpy(np.asarray(a)) for a in self.session.run(None, feed))

    def eval(self) -> OnnxReference:
        return self
