"""Non-tensor arguments of ``forward()``: ``--const NAME=VALUE`` fixes an ``int``, ``float`` or ``bool`` at export.

``forward(x, sr: int)`` (silero-vad) cannot take ``sr`` from a Triton request: the graph is exported with the value
given, and the manifest records it (``export.consts``). The model is wrapped so that every later stage (export,
PyTorch reference, precision guard) calls ``forward(*tensors, sr=16000)``.

Values: ``true``/``false`` are bools, an integer literal is an int, anything ``float()`` reads (finite) is a
float. Where ``forward()``'s signature is readable, the name must be one of its arguments, not a declared input,
and the value must fit the annotation (an int is accepted for a float). A required ``int``/``float``/``bool``
argument without ``--const`` is refused before anything runs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import TritongenError
from .names import with_suggestion

Const = tuple[str, Any]
SCALAR_TYPES = (bool, int, float)
_FIX = "write it as NAME=VALUE with an int (16000), a float (0.5) or a bool (true/false)"
_PY_FIX = "pass consts={'sr': 16000} (or ['sr=16000']): argument names to ints, finite floats or bools"


def const_from_arg(arg: str) -> Const:
    """Parse ``NAME=VALUE``."""
    name, sep, text = arg.partition("=")
    name, text = name.strip(), text.strip()
    if not sep or not name.isidentifier() or not text:
        raise TritongenError(f"--const '{arg}' is not NAME=VALUE", _FIX)
    if text.lower() in ("true", "false"):
        return name, text.lower() == "true"
    try:
        return name, int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise TritongenError(f"--const '{arg}': '{text}' is not an int, a float or a bool", _FIX) from None
    if not math.isfinite(value):
        raise TritongenError(f"--const '{arg}': {text} is not a finite number", _FIX)
    return name, value


def consts_from_mapping(mapping: Mapping[str, Any]) -> tuple[Const, ...]:
    """The YAML spec's ``consts: {sr: 16000}`` (types checked by :mod:`tritongen.spec_file`)."""
    return tuple((str(k), v) for k, v in mapping.items())


def const_from_pair(name: Any, value: Any) -> Const:
    """A Python ``(name, value)`` pair (``consts={"sr": 16000}`` or ``[("sr", 16000)]``): the rules of ``--const``,
    the value already typed (an int, a finite float or a bool)."""
    shown = f"{name!r}: {value!r}"
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    if not isinstance(name, str) or not name.isidentifier():
        raise TritongenError(f"consts {shown}: {name!r} is not an argument name", _PY_FIX)
    if (
        not isinstance(value, SCALAR_TYPES)
        or (isinstance(value, float) and not math.isfinite(value))
        or (isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63 - 1)
    ):
        raise TritongenError(f"consts {shown}: the value is not an int, a finite float or a bool", _PY_FIX)
    return name, value


def consts_from_given(given: Iterable[Any] | Mapping[str, Any]) -> tuple[Const, ...]:
    """``--const`` values: ``NAME=VALUE`` strings (the CLI's), ``(name, value)`` pairs or one mapping
    ``{name: value}`` (Python's)."""
    if isinstance(given, Mapping):
        return tuple(const_from_pair(k, v) for k, v in given.items())
    out = []
    for item in given:
        if isinstance(item, str):
            out.append(const_from_arg(item))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            out.append(const_from_pair(*item))
        else:
            shown = repr(item) if len(repr(item)) <= 80 else repr(item)[:77] + "..."
            raise TritongenError(f"--const {shown} is not NAME=VALUE", _PY_FIX)
    return tuple(out)


_TYPE_NAMES = {"int": int, "float": float, "bool": bool}


def _norm(annotation: Any) -> Any:
    """A type for ``int``/``float``/``bool`` annotations, written as types or as strings (postponed annotations)."""
    return _TYPE_NAMES.get(annotation, annotation) if isinstance(annotation, str) else annotation


