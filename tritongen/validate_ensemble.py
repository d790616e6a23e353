"""Ensemble rules: an ensemble's own wiring, and how it fits the models it calls.

Two levels, as in Triton's core:

- :func:`problems_in_ensemble_scheduling` needs only the ensemble's config (core ``model_config_utils.cc``,
  ``ValidateEnsembleSchedulingConfig``): steps complete, every tensor written once, every input used, every
  output written, no step waiting on itself.
- :func:`problems_in_ensembles` needs every config in the repository (core ``ensemble_utils.cc`` and the
  repository manager): composing models exist, batch sizes fit, map keys are real tensors of the composing
  model, one data type and compatible shapes per ensemble tensor, no ensemble containing itself.

Messages keep Triton's wording where Triton has one and always name the ensemble, the step (index and model
name) and the tensor, so a user can find the line to fix.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

ENSEMBLE_PLATFORM = "ensemble"
WILDCARD_DIM = -1

ModelConfig = Any  # tritonclient.grpc.model_config_pb2.ModelConfig; imported lazily by the caller


def _step(index: int, model_name: str) -> str:
    return f"step {index} ('{model_name}')"


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


# --------------------------------------------------------------------------------------------------------
# One ensemble on its own


def problems_in_ensemble_scheduling(config: ModelConfig, name: str) -> list[str]:
    """Rules an ensemble config must meet on its own; ``name`` is the model's name for messages."""
    if config.platform != ENSEMBLE_PLATFORM:
        return [
            f"ensemble scheduling cannot be set for model '{name}' whose platform is not ensemble: "
            f'add platform: "ensemble" (and no backend), or remove ensemble_scheduling'
        ]
    problems = []
    if config.instance_group:
        problems.append(
            f"instance group should not be specified for ensemble '{name}': set instance_group on its composing models"
        )
    if config.HasField("optimization"):
        problems.append(
            f"optimization should not be specified for ensemble '{name}': set optimization on its composing models"
        )
    if config.model_warmup:
        problems.append(f"model_warmup can not be specified for ensemble '{name}': warm up its composing models")
    steps = list(config.ensemble_scheduling.step)
    if not steps:
        return problems + [f"must specify 'step' for ensemble '{name}'"]
    complete = True
    for index, step in enumerate(steps):
        for field in ("model_name", "input_map", "output_map"):
            if not getattr(step, field):
                complete = False
                problems.append(f"must specify '{field}' in step {index} ('{step.model_name}') of ensemble '{name}'")
    if complete:
        problems += _dataflow_problems(config, name)
    return problems


@dataclass(frozen=True)
class _Flow:
    """Who writes and who reads each ensemble tensor, and which steps can run."""

    writers: dict[str, list[int]]
    readers: dict[str, list[int]]
    ran: list[int]  # steps in the order they become runnable from the ensemble inputs
    ready: set[str]


def _flow(config: ModelConfig) -> _Flow:
    steps = list(config.ensemble_scheduling.step)
    writers: dict[str, list[int]] = {}
    readers: dict[str, list[int]] = {}
    for index, step in enumerate(steps):
        for key in sorted(step.output_map):
            writers.setdefault(step.output_map[key], []).append(index)
        for key in sorted(step.input_map):
            readers.setdefault(step.input_map[key], []).append(index)
    # The order of passes over the steps in index order, each running every step whose inputs are ready at its turn
    # (a step made runnable by a later one waits for the next pass), as Triton's own check goes; kept with two heaps
    # in O(n log n): repeating the passes took 98 s on a 2,700-step chain listed backwards, hours on the 34,000 steps
    # a config can hold. The decoupled-label check follows this order.
    ready: set[str] = set()
    waiting = [len(set(step.input_map.values())) for step in steps]  # distinct tensors each step still waits on
    readers_of: dict[str, set[int]] = {}
    for index, step in enumerate(steps):
        for tensor in set(step.input_map.values()):
            readers_of.setdefault(tensor, set()).add(index)
    this_pass = [index for index, count in enumerate(waiting) if count == 0]
    heapq.heapify(this_pass)
    next_pass: list[int] = []
    at = -1  # the index the current pass has reached

    def made(tensor: str) -> None:
        if tensor in ready:
            return
        ready.add(tensor)
        for reader in readers_of.get(tensor, ()):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(this_pass if reader > at else next_pass, reader)

    for t in config.input:
        made(t.name)
    ran: list[int] = []
    while this_pass or next_pass:
        if not this_pass:
            this_pass, next_pass, at = next_pass, [], -1
        at = heapq.heappop(this_pass)
        ran.append(at)
        for tensor in steps[at].output_map.values():
            made(tensor)
    return _Flow(writers, readers, ran, ready)


