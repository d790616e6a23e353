"""The ``--spec`` YAML file: read with bounded work, every value type-checked, one clean error for anything else.

PyYAML's ``safe_load`` expands aliases: a few hundred bytes with nested anchors build gigabytes of lists. The
file is first read as a stream of parser events (no objects built) and refused when it uses an anchor or alias,
nests too deep or holds too many nodes; only then is it constructed, and each key's value checked against
:func:`tritongen.spec.yaml_keys` (derived from ``BuildSpec``'s fields) before
:func:`tritongen.spec.build_spec_from_options` uses it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import TritongenError
from .files import FileTooLargeError, regular_bytes
from .names import did_you_mean, one_line, with_suggestion

MAX_SPEC_BYTES = 1 << 20
MAX_SPEC_NODES = 10_000
MAX_SPEC_DEPTH = 16
MAX_TENSORS = 1024  # inputs or outputs listed
MAX_RANK = 32
MAX_TEXT_CHARS = 4096
_INT32_MAX = 2**31 - 1

# A key's kind: "int", "number", "bool", "text", "ints" (a list of ints), "texts" (a list of strings), "inputs",
# "outputs", "dim_ranges", "consts", "abs_error_bars", "queue_policies", "rate_limiter". The keys and their kinds
# come from tritongen.spec.yaml_keys() (BuildSpec's fields), passed to yaml_spec.
_KIND_WORDS = {
    "int": "an integer",
    "number": "a number",
    "bool": "true or false",
    "text": "a string",
    "ints": "a list of integers",
}
INPUT_KEYS = ("name", "dtype", "data_type", "dims", "shape")
_DIM_TEXT = re.compile(r"^-?[0-9]{1,10}$")
_ENTRY_EXAMPLE = "{name: x, dtype: FP32, dims: [3, 224, 224]}"
RANGE_KEYS = ("input", "axis", "min", "opt", "max")
POLICY_KEYS = ("priority", "timeout_us", "action", "allow_override", "max_size")
_POLICY_EXAMPLE = "{priority: 1, timeout_us: 5000, action: reject, allow_override: false, max_size: 64}"
RESOURCE_KEYS = ("name", "count", "global")
_RESOURCE_EXAMPLE = "{name: R1, count: 2, global: false}"
_RANGE_EXAMPLE = "{input: x, axis: 1, min: 32, opt: 128, max: 512}"


def yaml_spec(path: Path, keys: Mapping[str, str]) -> dict[str, Any]:
    """The spec file's mapping, with every value of the kind ``keys`` gives its key. Raises :class:`TritongenError`."""
    import yaml

    if not path.is_file():
        raise TritongenError(f"spec file {path} does not exist", "pass --spec with a YAML file")
    try:  # one open, at most MAX_SPEC_BYTES + 1 bytes read: a file that grows after any check is still bounded
        text = regular_bytes(path, MAX_SPEC_BYTES).decode("utf-8")
    except FileTooLargeError:
        raise TritongenError(
            f"spec file {path} is more than the {MAX_SPEC_BYTES} bytes a spec takes",
            "write a short spec: name, inputs, outputs, max_batch_size and the like",
        ) from None
    except UnicodeDecodeError:
        raise TritongenError(f"spec file {path} is not UTF-8 text", "save it as a UTF-8 YAML file") from None
    except OSError as exc:
        why = exc.strerror or exc
        raise TritongenError(f"cannot read spec file {path}: {why}", "check the file's permissions") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        _check_events(yaml.parse(text, Loader=loader), path)
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise TritongenError(f"spec file {path} is not valid YAML{where}", "fix the YAML syntax") from None
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. an integer of thousands of digits, a bad date
        why = str(exc).split(":")[0][:120]
        raise TritongenError(f"spec file {path} holds a value YAML cannot read ({why})", "fix that value") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise TritongenError(f"spec file {path} is not a mapping", "write keys like name:, max_batch_size:, inputs:")
    unknown = sorted((str(k) for k in data if k not in keys), key=str)
    if unknown:
        hint = did_you_mean(unknown[0], keys)
        raise TritongenError(
            f"spec file {path} has unknown key '{unknown[0][:80]}'",
            f"{hint} rename the key" if hint else f"use only {', '.join(sorted(keys))}",
        )
    for key, value in data.items():
        _check_value(f"spec file {path}", key, keys[key], value)
    return data


