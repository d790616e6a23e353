"""Modules that keep their state in attributes between calls, made into models whose state is explicit tensors.

Streaming models often remember the last call inside the module (``self._h = ...`` in ``forward()``). A sequence
model needs the state as tensors: ``forward(x, state_in...) -> (out..., state_out...)``. This module finds the
attributes ``forward()`` writes (``--state-from-attributes auto``: the ``prim::SetAttr`` on ``self`` in a TorchScript
module's inlined graph, or the instance attributes a call changes in an eager module), learns each one's batch
axis by calling copies of the module at batch 1 and 2, and builds :class:`WithExplicitState`, which sets the
attributes from the state inputs, runs the module, and returns the attributes' new values as outputs.

Tensor attributes become state. Integer/float/bool attributes the module writes as bookkeeping (a last batch size,
a last sample rate) are set before each call to the value they hold after a call with the same inputs (a constant,
or the batch size); anything else is refused naming the attribute. A stream check then proves the wrapper, started
from zero state, gives the module's own outputs call after call.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .errors import TritongenError
from .sequence import STATE_FROM_ATTRIBUTES_AUTO, StatePair
from .tensors import TensorSpec

STREAM_CHECK_CALLS = 3
# nn.Module's own bookkeeping in vars(module): never state
_MODULE_INTERNALS = frozenset(
    {
        "_parameters",
        "_buffers",
        "_modules",
        "_non_persistent_buffers_set",
        "_backward_pre_hooks",
        "_backward_hooks",
        "_is_full_backward_hook",
        "_forward_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_hooks_always_called",
        "_forward_pre_hooks",
        "_forward_pre_hooks_with_kwargs",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_load_state_dict_pre_hooks",
        "_load_state_dict_post_hooks",
    }
)  # calls of the stream check (batch 2), each continuing the last one's state


@dataclass(frozen=True)
class TensorState:
    """A tensor attribute carried as a state input/output; ``batch_axis`` in the attribute's own layout."""

    attribute: str
    batch_axis: int
    rank: int
    spec: TensorSpec  # the state input: dtype and dims without the batch axis (batch first outside)
    output: str

    @property
    def to_outside(self) -> tuple[int, ...]:
        """Permutation from the attribute's layout to batch-first."""
        rest = [a for a in range(self.rank) if a != self.batch_axis]
        return (self.batch_axis, *rest)

    @property
    def to_inside(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.argsort(self.to_outside))


@dataclass(frozen=True)
class Bookkeeping:
    """A non-tensor attribute set before each call: ``value``, or the batch size when ``value`` is None."""

    attribute: str
    value: Any


def _torch():
    import torch

    return torch


def written_attributes(module: Any, probe_args: Sequence[Any], consts: Mapping[str, Any]) -> tuple[str, ...]:
    """The attributes of ``module`` itself that ``forward()`` assigns, in the order first written."""
    torch = _torch()
    if isinstance(module, torch.jit.ScriptModule):
        graph = module.forward.graph.copy()
        torch._C._jit_pass_inline(graph)
        self_value = next(iter(graph.inputs()))
        names: list[str] = []
        for node in graph.findAllNodes("prim::SetAttr"):
            if next(iter(node.inputs())).unique() == self_value.unique() and node.s("name") not in names:
                names.append(node.s("name"))
        return tuple(names)
    probe = copy.deepcopy(module)

    def attributes() -> dict[str, Any]:  # instance attributes and the module's own buffers (self.h = ... on one)
        own = {n: v for n, v in vars(probe).items() if n not in _MODULE_INTERNALS}
        return {**own, **dict(probe.named_buffers(recurse=False))}

    before = attributes()
    with torch.inference_mode():
        probe(*probe_args, **consts)
    after = attributes()
    return tuple(n for n, v in after.items() if not n.startswith("__") and (n not in before or before[n] is not v))


def _call(module: Any, args: Sequence[Any], consts: Mapping[str, Any]) -> list[Any]:
    from .export import flatten_outputs

    torch = _torch()
    with torch.inference_mode():
        return flatten_outputs(module(*args, **consts))


def _tensor_attributes(module: Any) -> dict[str, Any]:
    torch = _torch()
    names = [n for n in dir(module) if not n.startswith("__")]
    found = {}
    for name in names:
        try:
            value = getattr(module, name)
        except Exception:  # noqa: BLE001 -- properties that fail are not state
            continue
        if isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter):
            found[name] = value
    return found