def _parameters(module: Any) -> dict[str, Any] | None:
    """forward()'s parameters: name -> annotation (a required one), or ("optional", annotation) for one with a
    default; None when the signature cannot be read."""
    forward = getattr(module, "forward", None)
    schema = getattr(forward, "schema", None)  # a TorchScript method
    if schema is not None:
        return {
            a.name: _norm(str(a.type)) if a.default_value is None else ("optional", _norm(str(a.type)))
            for a in schema.arguments[1:]
        }
    try:
        params = inspect.signature(forward).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    out = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            return None  # *args / **kwargs: any name may be fine
        annotation = _norm(p.annotation) if p.annotation is not inspect.Parameter.empty else None
        out[p.name] = annotation if p.default is inspect.Parameter.empty else ("optional", annotation)
    return out


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def check_consts(module: Any, consts: Sequence[Const], input_names: Iterable[str]) -> None:
    """Refuse a const that is not an argument of forward(), names a declared input, or does not fit its annotation,
    and a required int/float/bool argument that has no const."""
    names = set(input_names)
    given = dict(consts)
    clash = sorted(names & set(given))
    if clash:
        raise TritongenError(
            f"--const {clash[0]} names a declared input",
            f"drop '{clash[0]}' from --input (a const is not a tensor the client sends) or from --const",
        )
    params = _parameters(module)
    if params is None:
        return
    for name, value in consts:
        if name not in params:
            raise TritongenError(
                f"forward() has no argument '{name}' (--const {name}={value})",
                with_suggestion(name, params, f"use one of its arguments: {', '.join(params) or 'none'}"),
            )
        annotation = params[name][1] if isinstance(params[name], tuple) else params[name]
        if annotation == "Tensor" or _type_name(annotation) == "Tensor":
            raise TritongenError(
                f"--const {name}: forward() takes '{name}' as a tensor",
                f"declare it with --input {name}:DTYPE:DIMS instead",
            )
        if annotation in SCALAR_TYPES and not _fits(value, annotation):
            raise TritongenError(
                f"--const {name}={value}: forward() declares '{name}: {_type_name(annotation)}'",
                f"give {'an' if annotation is int else 'a'} {_type_name(annotation)} value",
            )
    for name, annotation in params.items():
        if name not in given and name not in names and annotation in SCALAR_TYPES:
            raise TritongenError(
                f"forward() needs the argument '{name}: {_type_name(annotation)}', which is not a tensor",
                f"fix it at export with --const {name}=VALUE",
            )


def scripted_defaults(module: Any, consts: Sequence[Const], input_names: Iterable[str]) -> tuple[Const, ...]:
    """A TorchScript forward()'s int/float/bool arguments with a default that neither a const nor an input gives:
    (name, default) each. The TorchScript exporter passes every argument of the scripted method, and one left out
    fails inside torch ("input_values.size() == param_count_list.size()"), so they are fixed at their defaults."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is None:
        return ()
    taken = set(input_names) | {name for name, _ in consts}
    out = []
    for a in schema.arguments[1:]:
        default = a.default_value
        if a.name in taken or default is None or _norm(str(a.type)) not in SCALAR_TYPES:
            continue
        if isinstance(default, (bool, int, float)):
            out.append((a.name, default))
    return tuple(out)


def scripted_left_at_default(module: Any, consts: Sequence[Const], input_names: Iterable[str]) -> tuple[str, ...]:
    """A TorchScript forward()'s other arguments with a default (``None``, a string, a list: not an int, float or
    bool, which :func:`scripted_defaults` fixes) that neither a const nor an input gives, as ``name=default``. The
    TorchScript exporter would pass every argument of the scripted method and fail inside torch, so the module is
    wrapped (:func:`module_with_consts` with ``wrap=True``) and called without them: their defaults apply."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is None:
        return ()
    taken = set(input_names) | {name for name, _ in consts}
    return tuple(
        f"{a.name}={a.default_value!r}"
        for a in schema.arguments[1:]
        if a.name not in taken and a.has_default_value() and _norm(str(a.type)) not in SCALAR_TYPES
    )


