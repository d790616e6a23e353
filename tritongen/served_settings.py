"""The settings of a model's config that its measured latency and throughput depend on, read alike from the config a
server serves (its JSON answer) and from a ``config.pbtxt``: ``perf`` records those it measured under, ``deploy
--from-perf`` compares them with the repository's before sizing anything from the figures.

Triton fills a dynamic batcher's empty ``preferred_batch_size`` with ``max_batch_size``: an empty list reads as
``[max_batch_size]``, so that a file and the config served from it compare equal. What Triton decides by itself is
unknown (None) and not compared: the instance count of a group that gives none (or 0, or no group at all: 1 or 2
per CPU, one per GPU, by backend and host), and the batching of a file without ``max_batch_size`` for a backend
whose auto-complete may set it (ONNX Runtime, TensorFlow, OpenVINO), and the batching of a sequence model (its
sequence batcher's rules). An ensemble (its steps batch and run instances of their own) has no settings here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

MAX_SETTING = 10**15  # no batch, count or delay (us: 31 years) comes near it; a results.json's figures stay below
MAX_SHOWN_SIZES = 8  # preferred batch sizes named in a message
# backends (and platforms) whose auto-complete fills max_batch_size and a dynamic batcher into a config without them
AUTO_COMPLETING = frozenset(
    {"onnxruntime", "tensorflow", "openvino", "onnxruntime_onnx", "tensorflow_savedmodel", "tensorflow_graphdef"}
)


@dataclass(frozen=True)
class ServedSettings:
    """What a model was (or is) served with: its batching and its instances; None where Triton decides it."""

    max_batch_size: int | None
    instances: int | None
    dynamic_batching: bool | None
    preferred_batch_sizes: tuple[int, ...] | None = ()
    max_queue_delay_us: int | None = 0

    def text(self) -> str:
        """``max batch 8, 2 instances, dynamic batching (preferred 4, 8; queue delay 100 us)``."""
        parts = [
            "max batch as Triton completes it" if self.max_batch_size is None else f"max batch {self.max_batch_size}",
            "instances as Triton places them"
            if self.instances is None
            else f"{self.instances} instance{'s' * (self.instances != 1)}",
        ]
        if self.dynamic_batching:
            sizes = _shown(self.preferred_batch_sizes).strip("[]").replace(",", ", ")
            parts.append(f"dynamic batching (preferred {sizes}; queue delay {self.max_queue_delay_us} us)")
        elif self.dynamic_batching is not None:
            parts.append("no dynamic batching")
        elif self.max_batch_size is not None:  # a sequence model: its sequence batcher batches it
            parts.append("batched by its sequence batcher")
        return ", ".join(parts)

    def differences(self, now: ServedSettings) -> list[str]:
        """What changed from these settings to ``now`` (where both say): ``["instances 2 -> 1", ...]``."""
        labels = {
            "max_batch_size": "max batch",
            "instances": "instances",
            "dynamic_batching": "dynamic batching",
            "preferred_batch_sizes": "preferred batch sizes",
            "max_queue_delay_us": "queue delay (us)",
        }
        out = []
        for f in fields(self):
            before, after = getattr(self, f.name), getattr(now, f.name)
            if before is not None and after is not None and before != after:
                out.append(f"{labels[f.name]} {_shown(before)} -> {_shown(after)}")
        return out


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        more = ",..." if len(value) > MAX_SHOWN_SIZES else ""
        return "[" + ",".join(map(str, value[:MAX_SHOWN_SIZES])) + more + "]"
    return str(value)


def _int(value: Any, where: str) -> int:
    """A config integer as JSON carries it (int64 fields as strings in protobuf's JSON), within int64."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{where} is not an integer")
    if isinstance(value, str) and not (value.isascii() and value.lstrip("-").isdigit() and len(value) <= 21):
        raise ValueError(f"{where} is not an integer")
    number = int(value)
    if not -(2**63) <= number < 2**63:
        raise ValueError(f"{where} is {number}, outside int64")
    return number


def _setting(number: int, where: str) -> int:
    if not 0 <= number <= MAX_SETTING:
        raise ValueError(f"{where} is {number}, not from 0 to {MAX_SETTING}")
    return number


def _instances(groups: Any) -> int | None:
    """Instances over every group; None where Triton picks a count (a group without one, or none at all)."""
    if not isinstance(groups, list) or not all(isinstance(g, Mapping) for g in groups):
        raise ValueError("instance_group is not a list of groups")
    counts = [_int(g.get("count", 0), "instance_group.count") for g in groups]
    if not counts or any(c <= 0 for c in counts):  # Triton's default: by backend and host
        return None
    return _setting(sum(counts), "instance_group counts")


def served_settings_from_config(config: Mapping[str, Any]) -> ServedSettings | None:
    """The settings of a model config in its JSON form (a server's answer to a config request, or
    :func:`served_settings_from_model_config`'s); None for an ensemble. Raises ValueError where a field is not an
    integer, a list or a mapping where Triton writes one."""
    if config.get("platform") == "ensemble":
        return None
    max_batch = _setting(_int(config.get("max_batch_size", 0), "max_batch_size"), "max_batch_size")
    instances = _instances(config.get("instance_group") or [])
    engine = {str(config.get("backend") or ""), str(config.get("platform") or "")}
    if max_batch == 0 and engine & AUTO_COMPLETING:  # auto-complete may batch it: Triton's to say
        return ServedSettings(None, instances, None, None, None)
    if config.get("sequence_batching") is not None:  # the sequence batcher batches by its own rules: not compared
        return ServedSettings(max_batch, instances, None, None, None)
    batching = config.get("dynamic_batching")
    if batching is None:
        return ServedSettings(max_batch, instances, False)
    if not isinstance(batching, Mapping):
        raise ValueError("dynamic_batching is not a mapping")
    sizes = batching.get("preferred_batch_size") or []
    if not isinstance(sizes, list):
        raise ValueError("dynamic_batching.preferred_batch_size is not a list")
    preferred = tuple(sorted({_setting(_int(s, "preferred_batch_size"), "preferred_batch_size") for s in sizes}))
    if not preferred and max_batch > 0:
        preferred = (max_batch,)  # as Triton serves an empty list
    delay = _int(batching.get("max_queue_delay_microseconds", 0), "max_queue_delay_microseconds")
    return ServedSettings(max_batch, instances, True, preferred, _setting(delay, "max_queue_delay_microseconds"))


def served_settings_from_model_config(config: Any) -> ServedSettings | None:
    """The settings of a parsed ``config.pbtxt`` (tritonclient's ModelConfig protobuf)."""
    from google.protobuf.json_format import MessageToDict

    return served_settings_from_config(MessageToDict(config, preserving_proto_field_name=True))


def comparable_settings(config: Any) -> ServedSettings | None:
    """:func:`served_settings_from_model_config`, or None where a value is past what perf records (Triton loads a
    queue delay of 10**16 us): nothing is compared with such a file."""
    try:
        return served_settings_from_model_config(config)
    except ValueError:
        return None
