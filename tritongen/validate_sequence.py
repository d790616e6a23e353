"""Offline checks of a sequence model: implicit state (Triton core's sequence batch scheduler and the ONNX
Runtime/TensorRT backends' rules) and tritongen's own state pairs (the local target's ``tritongen_states``).

Triton's scheduler refuses, at load: more than one ``initial_state``, an initial state whose data type differs
from the state's, has no ``name``, another number of dims than the state or a variable dim, or a dim that differs
from a fixed state dim, and a state input named twice. The backends refuse a state tensor the model does not have
or whose type differs; only the ONNX Runtime, TensorRT and PyTorch backends keep implicit state at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .sequence import STATES_PARAMETER
from .validate_onnx import config_pb2, data_type_name

_IMPLICIT_STATE_BACKENDS = ("onnxruntime", "tensorrt", "pytorch")


def state_problems(config: Any, name: str, backend: str) -> list[str]:
    """Config-level rules of ``sequence_batching.state`` and of control input names."""
    if not config.HasField("sequence_batching"):
        return []
    batcher = config.sequence_batching
    problems = []
    inputs = {t.name for t in config.input}
    for control in batcher.control_input:
        if control.name in inputs:
            problems.append(
                f"sequence batching control input '{control.name}' of {name} is also a model input: Triton sets "
                "control tensors itself, so rename one"
            )
    if batcher.state and backend and backend not in _IMPLICIT_STATE_BACKENDS:
        problems.append(
            f"implicit state (sequence_batching.state) of {name} needs a backend that keeps it "
            f"({', '.join(_IMPLICIT_STATE_BACKENDS)}), not '{backend}': let the model keep its state by correlation "
            "ID (tritongen's local target does)"
        )
    seen: set[str] = set()
    for state in batcher.state:
        where = f"state input '{state.input_name}'"
        if not state.input_name or not state.output_name:
            problems.append(f"a state of {name} has no input_name or output_name: name both tensors")
        if state.input_name in seen:
            problems.append(f"State input name '{state.input_name}' specified more than once.")
        seen.add(state.input_name)
        if state.input_name in inputs:
            problems.append(
                f"{where} of {name} is also listed under input: Triton feeds it from the state, so remove it there"
            )
        if not state.dims:
            problems.append(f"{where} of {name} has no dims: give the state's dims without the batch dimension")
        if len(state.initial_state) > 1:
            problems.append(
                f"initial_state field for {where} must contain exactly one or zero element. "
                f"Found '{len(state.initial_state)}' elements."
            )
        for initial in state.initial_state[:1]:
            problems += _initial_state_problems(initial, state, where)
    return problems


def _initial_state_problems(initial: Any, state: Any, where: str) -> list[str]:
    if initial.data_type != state.data_type:
        return [f"The data type used for 'initial_state' field of {where} does not match the state data type."]
    if not initial.name:
        return [f"Field 'name' must be set when using initial_state for {where}."]
    if len(initial.dims) != len(state.dims):
        return [
            f"Number of dimensions in 'initial_state' doesn't match the size of 'state' dimensions for {where}. "
            f"{len(initial.dims)} != {len(state.dims)}"
        ]
    for given, declared in zip(initial.dims, state.dims):
        if given == -1:
            return [f"'initial_state' field for {where} contains variable dimensions."]
        if declared != -1 and given != declared:
            return [f"'initial_state' dim for {where} doesn't match 'state' dim description. {given} != {declared}"]
    return []


def state_pairs(config: Any) -> list[tuple[str, str, int | None, list[int] | None]]:
    """(input, output, data type or None, dims or None) of every state: implicit, or the local target's pairs."""
    pairs: list[tuple[str, str, int | None, list[int] | None]] = [
        (s.input_name, s.output_name, s.data_type, list(s.dims)) for s in config.sequence_batching.state
    ]
    pairs += [(state_in, state_out, None, None) for state_in, state_out in runner_state_pairs(config)]
    return pairs


def runner_state_pairs(config: Any) -> list[tuple[str, str]]:
    """(input, output) of every state the local target's sequence runner keeps (its ``tritongen_states``)."""
    text = config.parameters[STATES_PARAMETER].string_value if STATES_PARAMETER in config.parameters else ""
    return [(p.partition(":")[0], p.partition(":")[2]) for p in filter(None, text.split(","))]