class _Probe:
    """Copies of the module after two calls at batch 1 and at batch 2 (the state the module keeps for a stream)."""

    def __init__(self, module: Any, batch1: Sequence[Any], batch2: Sequence[Any], consts: Mapping[str, Any]) -> None:
        self.one = copy.deepcopy(module)
        self.two = copy.deepcopy(module)
        self.first_shapes: dict[str, tuple[int, ...]] = {}  # tensor attributes after the first call at batch 1
        for copy_, args in ((self.one, batch1), (self.two, batch2)):
            try:
                _call(copy_, args, consts)
                if copy_ is self.one:
                    self.first_shapes = {n: tuple(v.shape) for n, v in _tensor_attributes(copy_).items()}
                _call(copy_, args, consts)
            except Exception as exc:  # noqa: BLE001 -- the user's module failed on the declared inputs
                raise TritongenError(
                    f"the model failed on the declared inputs while tritongen looked for its state: "
                    f"{str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__}",
                    "check --input and --const against forward()",
                ) from None


def _tensor_state(probe: _Probe, name: str, output_names: set[str]) -> TensorState:
    from .dtypes import triton_from_torch

    one, two = getattr(probe.one, name), getattr(probe.two, name)
    first = probe.first_shapes.get(name)
    if first is not None and first != tuple(one.shape):
        raise TritongenError(
            f"attribute '{name}' of the module changes shape from call to call ({list(first)}, then "
            f"{list(one.shape)}): a growing history cannot be a fixed-size state",
            "keep a fixed-size state (e.g. the last N steps) in the attribute",
        )
    axes = [
        a
        for a in range(one.dim())
        if one.dim() == two.dim()
        and one.shape[a] == 1
        and two.shape[a] == 2
        and all(one.shape[b] == two.shape[b] for b in range(one.dim()) if b != a)
    ]
    if not axes:
        raise TritongenError(
            f"attribute '{name}' of the module (shape {list(one.shape)} at batch 1, {list(two.shape)} at batch 2) "
            "has no axis that follows the batch, so it cannot hold one state per sequence",
            "keep the state with one row per batch entry, or make it explicit and pass --state IN:OUT",
        )
    axis = axes[0]
    base = name.strip("_") or "state"
    in_name, out_name = f"{base}_in", f"{base}_out"
    if in_name in output_names or out_name in output_names:
        raise TritongenError(f"state tensor name '{in_name}' is already taken", "rename the model's inputs/outputs")
    dims = tuple(int(s) for a, s in enumerate(one.shape) if a != axis)
    # one value per stream ([batch] to the module): a scalar per item, [batch, 1] to clients
    spec = TensorSpec(in_name, triton_from_torch(one.dtype), dims or (1,), scalar=not dims)
    return TensorState(name, axis, one.dim(), spec, out_name)


def _bookkeeping(probe: _Probe, name: str) -> Bookkeeping:
    one, two = getattr(probe.one, name), getattr(probe.two, name)
    if isinstance(one, (bool, int, float)) and one == two:
        return Bookkeeping(name, one)
    if isinstance(one, int) and not isinstance(one, bool) and (one, two) == (1, 2):
        return Bookkeeping(name, None)
    raise TritongenError(
        f"attribute '{name}' of the module ({type(one).__name__}: {one!r} at batch 1, {two!r} at batch 2) is "
        "state that is not a tensor, so it cannot travel as one",
        "keep the module's state in tensor attributes, or make it explicit and pass --state IN:OUT",
    )


_SCALAR_FROM_TENSOR = ("aten::Bool", "aten::Int", "aten::Float", "aten::item", "aten::is_nonzero")


def _marked_line(source: str) -> str:
    """The code line TorchScript's source range marks (the line above its ``~~~ <--- HERE``)."""
    lines = source.splitlines()
    for i, text in enumerate(lines):
        if "<--- HERE" in text and i > 0:
            return lines[i - 1].strip()
    return ""


def inlined_forward(module: Any) -> Any:
    """The TorchScript module's forward graph with every call inlined; refused when a branch, loop or size reads a
    tensor's values (the interpreter would take the samples' branch and the trace would keep it silently)."""
    torch = _torch()
    graph = module.forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    for kind in _SCALAR_FROM_TENSOR:
        for node in graph.findAllNodes(kind):
            source = next(iter(node.inputs()))
            if source.type().isSubtypeOf(torch._C.TensorType.get()) and source.node().kind() != "prim::NumToTensor":
                line = _marked_line(node.sourceRange() or "") or kind
                raise TritongenError(
                    f"forward() turns a tensor's values into a Python number (`{line[:120]}`), so a model whose "
                    "state tritongen makes explicit would keep the samples' branch",
                    "compute it with torch operations (torch.where instead of if), or make the state explicit in "
                    "forward() and pass --state IN:OUT",
                )
    return graph