def _check_events(events, path: Path) -> None:
    """Walk the parser's events: no anchors or aliases, at most :data:`MAX_SPEC_NODES` nodes and
    :data:`MAX_SPEC_DEPTH` levels. Builds nothing."""
    import yaml

    nodes = depth = 0
    for event in events:
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            line = event.start_mark.line + 1 if event.start_mark else 0
            raise TritongenError(
                f"spec file {path} uses a YAML anchor or alias (&, *) at line {line}",
                "write each value out in full: a spec file may not use anchors or aliases",
            )
        if isinstance(event, (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            nodes += 1
            if nodes > MAX_SPEC_NODES:
                raise TritongenError(f"spec file {path} holds more than {MAX_SPEC_NODES} values", "write a short spec")
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_SPEC_DEPTH:
                raise TritongenError(
                    f"spec file {path} nests more than {MAX_SPEC_DEPTH} levels deep", "write a flat spec"
                )
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def _wrong(source: str, where: str, value: Any, wanted: str, example: str) -> TritongenError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return TritongenError(f"{source}: {where} is {shown}, not {wanted}", f"write it as {example}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_value(source: str, key: str, kind: str, value: Any) -> None:
    if kind == "inputs":
        _check_list(source, key, value)
        for i, entry in enumerate(value):
            check_input_entry(source, f"input #{i + 1}", entry)
    elif kind == "outputs":
        _check_list(source, key, value)
        for i, entry in enumerate(value):
            name = entry.get("name") if isinstance(entry, dict) else entry
            if not isinstance(name, str) or (isinstance(entry, dict) and set(entry) - {"name"} - set(INPUT_KEYS)):
                raise _wrong(
                    source,
                    f"output #{i + 1}",
                    entry,
                    "a name or a mapping with a name",
                    "outputs: [logits] or [{name: logits}]",
                )
            _check_text(source, f"output #{i + 1}", name)
            if isinstance(entry, dict):  # dtype and dims as the manifest writes them: type-checked, the graph's used
                check_input_entry(source, f"output #{i + 1}", entry)
    elif kind == "consts":
        if not isinstance(value, dict) or len(value) > MAX_TENSORS:
            raise _wrong(source, "'consts'", value, "a mapping of argument names to values", "consts: {sr: 16000}")
        for name, const in value.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise _wrong(source, "a consts name", name, "an argument name", "consts: {sr: 16000}")
            if (
                not isinstance(const, (bool, int, float))
                or (isinstance(const, float) and not math.isfinite(const))
                or (_is_int(const) and abs(const) > 2**63 - 1)
            ):
                raise _wrong(source, f"consts {name}", const, "an int, a finite float or a bool", "consts: {sr: 16000}")
    elif kind == "abs_error_bars":
        example = "max_abs_error: {box: 0.05}"
        if not isinstance(value, dict) or len(value) > MAX_TENSORS:
            raise _wrong(source, f"'{key}'", value, "a mapping of output names to largest absolute errors", example)
        for name, bar in value.items():
            _check_text(source, f"a {key} output name", name)
            ok = (_is_int(bar) and 0 < bar <= 2**63) or (isinstance(bar, float) and math.isfinite(bar) and bar > 0)
            if not ok:
                raise _wrong(source, f"{key} {name}", bar, "a positive finite number", example)
    elif kind == "queue_policies":
        _check_list(source, key, value)
        for i, entry in enumerate(value):
            check_queue_policy_entry(source, f"queue_policies #{i + 1}", entry)
    elif kind == "rate_limiter":
        _check_list(source, key, value)
        for i, entry in enumerate(value):
            check_resource_entry(source, f"rate_limiter #{i + 1}", entry)
    elif kind == "dim_ranges":
        _check_list(source, key, value)
        for i, entry in enumerate(value):
            check_dim_range_entry(source, f"dim_ranges #{i + 1}", entry)
    elif kind == "texts":
        _check_list(source, key, value)
        for i, entry in enumerate(value):
            _check_text(source, f"{key} #{i + 1}", entry)
    elif kind == "ints":
        _check_list(source, key, value)
        if not all(_is_int(v) and abs(v) <= _INT32_MAX for v in value):
            raise _wrong(source, key, value, _KIND_WORDS[kind], f"{key}: [2, 4]")
    elif kind == "int":
        if not _is_int(value) or abs(value) > _INT32_MAX:
            raise _wrong(source, key, value, "an integer (at most 2147483647 in size)", f"{key}: 8")
    elif kind == "number":
        if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
            raise _wrong(source, key, value, "a finite number", f"{key}: 0.001")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise _wrong(source, key, value, _KIND_WORDS[kind], f"{key}: true")
    else:
        _check_text(source, key, value)


def _check_list(source: str, key: str, value: Any) -> None:
    if not isinstance(value, list):
        example = f"inputs: [{_ENTRY_EXAMPLE}]" if key == "inputs" else f"{key}: [...]"
        raise _wrong(source, f"'{key}'", value, "a list", example)
    if len(value) > MAX_TENSORS:
        raise TritongenError(f"{source}: '{key}' lists {len(value)} entries, more than {MAX_TENSORS}", "list fewer")


def _check_text(source: str, where: str, value: Any) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT_CHARS:
        raise _wrong(
            source, where, value, f"a non-empty string (at most {MAX_TEXT_CHARS} characters)", f"{where}: some_text"
        )


def check_input_entry(source: str, where: str, entry: Any) -> None:
    """One ``inputs`` entry: a mapping with a string name, an optional string dtype and dims, a list of integers
    (or a string like ``"3,224,224"``)."""
    if isinstance(entry, dict) and "name" in entry:
        unknown = sorted((str(k) for k in entry if k not in INPUT_KEYS), key=str)
        if unknown:  # a typo of a key ("dim:") was only shown as the whole entry
            raise TritongenError(
                f"{source}: {where} has an unknown key '{one_line(unknown[0])[:40]}' (known: {', '.join(INPUT_KEYS)})",
                with_suggestion(unknown[0], INPUT_KEYS, f"write it as {_ENTRY_EXAMPLE}"),
            )
    if not isinstance(entry, dict) or "name" not in entry:
        raise _wrong(source, where, entry, f"a mapping of {', '.join(INPUT_KEYS)} with a name", _ENTRY_EXAMPLE)
    _check_text(source, f"{where} name", entry["name"])
    for key in ("dtype", "data_type"):
        if key in entry:
            _check_text(source, f"{where} {key}", entry[key])
    for key in ("dims", "shape"):
        if key not in entry:
            continue
        dims = entry[key]
        if isinstance(dims, str):
            parts = [d.strip() for d in dims.split(",") if d.strip()]
            if not all(_DIM_TEXT.match(p) for p in parts):
                raise _wrong(source, f"{where} {key}", dims, "a list of integers", "dims: [3, 224, 224]")
            dims = [int(p) for p in parts]
        if (
            not isinstance(dims, list)
            or len(dims) > MAX_RANK
            or not all(_is_int(d) and abs(d) <= _INT32_MAX for d in dims)
        ):
            raise _wrong(
                source, f"{where} {key}", entry[key], f"a list of at most {MAX_RANK} integers", "dims: [3, 224, 224]"
            )


def check_dim_range_entry(source: str, where: str, entry: Any) -> None:
    """One ``dim_ranges`` entry: a mapping of exactly input (a string) and axis, min, opt, max (integers)."""
    if not isinstance(entry, dict) or set(entry) != set(RANGE_KEYS):
        raise _wrong(source, where, entry, f"a mapping of {', '.join(RANGE_KEYS)}", _RANGE_EXAMPLE)
    _check_text(source, f"{where} input", entry["input"])
    for key in RANGE_KEYS[1:]:
        if not _is_int(entry[key]) or abs(entry[key]) > _INT32_MAX:
            raise _wrong(source, f"{where} {key}", entry[key], "an integer", _RANGE_EXAMPLE)


def check_queue_policy_entry(source: str, where: str, entry: Any) -> None:
    """One ``queue_policies`` entry: a mapping of some of :data:`POLICY_KEYS` (integers, action a string,
    allow_override a bool); :mod:`tritongen.scheduling` checks the values."""
    if not isinstance(entry, dict) or not entry or set(entry) - set(POLICY_KEYS):
        raise _wrong(source, where, entry, f"a mapping of {', '.join(POLICY_KEYS)}", _POLICY_EXAMPLE)
    for key in ("priority", "timeout_us", "max_size"):
        if key in entry and (not _is_int(entry[key]) or not 0 <= entry[key] <= 2**63 - 1):
            raise _wrong(source, f"{where} {key}", entry[key], "an integer of 0 or more", _POLICY_EXAMPLE)
    if "action" in entry:
        _check_text(source, f"{where} action", entry["action"])
    if "allow_override" in entry and not isinstance(entry["allow_override"], bool):
        raise _wrong(source, f"{where} allow_override", entry["allow_override"], "true or false", _POLICY_EXAMPLE)


def check_resource_entry(source: str, where: str, entry: Any) -> None:
    """One ``rate_limiter`` entry: a mapping of name (a string), count (an integer) and an optional global (a bool)."""
    if not isinstance(entry, dict) or not {"name", "count"} <= set(entry) or set(entry) - set(RESOURCE_KEYS):
        raise _wrong(
            source, where, entry, f"a mapping of {', '.join(RESOURCE_KEYS)} (global optional)", _RESOURCE_EXAMPLE
        )
    _check_text(source, f"{where} name", entry["name"])
    if not _is_int(entry["count"]) or not 0 <= entry["count"] <= 2**32 - 1:
        raise _wrong(source, f"{where} count", entry["count"], "an integer of 0 or more", _RESOURCE_EXAMPLE)
    if "global" in entry and not isinstance(entry["global"], bool):
        raise _wrong(source, f"{where} global", entry["global"], "true or false", _RESOURCE_EXAMPLE)


_ENTRY_CHECKS = {
    "inputs": check_input_entry,
    "dim_ranges": check_dim_range_entry,
    "queue_policies": check_queue_policy_entry,
    "rate_limiter": check_resource_entry,
}


def check_entry(source: str, key: str, where: str, entry: Any) -> None:
    """One entry of the list ``key`` (``inputs``, ``dim_ranges``, ``queue_policies``, ``rate_limiter``) given as
    the spec file's mapping from elsewhere (the Python API's ``build``): the same checks, ``source`` leading the
    message."""
    _ENTRY_CHECKS[key](source, where, entry)