def _dataflow_problems(config: ModelConfig, name: str) -> list[str]:
    steps = list(config.ensemble_scheduling.step)
    flow = _flow(config)
    inputs = [t.name for t in config.input]
    outputs = [t.name for t in config.output]
    problems = []
    for tensor, writers in sorted(flow.writers.items()):
        if len(writers) > 1:
            who = " and ".join(_step(i, steps[i].model_name) for i in writers)
            problems.append(
                f"ensemble tensor '{tensor}' can appear in an output map only once for ensemble '{name}' "
                f"step {writers[1]}: it is written by {who}"
            )
        if tensor in inputs:
            problems.append(
                f"ensemble input '{tensor}' of ensemble '{name}' is overwritten by "
                f"{_step(writers[0], steps[writers[0]].model_name)}: map that output to a new tensor name"
            )
    for tensor in inputs:
        if tensor not in flow.readers:
            problems.append(
                f"ensemble input '{tensor}' for ensemble '{name}' is not used: no step's input_map reads it"
            )
    for tensor, readers in sorted(flow.readers.items()):
        if tensor not in flow.writers and tensor not in inputs:
            problems.append(
                f"ensemble tensor '{tensor}' read by {_step(readers[0], steps[readers[0]].model_name)} "
                f"of ensemble '{name}' is never written: it is neither an ensemble input nor in any "
                "step's output_map"
            )
    problems += _cycle_problems(steps, flow, name)
    for tensor in outputs:
        if tensor in flow.ready:
            continue
        if tensor not in flow.writers:
            problems.append(f"output '{tensor}' for ensemble '{name}' is not written: no step's output_map writes it")
            continue
        source, step_index = _unconnected_source(steps, flow, tensor)
        problems.append(
            f"output '{tensor}' for ensemble '{name}' is not written: at least one of its depending "
            f"tensors, '{source}', is not connected ({_step(step_index, steps[step_index].model_name)} "
            "waits on it)"
        )
    for tensor, writers in sorted(flow.writers.items()):
        if tensor not in outputs and tensor not in flow.readers and tensor not in inputs:
            problems.append(
                f"ensemble tensor '{tensor}' is unused in ensemble '{name}': "
                f"{_step(writers[0], steps[writers[0]].model_name)} writes it but no step reads it and it "
                "is not an ensemble output"
            )
    return problems


def _unconnected_source(steps: Sequence[Any], flow: _Flow, tensor: str) -> tuple[str, int]:
    """Walk back from a tensor that is never ready to the first missing tensor and the step waiting on it."""
    seen: set[str] = {tensor}
    step_index = flow.writers[tensor][0]
    while True:
        missing = [
            t
            for t in (steps[step_index].input_map[k] for k in sorted(steps[step_index].input_map))
            if t not in flow.ready and t not in seen
        ]
        if not missing:  # only a loop back to tensors already seen: a cycle, reported on its own
            return tensor, step_index
        tensor = missing[0]
        seen.add(tensor)
        if tensor not in flow.writers:
            return tensor, step_index
        step_index = flow.writers[tensor][0]


def _cycle_problems(steps: Sequence[Any], flow: _Flow, name: str) -> list[str]:
    """Steps that wait, directly or not, on their own outputs (strongly connected parts of the step graph)."""
    edges: dict[int, set[int]] = {i: set() for i in range(len(steps))}
    for tensor, readers in flow.readers.items():
        for writer in flow.writers.get(tensor, [])[:1]:  # a second writer is a problem of its own (written twice)
            edges[writer].update(readers)
    problems = []
    for component in _strongly_connected(edges):
        if len(component) == 1 and component[0] not in edges[component[0]]:
            continue
        members = sorted(component)
        tensors = sorted(
            {
                steps[j].input_map[k]
                for j in members
                for k in steps[j].input_map
                if set(flow.writers.get(steps[j].input_map[k], [])) & set(members)
            }
        )
        who = ", ".join(_step(i, steps[i].model_name) for i in members)
        problems.append(
            f"steps of ensemble '{name}' form a cycle: {who} wait on each other through tensors "
            f"{_quoted(tensors)}, so none of them can run"
        )
    return problems


