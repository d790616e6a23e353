"""Load stage: a user's model file -> a callable torch module in eval mode.

The form is read from the file's content, never its extension:

* **TorchScript** (``torch.jit.save``): a zip whose records (under one root folder) include ``constants.pkl``
  next to ``data.pkl`` and ``code/``. Loaded with ``torch.jit.load(map_location="cpu")``; TorchScript's own
  unpickler only builds TorchScript types, so no Python code from the file runs.
* **torch.export** (``torch.export.save``, usually ``.pt2``): a zip with ``archive_format`` = ``pt2`` and the
  program in ``models/<name>.json`` (or, from torch <= 2.7, ``serialized_exported_program.json`` at the top).
  Loaded with ``torch.export.load``; the module is ``ep.module()``.
* **torch.save**: a zip with ``data.pkl`` but no ``constants.pkl``, or the legacy (pre-1.6) non-zip format,
  a pickle stream that starts with torch's magic number. Always first read with ``torch.load(weights_only=True)``,
  which only builds tensors and plain containers: a state_dict (or a checkpoint dict wrapping one) then needs
  ``model_factory``. When that refuses the file it holds pickled Python objects -- usually a whole
  ``nn.Module`` -- and is only unpickled with ``allow_pickle=True``.
* **safetensors**: an 8-byte header length followed by a JSON header; a state_dict, so it needs
  ``model_factory``.

torch.export archives can hold pickles too (tensor subclasses, opaque constants, sample inputs from a fallback
path) and torch loads those with ``weights_only=False``; each is checked with ``weights_only=True`` first, and
an archive that needs more, or that carries AOTInductor-compiled native code, is refused by default.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import logging
import os
import pickle
import struct
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .archive import Archive, open_archive
from .errors import TritongenError

FORMS_HELP = (
    "tritongen reads a TorchScript archive (torch.jit.save), a torch.export archive (torch.export.save, .pt2), "
    "a state_dict or .safetensors file together with --model-factory module:callable, "
    "or a pickled nn.Module (torch.save(model)) together with --allow-pickle, or an ONNX file (.onnx)"
)
PICKLE_FIX = (
    "pass --allow-pickle only if you trust the file (unpickling can run any code), or save a safe form instead: "
    "torch.export.save(torch.export.export(model, args), 'model.pt2'), or torch.save(model.state_dict(), 'model.pt') "
    "with --model-factory module:callable"
)
FACTORY_FIX = (
    "pass --model-factory module:callable (or path/to/file.py:callable) "
    "that returns the nn.Module the weights belong to"
)

# torch.save's legacy (non-zip) format starts with this number, pickled (torch/serialization.py MAGIC_NUMBER).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
# Checkpoint dicts keep the state_dict under one of these keys (Lightning, the PyTorch tutorials, timm, ...).
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params")
# What tritongen reads into memory from a model archive to check it: JSON configs, a torch.save file's data.pkl.
_JSON_LIMIT_BYTES = 64 * 2**20
_PICKLE_LIMIT_BYTES = 256 * 2**20
# safetensors' own limit on its JSON header.
_SAFETENSORS_HEADER_LIMIT_BYTES = 100_000_000
# Prefixes that wrappers add to every key: DataParallel/DDP, torch.compile, Lightning modules.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
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


@dataclass(frozen=True)
class LoadedModel:
    module: (
        Any  # a callable torch module in eval mode: ScriptModule, nn.Module or the GraphModule of an ExportedProgram
    )
    form: str  # "torchscript" | "torch.export" | "state_dict" | "pickled_module" | "onnx"
    source: Path
    exported_program: Any = None  # the torch.export ExportedProgram for .pt2 archives


@dataclass(frozen=True)
class _Format:
    kind: str  # "torchscript" | "torch.export" | "torch.save" | "safetensors" | "pickle" | "onnx"
    note: str = ""  # how it was recognized, for messages


def module_from_file(path: Path, model_factory: str | None = None, allow_pickle: bool = False) -> LoadedModel:
    """Load ``path`` in whichever form it is (see the module docstring). Raises :class:`TritongenError`."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt.kind == "torchscript":
        module = _load_torchscript(path)
        _no_factory(path, model_factory, "a TorchScript archive")
        return LoadedModel(module, "torchscript", path)
    if fmt.kind == "torch.export":
        ep, module = _load_exported(path, allow_pickle)
        _no_factory(path, model_factory, "a torch.export archive")
        return LoadedModel(module, "torch.export", path, ep)
    if fmt.kind == "onnx":
        from .onnx_input import onnx_model_from_file
        from .onnx_stage import OnnxReference

        onnx_model_from_file(path, load_data=False)  # the checks, before ONNX Runtime reads the file
        _no_factory(path, model_factory, "an ONNX file")
        return LoadedModel(OnnxReference(path), "onnx", path)
    if fmt.kind == "safetensors":
        return _from_state_dict(path, _load_safetensors(path), model_factory, "a safetensors file")
    if fmt.kind == "pickle":
        if not allow_pickle:
            raise TritongenError(
                f"{path} is a plain Python pickle, not a torch.save file; loading it could run any code it contains",
                PICKLE_FIX,
            )
        with _quiet_torch(), path.open("rb") as f:
            obj = _guarded(path, "unpickling", lambda: pickle.load(f))
        return _from_object(path, obj, model_factory, pickled=True)
    # torch.save, zip or legacy.
    obj, pickled = _torch_load(path, allow_pickle, fmt.note)
    return _from_object(path, obj, model_factory, pickled)


