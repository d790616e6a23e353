"""Values checked against their type annotations, in one place: every spec's fields and the API's keywords.

Each frozen spec (``PerfSpec``, ``TuneSpec``, ``ServeSpec``, ``InferSpec``, ``RolloutSpec``, ``GateThresholds``)
calls :func:`check_fields` first in ``__post_init__``, and :mod:`tritongen.api` checks its functions' own
keywords with :func:`check_value`, so a value of the wrong type is refused where it enters, naming the field and
the type it wants, instead of failing deep inside with a raw ``TypeError``. The rules:

- ``int``: an integer (numpy's too), not a bool; ``float``: an integer or a float, not a bool (stored as float);
  ``bool``: True or False; ``str``: text. A number written as text (``"5"``) is refused: the fix shows it as a
  number (the CLI parses its flags; the API takes values of their type);
- ``Path``: a ``str`` or any ``os.PathLike``, stored as a :class:`~pathlib.Path`;
- ``tuple[X, ...]`` / ``Sequence[X]``: a list, tuple or other iterable of ``X``, stored as a tuple; one ``X`` on its
  own (a ``str`` where texts or paths are expected, an ``int`` where numbers are) is one item, never iterated;
- ``Mapping[K, V]``: a mapping whose keys and values are checked, stored as a dict;
- ``X | None``: None or ``X``; a class: an instance of it; a ``Callable``: anything callable; ``Any``: anything.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from .errors import TritongenError
from .names import shown


class _Mismatch(Exception):
    """The value is not of the annotated type (turned into a TritongenError naming the field)."""


def check_fields(
    spec: Any,
    what: str,
    *,
    parse: Mapping[str, Callable[[Any], Any]] | None = None,
    skip: Iterable[str] = (),
    names: Mapping[str, str] | None = None,
) -> None:
    """Check (and convert, as the rules above say) every field of the frozen dataclass ``spec`` against its
    annotation, in place. ``parse`` maps a field to a function applied to its value first (a text form the CLI
    takes too, e.g. ``"1,4"``); ``skip`` names fields the spec checks itself; ``names`` maps a field to the name
    the user gave it (an API keyword that differs from the field). ``what`` leads the message (e.g. ``perf``)."""
    hints = class_hints(type(spec))
    skipped = set(skip)
    for field in dataclasses.fields(spec):
        if field.name in skipped or field.name not in hints:
            continue
        value = getattr(spec, field.name)
        if parse and field.name in parse:
            value = parse[field.name](value)
        name = names.get(field.name, field.name) if names else field.name
        value = check_value(value, hints[field.name], name, what)
        _check_number(value, name, what)
        object.__setattr__(spec, field.name, value)


_UNIT_SUFFIXES = ("_s", "_ms", "_us", "_pct")
MAX_TIMEOUT_S = 86400.0  # any timeout: a day (a socket's or gRPC's deadline overflows far above)


def _check_number(value: Any, name: str, what: str) -> None:
    """Numbers a field holds (one, or a tuple of them): finite (a NaN passes every comparison a spec makes, an inf
    turns a gate off), not negative where the name carries a unit (``_s``, ``_ms``, ``_us``, ``_pct``), and above
    zero for a timeout."""
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        shown_value = f"{name}={item!r}" if len(items) == 1 else f"{name} item {item!r}"
        if isinstance(item, float) and not math.isfinite(item):
            raise TritongenError(f"{what} option {shown_value} is not a finite number", "pass a number")
        if name.endswith("timeout_s") and item <= 0:
            raise TritongenError(f"{what} option {shown_value} is not above 0", "pass a timeout in seconds, e.g. 30")
        if name.endswith("timeout_s") and item > MAX_TIMEOUT_S:  # past ~9.2e9 s a socket's timeout overflows
            raise TritongenError(
                f"{what} option {shown_value} is more than a day", f"pass a timeout in seconds up to {MAX_TIMEOUT_S:g}"
            )
        if name.endswith(_UNIT_SUFFIXES) and item < 0:
            raise TritongenError(f"{what} option {shown_value} is negative", "pass 0 or more")


def check_arguments(func: Callable[..., Any], values: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``values`` (keyword arguments of ``func``) checked and converted against ``func``'s parameter annotations."""
    hints = parameter_hints(func)
    return {k: check_value(v, hints[k], k, what) if k in hints else v for k, v in values.items()}