def _strongly_connected(edges: Mapping[int, Set[int]]) -> list[list[int]]:
    """Tarjan's algorithm without recursion (a 3,000-step chain exhausted Python's recursion limit)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    components: list[list[int]] = []
    for root in sorted(edges):
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(sorted(edges[root])))]  # each node with the successors it has yet to look at
        while work:
            node, successors = work[-1]
            nxt = next(successors, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:  # back in the caller: its low takes this node's
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                components.append(component)
    return components


# --------------------------------------------------------------------------------------------------------
# Ensembles against the models they call


@dataclass(frozen=True)
class _TensorNode:
    """Data type and shape of an ensemble tensor as one model sees it (Triton's ``TensorNode``)."""

    source: str  # "model X" or "model X (step N)"
    data_type: int
    dims: tuple[int, ...]
    batching: bool

    @property
    def full_dims(self) -> tuple[int, ...]:
        return ((WILDCARD_DIM,) if self.batching else ()) + self.dims


def _dims_match(a: Sequence[int], b: Sequence[int]) -> bool:
    """Triton's ``CompareDimsWithWildcard``: same rank, each pair equal or one of them -1."""
    return len(a) == len(b) and all(x == y or WILDCARD_DIM in (x, y) for x, y in zip(a, b))


def _dims_text(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _consistency_problem(ensemble: str, tensor: str, first: _TensorNode, other: _TensorNode) -> str | None:
    from tritonclient.grpc import model_config_pb2 as mc

    prefix = f"in ensemble {ensemble}, ensemble tensor {tensor}: "
    if first.data_type != other.data_type:
        return (
            prefix + f"inconsistent data type: {mc.DataType.Name(first.data_type)} is inferred from "
            f"{first.source} while {mc.DataType.Name(other.data_type)} is inferred from {other.source}"
        )
    if not _dims_match(first.dims, other.dims) and not _dims_match(first.full_dims, other.full_dims):
        return (
            prefix + f"inconsistent shape: {_dims_text(first.full_dims)} is inferred from {first.source} while "
            f"{_dims_text(other.full_dims)} is inferred from {other.source}"
        )
    return None


def problems_in_ensembles(
    configs: Mapping[str, ModelConfig],
    versions: Mapping[str, Set[int]] | None = None,
    unreadable: Set[str] = frozenset(),
) -> dict[str, list[str]]:
    """Cross-model ensemble problems, keyed by ensemble name (only ensembles with problems appear).

    ``configs`` maps each model's name (its folder name) to its parsed config. ``versions`` maps model names
    to their numeric version folders, to check steps that ask for one version. Models in ``unreadable`` exist
    but have a config that does not parse; their problem is reported on their own, not again here.
    """
    problems: dict[str, list[str]] = {}
    for name, config in sorted(configs.items()):
        if config.platform != ENSEMBLE_PLATFORM or not config.HasField("ensemble_scheduling"):
            continue
        found = _problems_in_one_ensemble(name, config, configs, versions or {}, unreadable)
        if found:
            problems[name] = found
    for name, cycle in _ensemble_cycles(configs).items():
        problems.setdefault(name, []).append(
            "circular dependency between ensembles: " + " -> ".join(cycle) + ": an ensemble cannot call itself"
        )
    return problems


def _problems_in_one_ensemble(
    name: str,
    config: ModelConfig,
    configs: Mapping[str, ModelConfig],
    versions: Mapping[str, Set[int]],
    unreadable: Set[str],
) -> list[str]:
    steps = list(config.ensemble_scheduling.step)
    missing = [
        _step(i, s.model_name)
        for i, s in enumerate(steps)
        if s.model_name and s.model_name not in configs and s.model_name not in unreadable
    ]
    problems = []
    if missing:
        problems.append(
            f"ensemble {name} contains models that are not available: {', '.join(missing)}: "
            "add those model folders to the repository or fix the model_name"
        )
    batching = config.max_batch_size > 0
    tensors: dict[str, _TensorNode] = {}

    def register(tensor: str, node: _TensorNode) -> None:
        if tensor not in tensors:
            tensors[tensor] = node
            return
        problem = _consistency_problem(name, tensor, tensors[tensor], node)
        if problem and problem not in problems:
            problems.append(problem)

    for io in list(config.input) + list(config.output):
        dims = tuple(io.reshape.shape) if io.HasField("reshape") else tuple(io.dims)
        register(io.name, _TensorNode(f"model {name}", io.data_type, dims, batching))

    decoupled_steps: set[int] = set()
    for index, step in enumerate(steps):
        model = configs.get(step.model_name)
        if model is None:
            continue
        where = _step(index, step.model_name)
        if model.model_transaction_policy.decoupled:
            decoupled_steps.add(index)
        if (
            step.model_version >= 0
            and step.model_name in versions
            and step.model_version not in versions[step.model_name]
        ):
            problems.append(
                f"ensemble {name} {where} asks for version {step.model_version} of model "
                f"'{step.model_name}', which has no version folder {step.model_version}: "
                "set model_version: -1 for the latest version"
            )
        if model.max_batch_size != 0 and model.max_batch_size < config.max_batch_size:
            problems.append(
                f"ensemble {name} allows maximum batch size {config.max_batch_size}, but it contains model "
                f"{step.model_name} which only allows maximum batch size to be {model.max_batch_size} "
                f"({where}): lower the ensemble's max_batch_size or raise the model's"
            )
        model_batching = model.max_batch_size > 0
        model_inputs = {t.name: t for t in model.input}
        model_outputs = {t.name: t for t in model.output}
        for key in sorted(step.input_map):
            tensor = step.input_map[key]
            if key not in model_inputs:
                problems.append(
                    f"in ensemble {name}, ensemble tensor {tensor} is mapping to non-existing input {key} "
                    f"in model {step.model_name} ({where}); its inputs are {_quoted(model_inputs)}"
                )
                continue
            io = model_inputs[key]
            register(
                tensor, _TensorNode(f"model {step.model_name} ({where})", io.data_type, tuple(io.dims), model_batching)
            )
        for io in model.input:
            if io.name not in step.input_map and not io.optional:
                problems.append(
                    f"in ensemble {name}, input {io.name} in model {step.model_name} is not mapped to any "
                    f"ensemble tensors ({where}): add it to the step's input_map"
                )
        for key in sorted(step.output_map):
            tensor = step.output_map[key]
            if key not in model_outputs:
                problems.append(
                    f"in ensemble {name}, ensemble tensor {tensor} is mapped from non-existing output {key} "
                    f"in model {step.model_name} ({where}); its outputs are {_quoted(model_outputs)}"
                )
                continue
            io = model_outputs[key]
            register(
                tensor, _TensorNode(f"model {step.model_name} ({where})", io.data_type, tuple(io.dims), model_batching)
            )
    problems += _decoupled_problems(name, steps, config, decoupled_steps)
    return problems


def _decoupled_problems(name: str, steps: Sequence[Any], config: ModelConfig, decoupled: Set[int]) -> list[str]:
    """A step must not take inputs that come from different decoupled models (their responses do not pair up)."""
    if not decoupled:
        return []
    label = {t.name: 0 for t in config.input}
    next_label = 0
    problems = []
    for index in _flow(config).ran:
        step = steps[index]
        labels = {label.get(t, 0) for t in step.input_map.values()}
        if len(labels) > 1:
            problems.append(
                f"in ensemble {name}, step of model '{step.model_name}' receives inputs originated from "
                f"different decoupled models ({_step(index, step.model_name)})"
            )
        if index in decoupled:
            next_label += 1
            out = next_label
        else:
            out = min(labels) if labels else 0
        for tensor in step.output_map.values():
            label[tensor] = out
    return problems


def _ensemble_cycles(configs: Mapping[str, ModelConfig]) -> dict[str, list[str]]:
    """For each ensemble that reaches itself through composing ensembles, one path ``[A, ..., A]``."""
    calls = {
        name: [s.model_name for s in c.ensemble_scheduling.step if s.model_name in configs]
        for name, c in configs.items()
        if c.HasField("ensemble_scheduling")
    }
    cycles: dict[str, list[str]] = {}
    for start in sorted(calls):
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, path = stack.pop()
            for callee in calls.get(node, []):
                if callee == start:
                    cycles[start] = path + [start]
                    break
                if callee not in seen:
                    seen.add(callee)
                    stack.append((callee, path + [callee]))
            if start in cycles:
                break
    return cycles