# --------------------------------------------------------------------------------------------- detection


def detect_format(path: Path) -> _Format:
    """Recognize the file's form from its content. Raises :class:`TritongenError` when it is none of them."""
    path = Path(path)
    if not path.exists():
        raise TritongenError(f"model file {path} does not exist", f"check the path; {FORMS_HELP}")
    if path.is_dir():
        raise TritongenError(
            f"{path} is a directory, not a model file", f"point to the saved model file inside it; {FORMS_HELP}"
        )
    if not path.is_file():
        raise TritongenError(f"{path} is not a regular file", FORMS_HELP)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise TritongenError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    if size == 0:
        raise TritongenError(f"{path} is empty (0 bytes)", f"save the model again; {FORMS_HELP}")
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _detect_zip(path)
    if _is_safetensors(path, head, size):
        return _Format("safetensors")
    from .onnx_input import is_onnx_file

    if is_onnx_file(head):
        return _Format("onnx")
    if head[:1] == b"\x80":  # pickle protocol 2+
        first = _first_pickle_value(head)
        if first == _LEGACY_MAGIC:
            return _Format("torch.save", "legacy torch.save format")
        if first is not _NOT_PICKLE:
            return _Format("pickle")
    raise TritongenError(f"{path} is not a model file tritongen recognizes ({_describe_bytes(head)})", FORMS_HELP)


def _detect_zip(path: Path) -> _Format:
    with open_model_archive(path, verify=True) as archive:
        names = archive.names
        records = _records(names)
        if "archive_format" in records:
            if archive.read(records["archive_format"], limit_bytes=64).strip() != b"pt2":
                raise TritongenError(f"{path} is a zip archive with an unknown archive_format", FORMS_HELP)
            return _Format("torch.export")
        if "serialized_exported_program.json" in (n.lower() for n in names):
            return _Format("torch.export", "torch.export archive from torch <= 2.7")
    if "constants.pkl" in records and "data.pkl" in records:
        return _Format("torchscript")
    if "data.pkl" in records:
        return _Format("torch.save", "torch.save zip format")
    shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
    raise TritongenError(f"{path} is a zip archive but not a PyTorch one (it holds {shown or 'nothing'})", FORMS_HELP)


def open_model_archive(path: Path, verify: bool = False) -> Archive:
    """The model file as a checked archive (:mod:`tritongen.archive`): the one way this module opens a zip."""
    return open_archive(path, "model file", f"copy or save the model again; {FORMS_HELP}", verify=verify)


def _records(names: list[str]) -> dict[str, str]:
    """Record name relative to the archive's root folder -> full member name (torch puts all under one folder).

    Record names are lower-cased: torch's reader finds them ignoring ASCII case (the archive reader refuses
    names that differ only in case), so a check must look them up the same way."""
    roots = {n.split("/", 1)[0] for n in names if "/" in n}
    if len(roots) != 1 or any("/" not in n for n in names):
        return {}
    return {n.split("/", 1)[1].lower(): n for n in names}


