"""What a new version's ``config.pbtxt`` changes for the versions beside it.

A model folder has one ``config.pbtxt`` for all its versions. ``tritongen build --new-version`` writes the new
build's; a change of the model's interface (an input or output renamed, retyped or reshaped; batching turned on or
off; a stateful model made stateless) then holds for every version: the older ones no longer load with it, clients
of the live version break at the next load, and a rollback to an older version fails. Settings (instances, batch
sizes, queue delay) apply to every version too, at the next load from ``config.pbtxt`` (a server restart); a
``tritongen rollout`` loads the new version under the config the server serves.
"""

from __future__ import annotations

from typing import Any


def _tensors(config: Any, kind: str) -> dict[str, tuple[int, list[int], list[int] | None]]:
    return {
        t.name: (t.data_type, list(t.dims), list(t.reshape.shape) if t.HasField("reshape") else None)
        for t in getattr(config, kind)
    }


def interface_changes(old: Any, new: Any) -> list[str]:
    """How ``new`` (a parsed ``ModelConfig``) changes what clients send and get from ``old``; empty when not."""
    from .validate import config_pb2

    type_name = config_pb2().DataType.Name
    changes = []
    for kind in ("input", "output"):
        before, after = _tensors(old, kind), _tensors(new, kind)
        changes += [f"{kind} '{n}' is gone" for n in before if n not in after]
        changes += [f"{kind} '{n}' is new" for n in after if n not in before]
        for name in (n for n in before if n in after):
            (t0, d0, r0), (t1, d1, r1) = before[name], after[name]
            if t0 != t1:
                changes.append(f"{kind} '{name}' {type_name(t0)} -> {type_name(t1)}")
            if d0 != d1 or r0 != r1:
                changes.append(f"{kind} '{name}' dims {d0} -> {d1}")
    if (old.max_batch_size > 0) != (new.max_batch_size > 0):
        changes.append(f"max_batch_size {old.max_batch_size} -> {new.max_batch_size} (batching turned on or off)")
    stateful = [c.HasField("sequence_batching") for c in (old, new)]
    if stateful[0] != stateful[1]:
        changes.append("sequence batching " + ("removed" if stateful[0] else "added"))
    return changes


def setting_changes(old: Any, new: Any) -> list[str]:
    """The serving settings ``new`` changes from ``old`` (every version's, at the next load from the file)."""
    changes = []
    if old.max_batch_size != new.max_batch_size and old.max_batch_size > 0 and new.max_batch_size > 0:
        changes.append(f"max_batch_size {old.max_batch_size} -> {new.max_batch_size}")
    counts = [sum(g.count or 1 for g in c.instance_group) for c in (old, new)]
    if counts[0] != counts[1]:
        changes.append(f"instances {counts[0]} -> {counts[1]}")
    batchers = [c.dynamic_batching if c.HasField("dynamic_batching") else None for c in (old, new)]
    sizes = [list(b.preferred_batch_size) if b is not None else None for b in batchers]
    if sizes[0] != sizes[1]:
        changes.append(f"preferred batch sizes {sizes[0]} -> {sizes[1]}")
    delays = [b.max_queue_delay_microseconds if b is not None else None for b in batchers]
    if delays[0] != delays[1]:
        changes.append(f"queue delay us {delays[0]} -> {delays[1]}")
    return changes