def state_wrapper(
    module: Any, arg_names: Sequence[str], n_inputs: int, consts: Mapping[str, Any], states, books
) -> Any:
    """The wrapper module (its class is made here so torch is imported only when needed)."""
    import torch

    class WithExplicitState(torch.nn.Module):  # noqa: N801 -- consts.inner_module recognises it by name
        """forward(inputs..., states...) -> (outputs..., new states...) around a module with state attributes."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = module
            self.states = tuple(states)
            self.books = tuple(books)
            self.graph = None
            if isinstance(module, torch.jit.ScriptModule):
                # Run the module's own graph with the interpreter, so a trace records its operations with the
                # branches taken (calling a ScriptModule inside a trace keeps its control flow, which the ONNX
                # exporter cannot follow through attribute writes); the branches depend on shapes and the
                # bookkeeping attributes only (inlined_forward refuses the rest).
                self.graph = inlined_forward(module)

        def forward(self, *tensors: Any) -> tuple[Any, ...]:
            inputs, given = tensors[:n_inputs], tensors[n_inputs:]
            for state, value in zip(self.states, given):
                setattr(self.inner, state.attribute, value.permute(*state.to_inside))
            for book in self.books:
                setattr(self.inner, book.attribute, inputs[0].shape[0] if book.value is None else book.value)
            if self.graph is not None:
                feed = iter(inputs)
                args = [consts[n] if n in consts else next(feed) for n in arg_names]
                result = torch._C._jit_interpret_graph(  # type: ignore[attr-defined]
                    self.graph, (self.inner._c, *args)
                )
            else:
                result = self.inner(*inputs, **consts)
            from .export import flatten_outputs

            new = [getattr(self.inner, s.attribute).permute(*s.to_outside) for s in self.states]
            return (*flatten_outputs(result), *new)

    return WithExplicitState().eval()


@dataclass(frozen=True)
class ExplicitState:
    """The wrapped module and the spec that declares its state tensors."""

    module: Any
    spec: Any  # BuildSpec with the state inputs, outputs and pairs added
    states: tuple[TensorState, ...]
    bookkeeping: tuple[Bookkeeping, ...]


def _scripted(module: Any) -> Any:
    """A copy of the module as TorchScript where it scripts (its branches on the state's bookkeeping then resolve
    without a trace warning); else an eager copy, whose trace refuses branches on tensor values."""
    torch = _torch()
    if isinstance(module, torch.jit.ScriptModule):
        return copy.deepcopy(module)
    try:
        return torch.jit.script(copy.deepcopy(module))
    except Exception:  # noqa: BLE001 -- many eager modules do not script; the eager trace is checked as usual
        return copy.deepcopy(module)


def _arg_names(module: Any, consts: Mapping[str, Any], n_inputs: int) -> list[str]:
    torch = _torch()
    if isinstance(module, torch.jit.ScriptModule):
        return [a.name for a in module.forward.schema.arguments[1:]]
    return [f"input_{i}" for i in range(n_inputs)]


def _random_inputs(spec: Any, batch: int, seed: int) -> list[Any]:
    from .dtypes import numpy_dtype

    torch = _torch()
    rng = np.random.default_rng(seed)
    arrays = []
    for t in spec.inputs:
        shape = (batch, *[spec.dynamic_dim_size if d == -1 else d for d in t.shape])
        dtype = numpy_dtype(t.dtype)
        array = rng.standard_normal(shape) * 0.1 if dtype.kind == "f" else rng.integers(0, 2, shape)
        arrays.append(torch.from_numpy(np.ascontiguousarray(array.astype(dtype))))
    return arrays


def explicit_state_from_module(module: Any, spec: Any) -> ExplicitState:
    """Wrap ``module`` so the attributes named by ``spec.state_from_attributes`` (or all it writes, ``auto``) become
    state inputs and outputs; the returned spec declares them (``states``) after the model's own inputs/outputs."""
    consts = dict(spec.consts)
    batch1, batch2 = _random_inputs(spec, 1, 1), _random_inputs(spec, 2, 2)
    written = written_attributes(module, batch1, consts)
    wanted = spec.state_from_attributes
    names = written if wanted == (STATE_FROM_ATTRIBUTES_AUTO,) else wanted
    for name in names:
        if not hasattr(module, name):
            raise TritongenError(
                f"--state-from-attributes names '{name}', which the module does not have",
                f"name attributes forward() writes{': ' + ', '.join(written) if written else ''}",
            )
    probe = _Probe(module, batch1, batch2, consts)
    torch = _torch()
    tensor_names = [n for n in names if isinstance(getattr(probe.one, n), torch.Tensor)]
    if wanted != (STATE_FROM_ATTRIBUTES_AUTO,) and len(tensor_names) != len(names):
        bad = next(n for n in names if n not in tensor_names)
        raise TritongenError(
            f"attribute '{bad}' is a {type(getattr(probe.one, bad)).__name__}, not a tensor",
            "list only tensor attributes in --state-from-attributes (other attributes forward() writes are "
            "handled as bookkeeping)",
        )
    if not tensor_names:
        raise TritongenError(
            "forward() keeps no tensor in an attribute of the module between calls, so it has no state to carry",
            "for a model whose state already goes in and out as tensors, pass --state IN:OUT instead",
        )
    probe_outputs = _call(copy.deepcopy(module), batch1, consts)
    output_names = list(spec.output_names) or (
        ["output"] if len(probe_outputs) == 1 else [f"output_{i}" for i in range(len(probe_outputs))]
    )
    states = tuple(_tensor_state(probe, n, set(output_names)) for n in tensor_names)
    books = tuple(_bookkeeping(probe, n) for n in written if n not in tensor_names)
    runnable = _scripted(module)
    wrapper = state_wrapper(
        runnable, _arg_names(runnable, consts, len(spec.inputs)), len(spec.inputs), consts, states, books
    )
    _stream_check(module, wrapper, spec, consts, states)
    new_spec = replace(
        spec,
        inputs=(*spec.inputs, *(s.spec for s in states)),
        output_names=(*output_names, *(s.output for s in states)),
        states=tuple(StatePair(s.spec.name, s.output) for s in states),
    )
    return ExplicitState(wrapper, new_spec, states, books)


