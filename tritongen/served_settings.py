"""The settings of a model's config that its measured latency and throughput depend on, read alike from the config a
server serves (its JSON answer) and from a ``config.pbtxt``: ``perf`` records those it measured under, ``deploy
--from-perf`` compares them with the repository's before sizing anything from the figures.

Triton fills a dynamic batcher's empty ``preferred_batch_size`` with ``max_batch_size`` and an instance group's
count 0 with 1 (per device): both are normalised so, so that a file and the config served from it compare equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_SETTING = 10**15  # no batch, count or delay (us: 31 years) comes near it; a results.json's figures stay below
MAX_SHOWN_SIZES = 8  # preferred batch sizes named in a message


@dataclass(frozen=True)
class ServedSettings:
    """What a model was (or is) served with: its batching and its instances."""

    max_batch_size: int
    instances: int
    dynamic_batching: bool
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0

    def text(self) -> str:
        """``max batch 8, 2 instances, dynamic batching (preferred 4, 8; queue delay 100 us)``."""
        parts = [f"max batch {self.max_batch_size}", f"{self.instances} instance{'s' * (self.instances != 1)}"]
        if self.dynamic_batching:
            sizes = ", ".join(map(str, self.preferred_batch_sizes[:MAX_SHOWN_SIZES]))
            more = ", ..." if len(self.preferred_batch_sizes) > MAX_SHOWN_SIZES else ""
            parts.append(f"dynamic batching (preferred {sizes}{more}; queue delay {self.max_queue_delay_us} us)")
        else:
            parts.append("no dynamic batching")
        return ", ".join(parts)

    def differences(self, now: ServedSettings) -> list[str]:
        """What changed from these settings to ``now``: ``["instances 2 -> 1", "max batch 8 -> 16"]``."""
        out = []
        for name, label in (
            ("max_batch_size", "max batch"),
            ("instances", "instances"),
            ("dynamic_batching", "dynamic batching"),
            ("preferred_batch_sizes", "preferred batch sizes"),
            ("max_queue_delay_us", "queue delay (us)"),
        ):
            before, after = getattr(self, name), getattr(now, name)
            if before != after:
                out.append(f"{label} {_shown(before)} -> {_shown(after)}")
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
    if isinstance(value, str) and not (value.isascii() and value.lstrip("-").isdigit() and len(value) <= 17):
        raise ValueError(f"{where} is not an integer")
    number = int(value)
    if not 0 <= number <= MAX_SETTING:
        raise ValueError(f"{where} is {number}, not from 0 to {MAX_SETTING}")
    return number


def served_settings_from_config(config: Mapping[str, Any]) -> ServedSettings:
    """The settings of a model config in its JSON form (a server's answer to a config request, or
    :func:`served_settings_from_model_config`'s). Raises ValueError where a field is not what Triton writes."""
    max_batch = _int(config.get("max_batch_size", 0), "max_batch_size")
    groups = config.get("instance_group") or []
    if not isinstance(groups, list) or not all(isinstance(g, Mapping) for g in groups):
        raise ValueError("instance_group is not a list of groups")
    instances = sum(max(1, _int(g.get("count", 1), "instance_group.count")) for g in groups) or 1
    batching = config.get("dynamic_batching")
    if batching is None:
        return ServedSettings(max_batch, instances, False)
    if not isinstance(batching, Mapping):
        raise ValueError("dynamic_batching is not a mapping")
    sizes = batching.get("preferred_batch_size") or []
    if not isinstance(sizes, list):
        raise ValueError("dynamic_batching.preferred_batch_size is not a list")
    preferred = tuple(sorted({_int(s, "preferred_batch_size") for s in sizes}))
    if not preferred and max_batch > 0:
        preferred = (max_batch,)  # as Triton serves an empty list
    delay = _int(batching.get("max_queue_delay_microseconds", 0), "max_queue_delay_microseconds")
    return ServedSettings(max_batch, instances, True, preferred, delay)


def served_settings_from_model_config(config: Any) -> ServedSettings:
    """The settings of a parsed ``config.pbtxt`` (tritonclient's ModelConfig protobuf)."""
    from google.protobuf.json_format import MessageToDict

    return served_settings_from_config(MessageToDict(config, preserving_proto_field_name=True))
