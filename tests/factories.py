"""Tiny models for the tests, plus helpers that save them in each form ``tritongen.load`` reads.

Every ``make_*`` factory takes no required argument, so ``--model-factory tests.factories:make_small_conv``
(or ``tests/factories.py:make_small_conv``) works as is, and builds the same weights every time (it seeds
a forked RNG, leaving the global one alone).

Shapes (without the batch axis Triton adds):

* ``SmallConvNet``: ``x: FP32 [3, 32, 32]`` -> ``logits: FP32 [10]``; has BatchNorm and Dropout, so a module
  left in training mode gives different (random) outputs.
* ``TwoInTwoOut``: ``a: FP32 [4]``, ``b: FP32 [4]`` -> ``(a + b, a * b)``; no parameters.
* ``DynamicSeq``: ``x: FP32 [-1, 8]`` (a sequence of any length) -> the mean over the sequence, ``[8]``;
  no parameters.
* ``make_tiny_linear``: ``x: FP32 [4]`` -> ``[2]``, an ``nn.Linear(4, 2)``: the smallest model with weights
  (the fuzz test mutates its state_dict).

Models that export badly (issue 16), none with parameters:

* ``KthValue``: ``x: FP32 [-1]`` -> ``[]``; ``torch.kthvalue`` has no ONNX translation in either exporter.
* ``PairwiseDistance``: ``x: FP32 [-1, 4]`` -> ``[-1, 3]`` (``torch.cdist`` to 3 points): the dynamo exporter cannot
  translate it, the TorchScript exporter can.
* ``FixedWidth``: ``x: FP32 [16]`` only (it reshapes to 4 x 4): declared ``-1``, the export fails.
* ``DataDependent``: branches on the sum of its input.

Non-tensor arguments (issue 16, item 2):

* ``WithRate``: ``forward(x, sr: int, gain: float = 1.0, negate: bool = False)`` -> ``x * sr / 1000 * gain``,
  negated when ``negate``; ``x: FP32 [4]``.

Variable sizes (issue 16, item 3):

* ``FullyConv``: ``x: FP32 [3, -1, -1]`` -> ``[4, -1, -1]``; three 5x5 convolutions and a 2x2 pooling, a
  receptive field of 18 pixels: any H, W >= 18 works, 9 or 16 do not.
* ``MeanOverLast``: ``x: FP32 [-1]`` -> ``[1]``, the mean written as ``sum / float(x.shape[-1])``: a TorchScript
  trace keeps the traced length as a constant.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

SMALL_CONV_INPUT = (3, 32, 32)
SMALL_CONV_CLASSES = 10
TWO_IN_SIZE = 4
SEQ_FEATURES = 8


class SmallConvNet(nn.Module):
    """3x32x32 image -> 10 logits."""

    def __init__(self, channels: int = 8, classes: int = SMALL_CONV_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(2 * channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(torch.flatten(self.features(x), 1)))


class TwoInTwoOut(nn.Module):
    """``(a, b) -> (a + b, a * b)``."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a * b


class DynamicSeq(nn.Module):
    """``[..., T, 8] -> [..., 8]``: the mean over a sequence of any length ``T``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-2)


class KthValue(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.kthvalue(x, 2, dim=-1)[0]


class PairwiseDistance(nn.Module):
    """Distances to 3 fixed points."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("points", torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 3.0, 1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, self.points.expand(x.shape[0], 3, 4), compute_mode="donot_use_mm_for_euclid_dist")


class FixedWidth(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 4, 4).sum(-1)


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on values: no exporter can keep both branches
            return x * 2
        return x - 1


class WithRate(nn.Module):
    def forward(self, x: torch.Tensor, sr: int, gain: float = 1.0, negate: bool = False) -> torch.Tensor:
        y = x * (sr / 1000.0) * gain
        if negate:
            return -y
        return y