def _stream_check(module: Any, wrapper: Any, spec: Any, consts: Mapping[str, Any], states) -> None:
    """The wrapper from zero state reproduces the module's own outputs over a few calls, at batch 2 and at batch 1
    (a module that resets its state when the batch size changes, as silero-vad does, starts a batch-1 stream from
    the state it was made with: a fresh state other than zeros shows only there)."""
    for batch in (2, 1):
        _stream_check_at(module, wrapper, spec, consts, states, batch)


def _stream_check_at(module: Any, wrapper: Any, spec: Any, consts: Mapping[str, Any], states, batch: int) -> None:
    torch = _torch()
    own = copy.deepcopy(module)
    carried = [torch.zeros((batch, *s.spec.shape), dtype=getattr(own, s.attribute).dtype) for s in states]
    for call in range(STREAM_CHECK_CALLS):
        args = _random_inputs(spec, batch, 100 + call)
        expected = _call(own, args, consts)
        with torch.inference_mode():
            got = wrapper(*args, *carried)
        outputs, carried = list(got[: len(expected)]), list(got[len(expected) :])
        for want, have in zip(expected, outputs):
            if want.shape != have.shape:  # the carried state has the first call's shape, the module's own another
                raise TritongenError(
                    f"with its state attributes ({', '.join(s.attribute for s in states)}) passed in as tensors, the "
                    f"module answers {list(have.shape)} where it answers {list(want.shape)} itself at call "
                    f"{call + 1}: a state attribute changes shape between calls",
                    "keep every state attribute one shape from call to call (a fixed window), or make the state "
                    "explicit in forward() and pass --state IN:OUT",
                )
            diff = float((want.float() - have.float()).abs().max()) if want.numel() else 0.0
            bound = spec.atol + spec.rtol * float(want.float().abs().max()) if want.numel() else 0.0
            if diff > bound:
                raise TritongenError(
                    f"with its state attributes ({', '.join(s.attribute for s in states)}) passed in as tensors "
                    f"starting from zeros, the module's output differs from its own by {diff:.3g} at call "
                    f"{call + 1}: its state at the start of a stream is not zeros, or it keeps state elsewhere",
                    "make the module's fresh state zeros (or pass every state attribute), or make the state explicit "
                    "in forward() and pass --state IN:OUT",
                )