def _is_safetensors(path: Path, head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    if not 2 <= n <= min(size - 8, _SAFETENSORS_HEADER_LIMIT_BYTES) or head[8:9] != b"{":
        return False
    try:
        with path.open("rb") as f:
            f.seek(8)
            header = json.loads(f.read(n))
    except (ValueError, OSError, RecursionError):
        return False
    return isinstance(header, dict)


_NOT_PICKLE = object()


def _first_pickle_value(head: bytes) -> Any:
    """The value of the first pickle in ``head`` when it is a plain int (torch's magic number), else None;
    :data:`_NOT_PICKLE` when ``head`` does not start like a pickle at all. Reads opcodes, never unpickles."""
    import pickletools

    try:
        ops = pickletools.genops(io.BytesIO(head))
        proto = next(ops)
        if proto[0].name != "PROTO" or not isinstance(proto[1], int) or not 2 <= proto[1] <= 5:
            return _NOT_PICKLE
        value = next(ops)
        return value[1] if value[0].name in ("LONG1", "LONG4", "INT", "BININT") else None
    except Exception:  # noqa: BLE001 -- anything odd means "not a pickle"
        return _NOT_PICKLE


def _describe_bytes(head: bytes) -> str:
    sample = head[:512]
    if b"\x00" not in sample:
        try:
            sample.decode("utf-8")
            return "it is a text file"
        except UnicodeDecodeError as exc:
            if exc.start > len(sample) - 4:  # cut in the middle of a character
                return "it is a text file"
    return "it starts with bytes " + head[:8].hex(" ")


# --------------------------------------------------------------------------------------------- loaders


@contextlib.contextmanager
def _quiet_torch() -> Iterator[list[logging.LogRecord]]:
    """Silence torch's deprecation chatter and the export loggers while loading; yields their captured records
    (torch.export logs the real cause of a failed load, then raises a vaguer error).

    torch configures ``torch.export`` and some children with their own stderr handlers and ``propagate=False``, so
    each of those gets the capturing handler in place of its own until the block ends."""
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = _Keep(logging.WARNING)
    roots = ("torch.export", "torch._export")
    for name in roots:
        logging.getLogger(name)
    loggers = [
        lg
        for name, lg in list(logging.root.manager.loggerDict.items())
        if isinstance(lg, logging.Logger) and (name in roots or name.startswith(tuple(r + "." for r in roots)))
    ]
    saved = [(lg, lg.handlers, lg.propagate) for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*(TypedStorage|torch\.jit|weights_only).*")
        for lg, handlers, propagate in saved:
            if lg.name in roots or handlers or not propagate:
                lg.handlers = [handler]
                lg.propagate = False
        try:
            yield records
        finally:
            for lg, handlers, propagate in saved:
                lg.handlers = handlers
                lg.propagate = propagate


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {line[:300]}" if line else type(exc).__name__


def _guarded(path: Path, what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except TritongenError:
        raise
    except (ImportError, AttributeError) as exc:
        # Unpickling names a class by module and attribute; both must be importable here.
        if "__main__" in str(exc):  # defined in the script that saved it: no import can bring it back
            raise TritongenError(
                f"{what} {path} failed: the pickled model's class was defined in the script that saved it "
                f"(__main__), which is not there when tritongen loads it ({_first_line(exc)})",
                "save it in a self-contained form: torch.export.save(...) or torch.jit.save(...), or save its "
                "state_dict and pass --model-factory module:function that builds the model",
            ) from None
        raise TritongenError(
            f"{what} {path} failed: the pickled model refers to code that cannot be imported here ({_first_line(exc)})",
            "make the model's module importable (install it or run from its directory), "
            "or save it in a self-contained form: torch.export.save(...) or torch.jit.save(...)",
        ) from None
    except Exception as exc:  # noqa: BLE001 -- a damaged or foreign file; the user can act on the message
        raise TritongenError(
            f"{what} {path} failed: {_first_line(exc)}", "check that the file is complete and was saved by PyTorch"
        ) from None


def _load_torchscript(path: Path) -> Any:
    import torch

    with _quiet_torch():
        module = _guarded(path, "loading TorchScript archive", lambda: torch.jit.load(str(path), map_location="cpu"))
    return module.eval()


def _load_exported(path: Path, allow_pickle: bool) -> tuple[Any, Any]:
    import torch

    _check_pt2_payloads(path, allow_pickle)
    with _quiet_torch() as logged, path.open("rb") as f:  # a file object: torch warns about paths not ending in .pt2
        try:
            ep = torch.export.load(f)
        except Exception as exc:  # noqa: BLE001
            # For a vague "we ran into an error ... check the warnings above", the cause is in the logged warning.
            cause = next((r.exc_info[1] for r in reversed(logged) if r.exc_info and r.exc_info[1] is not None), None)
            detail = _first_line(cause if cause is not None and "warnings above" in str(exc) else exc)
            raise TritongenError(
                f"loading torch.export archive {path} failed: {detail}",
                "save it again with torch.export.save from the torch version installed here "
                f"({torch.__version__.split('+')[0]}), or use another form; {FORMS_HELP}",
            ) from None
        module = _guarded(path, "unlifting the exported program in", ep.module)
    training = _training_ops(ep)
    if training:
        raise TritongenError(
            f"{path} was exported in training mode ({', '.join(training[:3])}): "
            "its outputs would be random or depend on the batch",
            "call model.eval() before torch.export.export, then save it again",
        )
    # ep.module() forbids .eval()/.train(); the graph's mode was fixed at export (checked above), so mark it.
    for sub in module.modules():
        sub.training = False
    return ep, module


def _check_pt2_payloads(path: Path, allow_pickle: bool) -> None:
    """Refuse (unless allowed) what torch.export.load would unpickle with weights_only=False or run natively."""
    unsafe = _pt2_unsafe_payloads(path)
    if unsafe and not allow_pickle:
        raise TritongenError(
            f"{path} holds pickled Python objects ({', '.join(unsafe[:3])}) that torch.export.load would unpickle, "
            "which can run any code",
            "pass --allow-pickle only if you trust the file",
        )


def _pt2_unsafe_payloads(path: Path) -> list[str]:
    import torch

    unsafe: list[str] = []
    with open_model_archive(path) as archive:
        names = archive.names
        records = _records(names) or {n.lower(): n for n in names}
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
        pickled: list[str] = [r for r in records if r.endswith(".pt")]  # sample inputs, legacy weights/constants
        for rel in records:
            if not (rel.startswith(("data/weights/", "data/constants/")) and rel.endswith("config.json")):
                continue
            try:
                config = json.loads(archive.read(records[rel], _JSON_LIMIT_BYTES)).get("config", {})
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
            try:
                with _quiet_torch():
                    torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
            except pickle.UnpicklingError:
                unsafe.append(rel)
            except Exception:  # noqa: BLE001 -- damaged; torch.export.load reports it
                pass
    return unsafe


def _training_ops(ep: Any) -> list[str]:
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


def _load_safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise TritongenError(
            f"{path} is a safetensors file but the safetensors package is not installed", "pip install safetensors"
        ) from None
    with _quiet_torch():
        return _guarded(path, "loading safetensors file", lambda: load_file(str(path), device="cpu"))


def _torch_load(path: Path, allow_pickle: bool, note: str) -> tuple[Any, bool]:
    """``torch.load`` with weights_only=True; the full unpickler only when that refuses and ``allow_pickle``."""
    import torch

    try:
        with _quiet_torch():
            return torch.load(str(path), map_location="cpu", weights_only=True), False
    except pickle.UnpicklingError:
        pass  # a global the weights-only unpickler does not allow -- or a damaged pickle
    except Exception as exc:  # noqa: BLE001
        raise _unreadable(path, note, exc) from None
    well_formed, classes = _scan_pickles(path)
    if not well_formed:
        raise _unreadable(path, note, "its pickled data is damaged")
    if not allow_pickle:
        what = f" ({', '.join(classes[:4])}{', ...' if len(classes) > 4 else ''})" if classes else ""
        raise TritongenError(
            f"{path} is a pickled Python object{what}, not just weights, and loading it could run any code it contains",
            PICKLE_FIX,
        )
    with _quiet_torch():
        return _guarded(path, "unpickling", lambda: torch.load(str(path), map_location="cpu", weights_only=False)), True


def _unreadable(path: Path, note: str, why: BaseException | str) -> TritongenError:
    why = why if isinstance(why, str) else _first_line(why)
    return TritongenError(
        f"{path} looks like a torch.save file ({note}) but cannot be read: {why}",
        f"check that the file is complete; {FORMS_HELP}",
    )


def _scan_pickles(path: Path) -> tuple[bool, list[str]]:
    """Whether a torch.save file's pickles parse, and the non-torch classes and functions they name.

    Reads opcodes only (``pickletools``), never unpickles: a zip holds one pickle (``data.pkl``); the legacy
    format five back to back (magic number, protocol, system info, the object, storage keys) before raw data."""
    import pickletools

    with path.open("rb") as f:
        is_zip = f.read(4) in (b"PK\x03\x04", b"PK\x05\x06")
    if is_zip:
        with open_model_archive(path) as archive:
            member = _records(archive.names).get("data.pkl")
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


# --------------------------------------------------------------------------------------------- objects


def _from_object(path: Path, obj: Any, model_factory: str | None, pickled: bool) -> LoadedModel:
    import torch

    if isinstance(obj, torch.nn.Module):
        _no_factory(path, model_factory, "a whole pickled model")
        return LoadedModel(obj.eval(), "pickled_module", path)
    state = _find_state_dict(obj)
    if state is not None:
        return _from_state_dict(path, state, model_factory, "a state_dict")
    if pickled and isinstance(obj, Mapping):
        for key in _CHECKPOINT_KEYS:
            if isinstance(obj.get(key), torch.nn.Module):
                _no_factory(path, model_factory, "a whole pickled model")
                return LoadedModel(obj[key].eval(), "pickled_module", path)
    if isinstance(obj, Mapping):
        keys = ", ".join(repr(k) for k in list(obj)[:8]) + (", ..." if len(obj) > 8 else "")
        raise TritongenError(
            f"{path} holds a dict (keys {keys or 'none'}) with no state_dict or model in it",
            f"save the model itself or its state_dict; {FORMS_HELP}",
        )
    raise TritongenError(
        f"{path} holds a {type(obj).__module__}.{type(obj).__qualname__}, not a model or a state_dict", FORMS_HELP
    )


def _is_state_dict(obj: Any) -> bool:
    import torch

    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        return False
    return all(isinstance(v, torch.Tensor) or k.endswith("_extra_state") for k, v in obj.items())


def _find_state_dict(obj: Any, depth: int = 0) -> Mapping | None:
    """``obj`` itself when it is a state_dict, else one found in a checkpoint wrapper (``{"state_dict": ...}`` and
    the like, or the only state_dict among its values)."""
    if _is_state_dict(obj):
        return obj
    if not isinstance(obj, Mapping) or depth >= 3:
        return None
    for key in _CHECKPOINT_KEYS:
        if key in obj:
            found = _find_state_dict(obj[key], depth + 1)
            if found is not None:
                return found
    candidates = [v for v in obj.values() if isinstance(v, Mapping) and v and _is_state_dict(v)]
    return candidates[0] if len(candidates) == 1 else None


def _from_state_dict(path: Path, state: Mapping, model_factory: str | None, what: str) -> LoadedModel:
    import torch

    if not model_factory:
        raise TritongenError(
            f"{path} is {what} ({len(state)} tensors): weights only, without the model's code", FACTORY_FIX
        )
    factory = factory_from_spec(model_factory)
    try:
        model = factory()
    except TritongenError:
        raise
    except Exception as exc:  # noqa: BLE001 -- user code
        raise TritongenError(
            f"model factory {model_factory} raised {_first_line(exc)}",
            "fix the factory; it is called with no arguments and must return the nn.Module",
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise TritongenError(
            f"model factory {model_factory} returned a "
            f"{type(model).__module__}.{type(model).__qualname__}, not a torch.nn.Module",
            "make it return the model (an nn.Module instance) the weights belong to",
        )
    state = _match_keys(state, model.state_dict().keys())
    expected = set(model.state_dict().keys())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise TritongenError(
            f"the weights in {path} do not fit the model from {model_factory}: {'; '.join(parts)} keys",
            "make the factory build the same architecture (and configuration) the weights were saved from",
        )
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 -- shape mismatches
        lines = [ln.strip().rstrip(".") for ln in str(exc).splitlines() if ln.strip().startswith("size mismatch")] or [
            _first_line(exc)
        ]
        raise TritongenError(
            f"the weights in {path} do not fit the model from {model_factory}: {'; '.join(lines[:3])}",
            "make the factory build the same architecture (and configuration) the weights were saved from",
        ) from None
    return LoadedModel(model.eval(), "state_dict", path)


def _match_keys(state: Mapping, expected: Any) -> Mapping:
    """Strip wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``) when that makes the keys match exactly."""
    expected = set(expected)
    current = dict(state)
    while set(current) != expected:
        for prefix in _WRAPPER_PREFIXES:
            if current and all(k.startswith(prefix) for k in current):
                current = {k[len(prefix) :]: v for k, v in current.items()}
                break
        else:
            return state
    return current


def _no_factory(path: Path, model_factory: str | None, what: str) -> None:
    if model_factory:
        raise TritongenError(
            f"{path} is {what} that already contains the model, so --model-factory {model_factory} would not be used",
            "drop --model-factory (it is only for state_dict files)",
        )


# --------------------------------------------------------------------------------------------- factories


def factory_from_spec(spec: str) -> Callable:
    """The callable named by ``"package.module:callable"`` or ``"path/to/file.py:callable"`` (``callable`` may be
    dotted, e.g. ``Net.create``). Raises :class:`TritongenError`.

    Like ``python -m``, a module name is also looked up in the working directory; a file's folder is put on
    ``sys.path`` so the file can import its sibling modules."""
    target, sep, attr = str(spec).rpartition(":")
    if not sep or not target.strip() or not attr.strip():
        raise TritongenError(
            f"model factory {spec!r} is not of the form module:callable",
            "write it as package.module:callable or path/to/file.py:callable",
        )
    target, attr = target.strip(), attr.strip()
    module = _module_from_target(target, spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = _callables(module)
            hint = (
                f"it has {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}"
                if names
                else "it defines no callables"
            )
            raise TritongenError(f"model factory {spec}: {target} has no attribute {attr!r}", f"check the name; {hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TritongenError(
            f"model factory {spec}: {attr} is a {type(obj).__name__}, not callable",
            "name a function or class that returns the nn.Module",
        )
    return obj


def _callables(module: Any) -> list[str]:
    """Public callables defined in ``module`` (not imported into it), for hints."""
    public = {n: getattr(module, n, None) for n in dir(module) if not n.startswith("_")}
    own = sorted(n for n, v in public.items() if callable(v) and getattr(v, "__module__", None) == module.__name__)
    return own or sorted(n for n, v in public.items() if callable(v))


def _module_from_target(target: str, spec: str) -> Any:
    is_file = target.endswith(".py") or "/" in target or os.sep in target
    if is_file:
        file = Path(target).expanduser()
        if not file.is_file():
            raise TritongenError(f"model factory {spec}: file {file} does not exist", "check the path")
        file = file.resolve()
        folder = str(file.parent)
        if folder not in sys.path:  # so the file can import its sibling modules
            sys.path.insert(0, folder)
        name = "tritongen_factory_" + "".join(c if c.isalnum() else "_" for c in file.stem)
        module_spec = importlib.util.spec_from_file_location(name, file)
        if module_spec is None or module_spec.loader is None:
            raise TritongenError(f"model factory {spec}: cannot import {file}", "point to a Python source file (.py)")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 -- user code
            sys.modules.pop(name, None)
            raise TritongenError(
                f"model factory {spec}: importing {file} raised {_first_line(exc)}",
                "fix the error in that file (or install what it imports)",
            ) from None
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:  # like `python -m`: modules in the working directory
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise TritongenError(
                f"model factory {spec}: no module named {target!r}",
                "check the spelling, install the package, or run from the folder that contains it (or set PYTHONPATH)",
            ) from None
        raise TritongenError(
            f"model factory {spec}: importing {target} failed: {_first_line(exc)}",
            f"install the missing package {exc.name!r}",
        ) from None
    except Exception as exc:  # noqa: BLE001 -- user code
        raise TritongenError(
            f"model factory {spec}: importing {target} raised {_first_line(exc)}",
            "fix the error in that module (or install what it imports)",
        ) from None
