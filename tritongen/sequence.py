"""Stateful streaming models on Triton's sequence batcher: state pairs, control inputs, the config block.

A stateful model takes its state as input tensors and returns the next state as output tensors; ``--state
IN:OUT`` pairs them. Triton then keeps each sequence's state between requests (implicit state, ``state`` in
``sequence_batching``) for the ONNX Runtime and TensorRT targets; the local target's Python-backend model keeps it
itself, keyed by correlation ID, driven by the control inputs named here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import TritongenError
from .names import check_name
from .tensors import TensorSpec

# Control inputs the sequence batcher hands the local target's model (names are Triton's usual ones).
CONTROL_START = "START"
CONTROL_END = "END"
CONTROL_READY = "READY"
CONTROL_CORRID = "CORRID"
CONTROL_NAMES = (CONTROL_START, CONTROL_END, CONTROL_READY, CONTROL_CORRID)
DEFAULT_MAX_SEQUENCE_IDLE_US = 5_000_000  # a sequence that sends nothing for this long is ended by Triton
DEFAULT_MAX_CANDIDATE_SEQUENCES = 64  # sequences the oldest strategy batches together (at most max_batch_size each)
STATE_FROM_ATTRIBUTES_AUTO = "auto"
# config.pbtxt parameter that tells the local target's model its state pairs ("in:out,in:out")
STATES_PARAMETER = "tritongen_states"


@dataclass(frozen=True)
class StatePair:
    """One state tensor: the model reads it from ``input`` and returns its next value as ``output``."""

    input: str
    output: str

    @property
    def text(self) -> str:
        return f"{self.input}:{self.output}"

    def to_dict(self) -> dict[str, str]:
        return {"input": self.input, "output": self.output}


def state_pair_from_arg(arg: str | StatePair | Sequence[str]) -> StatePair:
    """``IN:OUT`` (``--state`` and the YAML spec's ``states:`` list); from Python also an ``(IN, OUT)`` pair or a
    :class:`StatePair`."""
    if isinstance(arg, StatePair):
        parts = [arg.input, arg.output]
    elif isinstance(arg, str):
        parts = arg.split(":")
    elif isinstance(arg, (tuple, list)) and all(isinstance(p, str) for p in arg):
        parts = list(arg)
    else:
        parts = []
    if len(parts) != 2 or not all(parts):
        fix = "name the state input and the output that returns its next value"
        if not isinstance(arg, str):
            fix += ": 'h_in:h_out', ('h_in', 'h_out'), or one mapping {'h_in': 'h_out'} for all pairs"
        raise TritongenError(f"--state {_shown(arg)} is not INPUT:OUTPUT", fix)
    for part in parts:
        check_name(part, "state tensor name")
        TensorSpec(part, "FP32", (1,))  # the tensor-name rules
    return StatePair(parts[0], parts[1])


def _shown(value: Any) -> str:
    """``value`` for a message: a string quoted as the CLI gave it, anything else as its (shortened) repr."""
    shown = f"'{value}'" if isinstance(value, str) else repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def state_pairs_from_args(args: Iterable[Any] | Mapping[str, str]) -> tuple[StatePair, ...]:
    """``--state`` values (``IN:OUT`` strings, ``(IN, OUT)`` pairs or :class:`StatePair` objects) or one mapping
    ``{IN: OUT}``."""
    items = list(args.items()) if isinstance(args, Mapping) else list(args)
    pairs = tuple(state_pair_from_arg(a) for a in items)
    names = [n for p in pairs for n in (p.input, p.output)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TritongenError(f"state tensor '{twice[0]}' is named twice", "give every state input and output once")
    return pairs


def attribute_names_from_arg(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``--state-from-attributes auto`` or ``_state,_context`` -> ``("auto",)`` or the names."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    names = tuple(n.strip() for n in items if n.strip())
    if STATE_FROM_ATTRIBUTES_AUTO in names and len(names) > 1:
        raise TritongenError("--state-from-attributes mixes 'auto' and names", "pass 'auto' or a list of names")
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise TritongenError(
            f"--state-from-attributes '{bad[0]}' is not an attribute name", "pass e.g. --state-from-attributes _h,_c"
        )
    return names


def check_states(
    states: Sequence[StatePair],
    inputs: Sequence[TensorSpec],
    output_names: Sequence[str],
    *,
    batched: bool,
    preferred_batch_sizes: Sequence[int],
    from_attributes: bool,
) -> None:
    """The spec-level rules of a stateful model (the tensors' dtypes and dims are checked once the graph exists)."""
    if not states and not from_attributes:
        return
    if preferred_batch_sizes:
        raise TritongenError(
            "a stateful model (--state) cannot use dynamic batching (--preferred-batch-size): Triton's sequence "
            "batcher schedules it",
            "drop --preferred-batch-size; the sequence batcher batches concurrent sequences itself",
        )
    if not batched:
        raise TritongenError(
            "a stateful model (--state) needs --max-batch-size 1 or more",
            "give --max-batch-size the number of sequences one run may serve together, e.g. 8",
        )
    declared = {t.name for t in inputs}
    if states and not output_names and not from_attributes:
        raise TritongenError(
            "a stateful model (--state) needs its outputs named",
            "name every output forward() returns with --output, in order, the state outputs included",
        )
    for pair in states:
        if not from_attributes and pair.input not in declared:
            raise TritongenError(
                f"state input '{pair.input}' is not a declared input",
                "declare it with --input (in forward() order) or name an existing input in --state",
            )
        if output_names and pair.output not in output_names:
            raise TritongenError(
                f"state output '{pair.output}' is not among the --output names {', '.join(output_names)}",
                "name every output forward() returns with --output, the state outputs included",
            )
    clash = sorted(declared & set(CONTROL_NAMES))
    if clash:
        raise TritongenError(
            f"input '{clash[0]}' has the name of a sequence control input",
            f"rename it: {', '.join(CONTROL_NAMES)} are the control inputs Triton's sequence batcher adds",
        )
    if len([t for t in inputs if t.name not in {p.input for p in states}]) == 0 and not from_attributes:
        raise TritongenError(
            "every input of the model is a state input", "a stateful model needs at least one input a client sends"
        )


def check_state_tensors(
    states: Sequence[StatePair], inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], target: str = "local"
) -> None:
    """Once the graph exists: every state output has its input's data type and shape (the next call reads it);
    a scalar per item only where tritongen's runner carries the state (:func:`check_scalar_state`)."""
    by_in = {t.name: t for t in inputs}
    by_out = {t.name: t for t in outputs}
    for pair in states:
        state_in, state_out = by_in[pair.input], by_out.get(pair.output)
        if state_out is None:
            raise TritongenError(
                f"state output '{pair.output}' is not an output of the model", f"name one of {', '.join(by_out)}"
            )
        check_scalar_state(pair, state_in, target)
        check_scalar_state(pair, state_out, target)
        if state_in.dtype != state_out.dtype:
            raise TritongenError(
                f"state '{pair.text}' changes data type: input {state_in.dtype}, output {state_out.dtype}",
                "return the next state in the state input's data type (or fix --input)",
            )
        # the model's own shapes ([batch] is not [batch, 1]); a dimension the exporter left symbolic in the output
        # (-1: a slice of a variable-length concatenation, `full[:, :, -2:]`) is measured on the samples instead
        # (check_state_shapes_observed)
        fits = len(state_in.shape) == len(state_out.shape) and all(
            o in (-1, i) for i, o in zip(state_in.shape, state_out.shape)
        )
        if not fits or state_in.scalar != state_out.scalar:
            raise TritongenError(
                f"state '{pair.text}' changes dims: input {list(state_in.shape)}, output {list(state_out.shape)}",
                "return the next state with the state input's dims (or pair the right output in --state)",
            )


def check_state_shapes_observed(
    states: Sequence[StatePair],
    output_names: Sequence[str],
    cases: Sequence[tuple[str, Mapping[str, np.ndarray]]],
    observed: Sequence[Sequence[np.ndarray]],
) -> None:
    """Every state output, as the graph really answers on the samples (``observed[case][output]``), has the shape
    its state input had in that case: the next call reads it back."""
    for pair in states:
        at = list(output_names).index(pair.output)
        for (label, inputs), outputs in zip(cases, observed):
            sent, got = np.shape(inputs[pair.input]), np.shape(outputs[at])
            if sent != got:
                raise TritongenError(
                    f"state '{pair.text}' changes shape on the {label} samples: input {list(sent)}, output {list(got)}",
                    "return the next state with the state input's shape (or pair the right output in --state)",
                )


def check_scalar_state(pair: StatePair, tensor: TensorSpec, target: str) -> None:
    """A state of one value per stream (``[batch]`` to the model) is carried by tritongen's runner (the local
    target); Triton's implicit state, which the other targets use, has no reshape for it."""
    if tensor.scalar and target != "local":
        raise TritongenError(
            f"state '{pair.text}' is a scalar per item ({tensor.name} is [batch] to the model), and Triton's implicit "
            f"state, which the {target} target uses, has no reshape for it",
            "keep the state as [batch, 1] in the model (unsqueeze(-1) it), or build with --target local",
        )


def sequence_batching_entry(
    states: Sequence[StatePair],
    inputs: Sequence[TensorSpec],
    *,
    target: str,
    max_batch_size: int,
    max_queue_delay_us: int,
) -> dict[str, Any]:
    """The template's ``sequence_batching`` values: the oldest strategy (requests of different sequences batched
    together), and for the ONNX Runtime/TensorRT targets Triton's implicit state (zeros at a sequence's start); the
    local target gets the control inputs and keeps the state itself.

    Control inputs are fed to the model as input tensors, and Triton's ONNX Runtime and TensorRT backends refuse a
    control input the graph does not have; Triton resets implicit state at a sequence's start itself, so those
    targets need none."""
    by_name = {t.name: t for t in inputs}
    implicit = target != "local"
    return {
        "max_sequence_idle_us": DEFAULT_MAX_SEQUENCE_IDLE_US,
        "max_candidate_sequences": max(DEFAULT_MAX_CANDIDATE_SEQUENCES, max_batch_size),
        "preferred_batch_sizes": [max_batch_size],
        "max_queue_delay_us": max_queue_delay_us,
        "controls": [] if implicit else _controls(),
        "states": [
            {
                "input_name": p.input,
                "output_name": p.output,
                "dtype": by_name[p.input].dtype,
                "dims": list(by_name[p.input].dims),
            }
            for p in states
        ]
        if implicit
        else [],
    }


def _controls() -> list[dict[str, Any]]:
    flags = [(CONTROL_START, "CONTROL_SEQUENCE_START"), (CONTROL_END, "CONTROL_SEQUENCE_END")]
    flags.append((CONTROL_READY, "CONTROL_SEQUENCE_READY"))
    entries: list[dict[str, Any]] = [{"name": n, "kind": k, "int32_false_true": [0, 1], "dtype": ""} for n, k in flags]
    entries.append(
        {"name": CONTROL_CORRID, "kind": "CONTROL_SEQUENCE_CORRID", "int32_false_true": [], "dtype": "UINT64"}
    )
    return entries
