"""Checks before torch reads an archive: no pickle that needs more than weights, no compiled native code,
no graph left in training mode."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path
from typing import Any

from ..errors import TritongenError
from ..names import shown
from .common import quiet_torch
from .detect import JSON_LIMIT_BYTES, open_model_archive, record_names
from .sym_exprs import expr_strings, unsafe_expr

_PICKLE_LIMIT_BYTES = 256 * 2**20
_SIDE_EFFECT_MARK = "side effect: "


# Ops of an exported graph whose argument at this index (or keyword) says "training mode".
_TRAINING_ARGS = {
    "aten.dropout.default": (2, "train"),
    "aten.feature_dropout.default": (2, "train"),
    "aten.alpha_dropout.default": (2, "train"),
    "aten.feature_alpha_dropout.default": (2, "train"),
    "aten.native_dropout.default": (2, "train"),
    "aten.batch_norm.default": (5, "training"),
    "aten.native_batch_norm.default": (5, "training"),
    "aten._native_batch_norm_legit.default": (5, "training"),
    "aten._native_batch_norm_legit_functional.default": (5, "training"),
    "aten.cudnn_batch_norm.default": (5, "training"),
    "aten.miopen_batch_norm.default": (5, "training"),
}


# Operators that reach outside the model when its graph runs (or, for TorchScript, when ``__setstate__`` runs at
# load): files read, mapped writable or written, tensors loaded by name, remote calls. No graph a server runs
# needs one, none has an ONNX translation, and each does its harm before the export fails: a TorchScript forward
# calling torch.from_file(path, shared=True) rewrote a file the user could write during the build's first run.
SIDE_EFFECT_OPS = (
    "aten::from_file",
    "aten::save",
    "debugprims::load_tensor",
    "prim::rpc_async",
    "prim::rpc_remote",
    "prim::rpc_sync",
)
# The names of those ops as TorchScript's serialized code calls them (torch.from_file(...), ops.aten.save(...),
# rpc_async(...)); ``save`` as an attribute of torch or ops (torch.save, torch.autograd.save).
_SIDE_EFFECT_NAMES = frozenset({"from_file", "load_tensor", "rpc_async", "rpc_remote", "rpc_sync"})
_OP_ROOTS = frozenset({"torch", "ops"})  # where TorchScript code finds builtin ops
_SIDE_EFFECT_FIX = (
    "remove those calls from the model (a served model computes from its inputs alone), then save it again"
)
_CODE_LIMIT_BYTES = 64 * 2**20  # one TorchScript source file (a whole model's code is kilobytes to a few MB)


def side_effect_error(path: Path, found: list[str]) -> TritongenError:
    return TritongenError(
        f"{path} calls {', '.join(sorted(set(found))[:4])}, which read or write files (or call out) as the model "
        "loads or runs: refused before it runs",
        _SIDE_EFFECT_FIX,
    )


def check_torchscript_code(path: Path) -> None:
    """Refuse a TorchScript archive whose code (every ``code/*.py`` record: ``forward``, ``__setstate__``, which
    ``torch.jit.load`` itself runs) names an op of :data:`SIDE_EFFECT_OPS`; read before torch loads anything."""
    found = []
    with open_model_archive(path) as archive:
        for name in archive.names:
            rel = name.split("/", 1)[-1].lower()
            if not (rel.startswith("code/") and rel.endswith(".py")):
                continue
            text = bytes(archive.read(name, _CODE_LIMIT_BYTES)).decode("utf-8", errors="replace")
            found += side_effects_in_code(text)
    if found:
        raise side_effect_error(path, found)


def side_effects_in_code(text: str) -> list[str]:
    """The :data:`SIDE_EFFECT_OPS` TorchScript source ``text`` names, read as Python (TorchScript's syntax, which
    ``ast`` parses as torch does: comments, line continuations and adjacent string literals cannot split a name), plus
    ``getattr`` on torch or ops (``getattr(torch, "sa" "ve")`` is torch.save). Code that is not Python counts as one:
    torch writes none, and it could not be read for what it calls."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return ["code that does not parse as Python"]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in _SIDE_EFFECT_NAMES:
            found.append(node.id)
        elif isinstance(node, ast.Attribute) and node.attr in _SIDE_EFFECT_NAMES:
            found.append(node.attr)
        elif isinstance(node, ast.Attribute) and node.attr == "save" and _root(node.value) in _OP_ROOTS:
            found.append("save")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and node.args
            and _root(node.args[0]) in _OP_ROOTS
        ):
            found.append("getattr on " + _root(node.args[0]))
    return found


def _root(node: ast.AST) -> str:
    """The name an attribute chain starts at (``torch`` for ``torch.autograd.save``); "" for anything else."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


def side_effect_ops_in_script_module(module: Any) -> list[str]:
    """The :data:`SIDE_EFFECT_OPS` in any method graph of a loaded TorchScript ``module`` or its submodules, the
    functions they call inlined: what the compiler resolved, whatever the code's spelling."""
    import torch

    found = set()
    for sub in module.modules():
        script = getattr(sub, "_c", None)
        if script is None:
            continue
        for name in script._method_names():
            graph = script._get_method(name).graph.copy()
            torch._C._jit_pass_inline(graph)
            blocks = [graph.block()] if hasattr(graph, "block") else []
            nodes = list(graph.nodes())
            while nodes or blocks:
                if blocks:
                    nodes += list(blocks.pop().nodes())
                    continue
                node = nodes.pop()
                if node.kind() in SIDE_EFFECT_OPS:
                    found.add(node.kind())
                blocks += list(node.blocks())
    return sorted(found)


def side_effect_op_of_target(target: str) -> str | None:
    """``torch.ops.aten.from_file.default`` (an exported graph node's target) as ``aten::from_file`` when that is
    one of :data:`SIDE_EFFECT_OPS`."""
    parts = target.split(".")  # torch resolves torch.ops.aten.x, torch._ops.ops.aten.x, torchX.ops.aten.x alike
    pairs = {f"{a}::{b}" for a, b in zip(parts, parts[1:])}
    return next((op for op in SIDE_EFFECT_OPS if op in pairs), None)


def side_effect_ops_in_program(ep: Any) -> list[str]:
    """The :data:`SIDE_EFFECT_OPS` a loaded ExportedProgram's graphs (and their subgraphs) call, as torch resolved
    them: checked before its module is made or run, whatever the file spelled."""
    found = set()
    for gm in ep.graph_module.modules():
        graph = getattr(gm, "graph", None)
        for node in graph.nodes if graph is not None else ():
            name = getattr(node.target, "name", None) if node.op == "call_function" else None
            op = name().split(".")[0] if callable(name) else ""
            if op in SIDE_EFFECT_OPS:
                found.add(op)
    return sorted(found)


def _targets(program: Any) -> list[str]:
    """Every string a node of the serialized program names as its ``target`` (walked without recursion)."""
    found, stack = [], [program]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "target" and isinstance(value, str):
                    found.append(value)
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return found


def check_pt2_payloads(path: Path, allow_pickle: bool) -> None:
    """Refuse (unless allowed) what torch.export.load would unpickle with weights_only=False or run natively; refuse
    outright a program calling an op of :data:`SIDE_EFFECT_OPS`."""
    unsafe = _pt2_unsafe_payloads(path)
    side_effects = [u.removeprefix(_SIDE_EFFECT_MARK) for u in unsafe if u.startswith(_SIDE_EFFECT_MARK)]
    if side_effects:
        raise side_effect_error(path, side_effects)
    if unsafe and not allow_pickle:
        raise TritongenError(
            f"{path} holds pickled Python objects or code ({', '.join(unsafe[:3])}) that torch.export.load would "
            "unpickle or evaluate, which can run any code",
            "pass --allow-pickle only if you trust the file",
        )


def _pt2_unsafe_payloads(path: Path) -> list[str]:
    import torch

    unsafe: list[str] = []
    with open_model_archive(path) as archive:
        names = archive.names
        records = record_names(names) or {n.lower(): n for n in names}
        if (
            not any(r.startswith("models/") and r.endswith(".json") for r in records)
            and "serialized_exported_program.json" not in records
        ):
            raise TritongenError(
                f"{path} is a PT2 package without an exported program"
                + (
                    " (it holds AOTInductor-compiled code)"
                    if any(r.startswith("data/aotinductor/") for r in records)
                    else ""
                ),
                "save the ExportedProgram itself: torch.export.save(torch.export.export(model, args), 'model.pt2')",
            )
        native = sorted(
            {r.split("/")[1] for r in records if r.startswith(("data/aotinductor/", "data/executorch/", "data/mtia"))}
        )
        if native:
            raise TritongenError(
                f"{path} carries compiled code ({', '.join(native)}) that loading would execute",
                "save the ExportedProgram alone: torch.export.save(torch.export.export(model, args), 'model.pt2')",
            )
        for rel in records:  # the program's symbolic sizes: sympify evaluates them as Python
            if not (rel.startswith("models/") or rel == "serialized_exported_program.json") or not rel.endswith(
                ".json"
            ):
                continue
            try:
                program = json.loads(archive.read(records[rel], JSON_LIMIT_BYTES))
            except (ValueError, RecursionError):
                continue  # torch.export.load will report it
            for text in expr_strings(program):
                why = unsafe_expr(text)
                if why is not None:
                    unsafe.append(f"a symbolic size that {why} ({shown(text, 50)}), which torch would evaluate")
                    break
            for target in _targets(program):
                op = side_effect_op_of_target(target)
                if op is not None:
                    unsafe.append(_SIDE_EFFECT_MARK + op)
        pickled: list[str] = [r for r in records if r.endswith(".pt")]  # sample inputs, legacy weights/constants
        for rel in records:
            if not (rel.startswith(("data/weights/", "data/constants/")) and rel.endswith("config.json")):
                continue
            try:
                config = json.loads(archive.read(records[rel], JSON_LIMIT_BYTES)).get("config", {})
            except (ValueError, AttributeError, RecursionError):
                continue  # torch.export.load will report it
            folder = rel.rsplit("/", 1)[0] + "/"
            for fqn, meta in config.items() if isinstance(config, dict) else ():
                name = str(meta.get("path_name", "")) if isinstance(meta, dict) else ""
                if name.startswith("opaque_obj_"):
                    unsafe.append(f"opaque object {fqn}")
                elif isinstance(meta, dict) and meta.get("use_pickle"):
                    pickled.append((folder + name).lower())
        for rel in pickled:
            if rel not in records:
                continue
            data = archive.read(records[rel], archive.size_bytes(records[rel]))
            if not data:
                continue
            # Any failure counts, not only UnpicklingError: where the weights-only load fails, torch.export.load
            # loads the record again with weights_only=False (sample inputs, legacy records) or loads use_pickle
            # records so from the start. A crafted tensor state that makes the restricted unpickler raise a
            # TypeError reached a payload that way.
            try:
                with quiet_torch():
                    torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
            except Exception:  # noqa: BLE001 -- pickle.UnpicklingError, TypeError, damaged data alike
                unsafe.append(rel)
    return unsafe


def training_ops(ep: Any) -> list[str]:
    found: list[str] = []
    for gm in ep.graph_module.modules():
        graph = getattr(gm, "graph", None)
        if graph is None:
            continue
        for node in graph.nodes:
            if node.op != "call_function":
                continue
            spec = _TRAINING_ARGS.get(str(node.target))
            if spec is None:
                continue
            index, keyword = spec
            flag = node.args[index] if len(node.args) > index else node.kwargs.get(keyword)
            if flag is True and not ("dropout" in str(node.target) and len(node.args) > 1 and node.args[1] == 0):
                found.append(f"{str(node.target).rsplit('.', 1)[0]} with {keyword}=True")
    return sorted(set(found))


def scan_pickles(path: Path) -> tuple[bool, list[str]]:
    """Whether a torch.save file's pickles parse, and the non-torch classes and functions they name.

    Reads opcodes only (``pickletools``), never unpickles: a zip holds one pickle (``data.pkl``); the legacy
    format five back to back (magic number, protocol, system info, the object, storage keys) before raw data."""
    import pickletools

    with path.open("rb") as f:
        is_zip = f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    if is_zip:
        with open_model_archive(path) as archive:
            member = record_names(archive.names).get("data.pkl")
            if member is None:
                return False, []
            stream: Any = io.BytesIO(archive.read(member, _PICKLE_LIMIT_BYTES))
        count = 1
    else:
        stream, count = path.open("rb"), 5
    found: list[str] = []
    pushed: list[Any] = []
    memo: dict[Any, Any] = {}
    try:
        with stream:
            for _ in range(count):
                for op, arg, _pos in pickletools.genops(stream):
                    name = op.name
                    if name in ("GLOBAL", "INST"):
                        found.append(str(arg).replace(" ", "."))
                    elif name == "STACK_GLOBAL" and len(pushed) >= 2:
                        found.append(f"{pushed[-2]}.{pushed[-1]}")
                    elif "UNICODE" in name or "STRING" in name:
                        pushed.append(arg)
                    elif name == "MEMOIZE" and pushed:
                        memo[len(memo)] = pushed[-1]
                    elif name in ("PUT", "BINPUT", "LONG_BINPUT") and pushed:
                        memo[arg] = pushed[-1]
                    elif name in ("GET", "BINGET", "LONG_BINGET"):
                        pushed.append(memo.get(arg))
    except Exception:  # noqa: BLE001 -- not a well-formed pickle
        return False, []
    boring = ("torch.", "collections.", "builtins.", "__builtin__.", "copyreg.", "_codecs.", "numpy.")
    return True, list(dict.fromkeys(item for item in found if not item.startswith(boring)))