class WithOptionalMask(nn.Module):
    """forward() with defaults the TorchScript exporter cannot pass: an optional tensor and a string."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, mode: str = "sum") -> torch.Tensor:
        y = x * 2.0
        if mask is not None:
            y = y * mask
        if mode == "neg":
            return -y
        return y


class Accumulator(nn.Module):
    """Explicit state: ``forward(x, acc) -> (y, acc_out)``; y = x + acc, the next state acc + x (a running sum)."""

    def forward(self, x: torch.Tensor, acc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = acc + x
        return total * 1.0, total


class StateChangesType(nn.Module):
    """``acc_out`` is float64 while ``acc`` is float32: not a state pair."""

    def forward(self, x: torch.Tensor, acc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + acc, (acc + x).double()


class RunningSum(nn.Module):
    """State kept in an attribute between calls (created lazily, like silero-vad's), plus a last-batch bookkeeping
    int: each call returns the running sum of every x so far in the stream, scaled by ``gain``."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(0.5))
        self._sum = torch.zeros(0)
        self._last_batch = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._last_batch != x.shape[0] or self._sum.numel() == 0:
            self._sum = torch.zeros_like(x)
        self._sum = self._sum + x
        self._last_batch = x.shape[0]
        return self._sum * self.gain


class KeepsAList(nn.Module):
    """State in a Python list: cannot travel as a tensor."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: list[torch.Tensor] = []
        self._total = torch.zeros(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._seen = self._seen + [x]
        self._total = x * len(self._seen)
        return self._total


class BranchyState(nn.Module):
    """State in an attribute, and a branch on the input's values."""

    def __init__(self) -> None:
        super().__init__()
        self._h = torch.zeros(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._h.numel() == 0:
            self._h = torch.zeros_like(x)
        if bool(x.sum() > 0):
            self._h = self._h + x
        return self._h


class DecayingBuffer(nn.Module):
    """State in a registered buffer, batch on axis 1 (like an RNN's hidden state): h = 0.5 h + x."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("h", torch.zeros(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        previous = self.h if self.h.numel() > 0 else torch.zeros_like(x).unsqueeze(0)
        self.h = 0.5 * previous + x.unsqueeze(0)
        return self.h[0] * 2.0


class GrowingHistory(nn.Module):
    """Keeps every chunk so far: a state that grows."""

    def __init__(self) -> None:
        super().__init__()
        self._history = torch.zeros(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._history = x if self._history.numel() == 0 else torch.cat([self._history, x], dim=1)
        return self._history.mean(dim=1, keepdim=True)


class StreamingConv(nn.Module):
    """A streaming Conv1d over [batch, 8, time] chunks of any length: the last 2 frames of each chunk are the next
    one's left context (``_cache``, a state attribute). ``trim`` frames are kept instead: 3 breaks the state's
    shape, which the TorchScript exporter cannot see (a slice of a variable-length concatenation)."""

    def __init__(self, keep: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(8, 16, 3)
        self.keep = keep
        self.register_buffer("_cache", torch.zeros(1, 8, 2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._cache.shape[0] != x.shape[0]:
            self._cache = torch.zeros(x.shape[0], 8, 2)
        full = torch.cat([self._cache, x], -1)
        self._cache = full[:, :, -self.keep :]
        return self.conv(full)


class StreamingConvExplicit(nn.Module):
    """:class:`StreamingConv` with its state explicit: ``forward(x, cache) -> (y, next_cache)``, keeping ``keep``
    frames (3 breaks the state's shape)."""

    def __init__(self, keep: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(8, 16, 3)
        self.keep = keep

    def forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = torch.cat([cache, x], -1)
        return self.conv(full), full[:, :, -self.keep :]


class GlobalCounter(nn.Module):
    """State that does not follow the batch: one counter for every row."""

    def __init__(self) -> None:
        super().__init__()
        self._count = torch.zeros(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._count = self._count + 1
        return x * self._count


class FullyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 5), nn.ReLU(), nn.Conv2d(8, 8, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MeanOverLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(-1, keepdim=True) / float(x.shape[-1])


def make_fully_conv(seed: int = 0) -> FullyConv:
    return _seeded(FullyConv, seed)


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def make_small_conv(seed: int = 0) -> SmallConvNet:
    return _seeded(SmallConvNet, seed)


def make_two_in_two_out() -> TwoInTwoOut:
    return TwoInTwoOut().eval()


def make_dynamic_seq() -> DynamicSeq:
    return DynamicSeq().eval()


def make_tiny_linear(seed: int = 0) -> nn.Linear:
    return _seeded(lambda: nn.Linear(TWO_IN_SIZE, 2), seed)


def small_conv_inputs(batch: int = 2, seed: int = 1) -> tuple[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, *SMALL_CONV_INPUT, generator=g),)


def two_in_two_out_inputs(batch: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, TWO_IN_SIZE, generator=g), torch.randn(batch, TWO_IN_SIZE, generator=g)


def dynamic_seq_inputs(batch: int = 2, length: int = 5, seed: int = 1) -> tuple[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, length, SEQ_FEATURES, generator=g),)


FORMS = ("torchscript", "torch.export", "state_dict", "pickled_module")


def save_model(
    model: nn.Module, path: Path, form: str, example_inputs: tuple[Any, ...] | None = None, dynamic_batch: bool = True
) -> Path:
    """Save ``model`` to ``path`` in ``form`` (one of :data:`FORMS`, or ``"torchscript-trace"``).

    ``torchscript`` scripts the model; ``torchscript-trace`` and ``torch.export`` need ``example_inputs`` (tensors
    with a leading batch axis, which torch.export keeps dynamic unless ``dynamic_batch`` is False).
    Torch's deprecation chatter about TorchScript is silenced.
    """
    path = Path(path)
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if form == "torchscript":
            torch.jit.save(torch.jit.script(model), str(path))
        elif form == "torchscript-trace":
            with torch.no_grad():
                torch.jit.save(torch.jit.trace(model, example_inputs), str(path))
        elif form == "torch.export":
            args = tuple(example_inputs)
            batch = torch.export.Dim("batch", min=1, max=4096)
            shapes = tuple({0: batch} for _ in args) if dynamic_batch else None
            with path.open("wb") as f:  # a file object: torch warns about paths that do not end in .pt2
                torch.export.save(torch.export.export(model, args, dynamic_shapes=shapes), f)
        elif form == "state_dict":
            torch.save(model.state_dict(), path)
        elif form == "pickled_module":
            torch.save(model, path)
        else:
            raise ValueError(f"unknown form {form!r}")
    return path


# ----------------------------------------------------------------------- outputs as models return them (issue 16)


class DictOut(nn.Module):
    """Returns a dict: its keys are the output names."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.lin(x)
        return {"logits": h, "probs": torch.softmax(h, -1)}


class TupleWithNone(nn.Module):
    """Returns a tuple whose middle item is None (an optional output that is off), and an INT64 class per item
    (shape [batch])."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor):
        h = self.lin(x)
        return h, None, h.argmax(-1)


class HFStyleOut(nn.Module):
    """Returns a Hugging Face ModelOutput with a None field (loss) and a tuple field (hidden_states)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor):
        from transformers.modeling_outputs import SequenceClassifierOutput

        h = self.lin(x)
        return SequenceClassifierOutput(loss=None, logits=h, hidden_states=(x, torch.tanh(h)))


class MixedDtypes(nn.Module):
    """INT64, BOOL and FP16 inputs and outputs."""

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, half: torch.Tensor):
        return {
            "ids2": ids * 2,
            "kept": mask & (ids > 0),
            "half2": half * 2,
            "any_big": (ids.sum(-1, keepdim=True) > 3),
        }


def mixed_dtype_inputs(batch: int = 3, seed: int = 1) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        "ids": rng.integers(-5, 5, (batch, 4)).astype(np.int64),
        "mask": rng.random((batch, 4)) > 0.5,
        "half": rng.standard_normal((batch, 4)).astype(np.float16),
    }


def declared_opsets() -> list[Any]:
    from onnx import helper

    return [helper.make_opsetid("", 17), helper.make_opsetid(DECLARED_DOMAIN, 1)]


DECLARED_DOMAIN = "tritongen.test"  # an operator domain nothing knows: shape inference leaves its outputs as declared


def declared_nodes(outputs: Any) -> list[Any]:
    """One node per output of an operator no library knows, so that ONNX's shape inference (which validate runs)
    leaves each output exactly as the graph declares it: a model that only declares, never runs."""
    from onnx import helper

    return [helper.make_node("Declared", [], [o.name], domain=DECLARED_DOMAIN) for o in outputs]


def onnx_declaring(config: Any, *, batch_dim: bool | None = None) -> bytes:
    """An ONNX model whose graph declares exactly the inputs and outputs of a Triton ``ModelConfig`` (type and dims,
    with a variable first dim where the config batches); the outputs are constants, as only the declarations are
    read by what uses it. ``batch_dim`` overrides whether the graph has the batch dim."""
    import onnx
    from onnx import TensorProto, helper

    batched = config.max_batch_size > 0 if batch_dim is None else batch_dim

    def value(io: Any) -> Any:
        element = getattr(TensorProto, {"FP32": "FLOAT", "FP16": "FLOAT16", "FP64": "DOUBLE"}.get(t := type_of(io), t))
        dims: list[Any] = ["batch", *io.dims] if batched else list(io.dims)
        return helper.make_tensor_value_info(io.name, element, [d if d != -1 else f"d{i}" for i, d in enumerate(dims)])

    def type_of(io: Any) -> str:
        from tritonclient.grpc import model_config_pb2

        return model_config_pb2.DataType.Name(io.data_type).removeprefix("TYPE_")

    graph = helper.make_graph(
        declared_nodes(config.output), "declared", [value(i) for i in config.input], [value(o) for o in config.output]
    )
    return onnx.helper.make_model(graph, opset_imports=declared_opsets()).SerializeToString()