def graph_state_problems(config: Any, name: str, model_dir: Path, versions: list[int]) -> list[str]:
    """Every state tensor exists in each version's ``model.onnx`` as an input and an output of the state's data type
    and dims; the local target's pairs need its sequence batcher's START, END and CORRID controls."""
    problems = []
    if STATES_PARAMETER in config.parameters:
        text = config.parameters[STATES_PARAMETER].string_value
        malformed = [p for p in text.split(",") if p and (p.count(":") != 1 or not all(p.split(":")))]
        if malformed or not runner_state_pairs(config):
            shown = ascii(malformed[0] if malformed else text)[1:-1][:80]
            problems.append(
                f"model {name}'s {STATES_PARAMETER} parameter '{shown}' is not a list of INPUT:OUTPUT state pairs "
                "(the sequence runner fails every request): rebuild it with tritongen build --state INPUT:OUTPUT"
            )
    pairs = state_pairs(config)
    if not pairs:
        return problems
    if STATES_PARAMETER in config.parameters:
        kinds = {c.kind for ci in config.sequence_batching.control_input for c in ci.control}
        names = {ci.name for ci in config.sequence_batching.control_input}
        kind = config_pb2().ModelSequenceBatching.Control
        needed = (kind.CONTROL_SEQUENCE_START, kind.CONTROL_SEQUENCE_END, kind.CONTROL_SEQUENCE_CORRID)
        if not config.HasField("sequence_batching") or any(k not in kinds for k in needed):
            problems.append(
                f"model {name} keeps state per sequence ({STATES_PARAMETER}) but its sequence_batching lacks the "
                f"START, END or CORRID control: rebuild it with tritongen ({', '.join(sorted(names)) or 'none'} given)"
            )
    for version in versions:
        path = model_dir / str(version) / "model.onnx"
        if path.is_file():
            problems += _onnx_problems(path, pairs, name, config.max_batch_size > 0)
    return problems


def _onnx_problems(path: Path, pairs, name: str, batched: bool) -> list[str]:
    from .validate_onnx import GraphTensor, graph_io_from_onnx, onnx_available

    if not onnx_available():
        return []
    try:
        graph = graph_io_from_onnx(path)
    except ValueError:  # named once, by the graph checks of its backend (ONNX Runtime's, or tritongen's runner's)
        return []

    def io(values: Mapping[str, GraphTensor]) -> dict[str, tuple[str, list[int] | None]]:
        out: dict[str, tuple[str, list[int] | None]] = {}
        for tensor_name, tensor in values.items():
            dims = _runtime_dims(tensor)
            out[tensor_name] = (tensor.type_name.removeprefix("TYPE_"), dims[1:] if batched and dims else dims)
        return out

    graph_in, graph_out = io(graph.inputs), io(graph.outputs)
    problems = []
    for state_in, state_out, data_type, dims in pairs:
        for tensor, table, role in ((state_in, graph_in, "input"), (state_out, graph_out, "output")):
            if tensor not in table:
                problems.append(
                    f"state {role} '{tensor}' of model {name} is not an {role} of {path.parent.name}/{path.name} "
                    f"(its {role}s: {', '.join(table) or 'none'}): name one of them in the state pair "
                    "(tritongen build --state INPUT:OUTPUT)"
                )
            elif data_type is not None and table[tensor][0] and f"TYPE_{table[tensor][0]}" != data_type_name(data_type):
                problems.append(
                    f"state {role} '{tensor}' of model {name} is {table[tensor][0]} in the graph but "
                    f"{data_type_name(data_type)} in sequence_batching.state: "
                    f"set its data_type: TYPE_{table[tensor][0]}"
                )
            elif dims is not None and (graph_dims := table[tensor][1]) is not None and not _dims_fit(graph_dims, dims):
                problems.append(
                    f"state {role} '{tensor}' of model {name} has dims {graph_dims} in the graph but {dims} in "
                    f"sequence_batching.state: set its dims: {graph_dims}"
                )
        in_type = graph_in[state_in][0] if state_in in graph_in else ""
        out_type = graph_out[state_out][0] if state_out in graph_out else ""  # '': no type declared or inferred
        if in_type and out_type and in_type != out_type:
            problems.append(
                f"state '{state_in}' of model {name} is {in_type} but its next value '{state_out}' is {out_type}: "
                "export the model so that the state output has the state input's type"
            )
    return problems


def _runtime_dims(tensor) -> list[int] | None:
    """The dims a graph tensor has when the model runs, as far as the graph tells (-1: variable), or None when it
    does not: the declared dims with those shape inference computes filled in, the computed ones where the declared
    rank is wrong (ONNX Runtime reports no shape then, but the tensor still has the rank the graph computes)."""
    if tensor.conflict is not None:
        return list(tensor.conflict[1])
    if tensor.dims is None:
        return list(tensor.computed) if tensor.computed is not None else None
    if tensor.computed is None:
        return list(tensor.dims)
    return [c if d == -1 else d for d, c in zip(tensor.dims, tensor.computed)]


def _dims_fit(graph_dims: list[int], declared: list[int]) -> bool:
    return len(graph_dims) == len(declared) and all(g in (-1, d) or d == -1 for g, d in zip(graph_dims, declared))