def _fits(value: Any, annotation: type) -> bool:
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def inputs_by_name(module: Any, input_names: Sequence[str]) -> tuple[str, ...] | None:
    """The input names to pass to forward() by name, where passing the tensors in their declared order would give
    them to other arguments: every declared name is one of forward()'s arguments but they are not its first ones in
    that order (``--input attention_mask --input input_ids`` for ``forward(input_ids, attention_mask)``, the keys of
    an .npz or of ``example_inputs`` in another order: each was exported under the other's name, and the parity gate
    compared the same mix-up). None where passing in order is right, or forward()'s arguments cannot be read, or
    no declared name is one of them (names of the user's own). A declaration naming some of forward()'s arguments
    at other places than theirs, and others not at all, is refused: which tensor goes where cannot be told."""
    params = _parameters(module)
    names = list(input_names)
    if params is None or not names:
        return None
    order = list(params)
    if names == order[: len(names)]:
        return None
    if set(names) <= set(order):
        unfilled = [
            p for p, a in params.items() if p not in names and not isinstance(a, tuple) and a not in SCALAR_TYPES
        ]
        if unfilled or _positional_only(module) & set(names):
            what = f"leaves forward()'s argument '{unfilled[0]}' without a tensor" if unfilled else "names arguments"
            raise TritongenError(
                f"the inputs declared ({', '.join(names)}) {what} "
                + ("" if unfilled else "forward() takes by position only ")
                + f"(forward({', '.join(order)}))",
                "declare every tensor argument of forward(), in its order",
            )
        return tuple(names)
    misplaced = [n for i, n in enumerate(names) if n in params and order.index(n) != i]
    if misplaced:
        raise TritongenError(
            f"input '{misplaced[0]}' is forward()'s argument {order.index(misplaced[0]) + 1} but is declared "
            f"{names.index(misplaced[0]) + 1}{_ordinal(names.index(misplaced[0]) + 1)}, and other inputs "
            f"({', '.join(n for n in names if n not in params)}) name none of forward()'s arguments "
            f"({', '.join(order)})",
            "declare the inputs in forward()'s order, or name each after the argument it is",
        )
    return None


def _positional_only(module: Any) -> set[str]:
    """forward()'s arguments that cannot be passed by name (``def forward(self, a, b, /)``)."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (AttributeError, TypeError, ValueError):
        return set()
    return {p.name for p in params if p.kind is p.POSITIONAL_ONLY}


def _ordinal(n: int) -> str:
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def module_with_consts(
    module: Any, consts: Sequence[Const], wrap: bool = False, by_name: Sequence[str] | None = None
) -> Any:
    """``module`` wrapped so it takes only the tensors and passes the consts by name (``module`` if there are none,
    unless ``wrap``: a TorchScript module with arguments left at their defaults, :func:`scripted_left_at_default`,
    or ``by_name``: the tensors' names, passed by name, :func:`inputs_by_name`)."""
    if not consts and not wrap and not by_name:
        return module
    import torch

    class WithConsts(torch.nn.Module):
        def __init__(self, inner: Any, values: dict[str, Any], names: tuple[str, ...]) -> None:
            super().__init__()
            self.inner = inner
            self.values = values
            self.names = names

        def forward(self, *tensors: Any) -> Any:
            if self.names:
                return self.inner(**dict(zip(self.names, tensors)), **self.values)
            return self.inner(*tensors, **self.values)

    annotations = _parameters(module) or {}
    values = {}
    for name, value in consts:
        annotation = annotations.get(name)
        annotation = annotation[1] if isinstance(annotation, tuple) else annotation
        values[name] = float(value) if annotation is float else value
    wrapped = WithConsts(module, values, tuple(by_name or ()))
    for sub in wrapped.modules():  # what .eval() does, without calling train(): torch.export's module refuses it
        sub.training = False
    return wrapped


def inner_module(module: Any) -> Any:
    """The user's module under a :func:`module_with_consts` (or state) wrapper."""
    wrappers = ("WithConsts", "WithExplicitState")  # this module's, and tritongen.state_attrs'
    return getattr(module, "inner", module) if type(module).__name__ in wrappers else module
