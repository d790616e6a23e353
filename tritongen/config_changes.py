"""What a new version's ``config.pbtxt`` changes for the versions beside it.

A model folder has one ``config.pbtxt`` for all its versions. ``tritongen build --new-version`` writes the new
build's; a change of the model's interface (an input or output renamed, retyped or reshaped; batching turned on or
off; a stateful model made stateless) then holds for every version: the older ones no longer load with it, clients
of the live version break at the next load, and a rollback to an older version fails. Settings (instances, batch
sizes, queue delay) apply to every version too, at the next load from ``config.pbtxt`` (a server restart); a
``tritongen rollout`` loads the new version under the config the server serves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import TritongenError
from .layout import CONFIG_NAME


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
    elif stateful[0]:  # the state tensors each version's graph reads and writes (implicit state), the controls
        states = [
            sorted((s.input_name, s.output_name, s.data_type, tuple(s.dims)) for s in c.sequence_batching.state)
            for c in (old, new)
        ]
        if states[0] != states[1]:
            changes.append(f"sequence state {[s[:2] for s in states[0]]} -> {[s[:2] for s in states[1]]}")
        controls = [sorted(c.name for c in cfg.sequence_batching.control_input) for cfg in (old, new)]
        if controls[0] != controls[1]:
            changes.append(f"sequence control inputs {controls[0]} -> {controls[1]}")
    # what runs each version's files: another backend (python's model.py beside an onnxruntime model.onnx) or
    # instance kind (KIND_GPU on a CPU host) loads none of the older versions
    for label, values in (("backend", [c.backend for c in (old, new)]), ("platform", [c.platform for c in (old, new)])):
        if values[0] != values[1]:
            changes.append(f"{label} '{values[0]}' -> '{values[1]}'")
    kinds = [sorted({g.kind for g in c.instance_group}) for c in (old, new)]
    if kinds[0] != kinds[1]:
        changes.append("instance kind changes (another --target)")
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
    if sizes[0] != sizes[1]:  # none: Triton batches up to max_batch_size (what perf and deploy show as that size)
        shown = [f"none (up to {c.max_batch_size})" if s == [] else str(s) for s, c in zip(sizes, (old, new))]
        changes.append(f"preferred batch sizes {shown[0]} -> {shown[1]}")
    delays = [b.max_queue_delay_microseconds if b is not None else None for b in batchers]
    if delays[0] != delays[1]:
        changes.append(f"queue delay us {delays[0]} -> {delays[1]}")
    return changes


def check_shared_config(model_dir: Path, staged: Path, version: int, say: Callable[[str], None]) -> None:
    """A new version's config.pbtxt (``staged``'s) replaces the one every version of ``model_dir`` shares: a
    changed interface is refused (the older versions would no longer load, their clients break at the next load,
    a rollback to them fails: a newcomer's 5-class version 9 was served after a restart in place of the recorded
    10-class live version), changed settings are said."""
    from .validate import config_from_file

    try:
        old = config_from_file(model_dir / CONFIG_NAME)
    except TritongenError:
        return  # no readable config to keep (validate names it)
    new = config_from_file(staged / CONFIG_NAME)
    name, changed = model_dir.name, interface_changes(old, new)
    if changed:
        raise TritongenError(
            f"version {version} of '{name}' changes the interface its other versions share in {CONFIG_NAME}: "
            + "; ".join(changed),
            f"keep the inputs and outputs of the live version, build it as another model (--name {name}_v{version}), "
            "or replace the model and all its versions (--force)",
        )
    settings = setting_changes(old, new)
    if settings:
        say(
            f"      note: {name}/{CONFIG_NAME}'s settings change for every version: {'; '.join(settings)} (a server "
            "applies them when it loads the model from the file, e.g. at a restart; tritongen rollout keeps the "
            "served ones)"
        )