def check_value(value: Any, annotation: Any, name: str, what: str) -> Any:
    """``value`` converted to ``annotation`` (see the module's rules), or a TritongenError naming ``name``."""
    try:
        return _convert(value, annotation)
    except _Mismatch:
        pass
    bad = _bad_item(value, annotation)
    example = f"{name}={value.strip() if isinstance(value, str) else ''}"
    if bad is not None:  # a list with one wrong item: that item is named
        value, annotation = bad
        name, example = f"{name} item {shown(repr(value))}", str(value).strip()
    else:
        name = f"{name}={shown(repr(value))}"
    wanted = describe(annotation)
    kind = type(value).__name__
    problem = f"{what} option {name} is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not {wanted}"
    if isinstance(value, str) and _number_text(value):
        fix = f"pass the number itself, not text: {shown(example)}"
    else:
        fix = f"pass {wanted}"
    raise TritongenError(problem, fix)


def _bad_item(value: Any, annotation: Any) -> tuple[Any, Any] | None:
    """The first item of ``value`` that is not of ``annotation``'s item type (a list of them), and that type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        return _bad_item(value, members[0]) if len(members) == 1 else None
    variadic = origin is tuple and len(args) == 2 and args[1] is Ellipsis or origin in (Sequence, Iterable)
    if not variadic or not args or isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        return None
    for item in value:
        try:
            _convert(item, args[0])
        except _Mismatch:
            return item, args[0]
    return None


def describe(annotation: Any) -> str:
    """What ``annotation`` asks for, in words (``"a number or None"``)."""
    if annotation is Any:
        return "anything"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if any(_is_path(a) for a in members):
            members = [a for a in members if a is not str]
        text = " or ".join(dict.fromkeys(describe(a) for a in members))
        return f"{text} or None" if type(None) in args else text
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis or origin in (Sequence, Iterable):
        item = args[0] if args else Any
        return "a list" if item is Any else f"{describe(item)} or a list of them"
    if origin is tuple:
        return f"a pair ({', '.join(describe(a) for a in args)})"
    if origin in (Mapping, dict):
        return "a mapping" + (f" of {describe(args[0])} to {describe(args[1])}" if args and args[1] is not Any else "")
    if origin is Callable or annotation is Callable:
        return "a function (callable)"
    simple = {bool: "True or False", int: "a whole number", float: "a number", str: "text (a str)"}
    if annotation in simple:
        return simple[annotation]
    if _is_path(annotation):
        return "a path (str or os.PathLike)"
    return f"a {getattr(annotation, '__name__', str(annotation))}"


def _convert(value: Any, annotation: Any) -> Any:
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for member in args:
            if member is type(None):
                continue
            try:
                return _convert(value, member)
            except _Mismatch:
                continue
        raise _Mismatch
    if annotation is type(None):
        if value is None:
            return None
        raise _Mismatch
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if annotation is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise _Mismatch
    if annotation is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an int too large for a float
                raise _Mismatch from None
        raise _Mismatch
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if _is_path(annotation):
        if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
            try:
                return Path(value)
            except TypeError:  # a PathLike whose __fspath__ gives bytes
                raise _Mismatch from None
        raise _Mismatch
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence) or len(value) != len(args):
            raise _Mismatch
        return tuple(_convert(v, a) for v, a in zip(value, args))
    if origin in (tuple, Sequence, Iterable):
        item = args[0] if args else Any
        if item is Any and isinstance(value, Mapping):
            raise _Mismatch  # neither one item nor its keys: a union's Mapping member takes it
        single = isinstance(value, (str, bytes)) or not isinstance(value, Iterable)
        if item is not Any or single:  # a list of anything is that list, not one item
            try:
                return (_convert(value, item),)  # one item on its own (a str is one text, not its letters)
            except _Mismatch:
                pass
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            raise _Mismatch
        return tuple(_convert(v, item) for v in value)
    if origin in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise _Mismatch
        key, val = args if args else (Any, Any)
        return {_convert(k, key): _convert(v, val) for k, v in value.items()}
    if origin is Callable or annotation is Callable:
        if callable(value):
            return value
        raise _Mismatch
    if isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        raise _Mismatch
    return value  # an annotation these rules do not cover: not checked


def _is_path(annotation: Any) -> bool:
    """A path type: ``Path`` and its kin, or ``os.PathLike`` (``os.PathLike[str]`` too)."""
    target = typing.get_origin(annotation) or annotation
    return isinstance(target, type) and issubclass(target, (PurePath, os.PathLike))


def _number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_HINTS: dict[type, dict[str, Any]] = {}


def class_hints(cls: type) -> dict[str, Any]:
    """``cls``'s field annotations, evaluated (once per class)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


# A CLI command line inside a message ("rebuild it with tritongen build --force, or ..."): its flags stay flags.
_COMMAND_LINE = re.compile(r"tritongen [a-z][^,;:()]*")
_FLAG = re.compile(r"(?<![\w'-])--([a-z][a-z0-9]*(?:-[a-z0-9]+)*)\b")


def in_api_words(text: str, options: Mapping[str, Any], spellings: Mapping[str, str]) -> str:
    """``text`` (an error's problem or fix, written for the CLI) with each CLI flag that stands for one of
    ``options`` (keyword -> annotation) named as a Python caller passes it: ``--force`` -> ``force=True`` (a
    bool), ``--no-warmup`` -> ``warmup=False``, ``--max-batch-size`` -> ``max_batch_size``; ``spellings`` maps a
    flag the API names otherwise to its keyword (``{"instances": "instance_count=N"}`` -> ``instance_count``).
    Flags inside a ``tritongen ...`` command line, and flags of no option here, are left as written."""
    kept = [m.span() for m in _COMMAND_LINE.finditer(text)]

    def word(match: re.Match[str]) -> str:
        if any(start <= match.start() < end for start, end in kept):
            return match.group(0)
        key = match.group(1).replace("-", "_")
        spelled = spellings.get(key)
        if spelled is not None and " " not in spelled:
            return spelled if spelled.endswith(("=True", "=False")) else spelled.split("=")[0]
        if key.startswith("no_") and _is_bool(options.get(key[3:])):
            return f"{key[3:]}=False"
        if key in options:
            return f"{key}=True" if _is_bool(options[key]) else key
        return match.group(0)

    return _FLAG.sub(word, text)


_OPTION_VALUE = re.compile(r"\boption ([A-Za-z_][A-Za-z0-9_]*)=")


def in_cli_words(text: str, spellings: Mapping[str, str]) -> str:
    """``text`` with each ``option keyword=value`` a spec's check wrote (``serve option ready_timeout_s=nan``) as
    the CLI's flag (``serve option --timeout-s nan``): ``spellings`` maps a flag the API names otherwise to its
    keyword, as :func:`in_api_words` reads it."""
    flags = {keyword.split("=")[0]: flag for flag, keyword in spellings.items() if " " not in keyword}

    def flag(match: re.Match[str]) -> str:
        key = match.group(1)
        return f"option --{flags.get(key, key).replace('_', '-')} "

    return _OPTION_VALUE.sub(flag, text)


def _is_bool(annotation: Any) -> bool:
    members = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    return annotation is bool or (bool in members and all(m in (bool, type(None)) for m in members))


def parameter_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """``func``'s parameter annotations, evaluated (``from __future__ import annotations`` leaves them as text;
    the return annotation, often a name imported for type checking only, is left out)."""
    target = inspect.unwrap(func)
    namespace = getattr(target, "__globals__", {})
    hints = {}
    for param in inspect.signature(target).parameters.values():
        annotation = param.annotation
        if annotation is inspect.Parameter.empty or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        hints[param.name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation  # noqa: S307
    return hints
