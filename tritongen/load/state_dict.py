"""state_dicts (and checkpoints wrapping one): the model built by the user's factory, the weights matched to it."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import TritongenError
from ..names import shown
from .common import FACTORY_FIX, FORMS_HELP, LoadedModel, first_line, no_factory

# Checkpoint dicts keep the state_dict under one of these keys (Lightning, the PyTorch tutorials, timm, ...).
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params")


# Prefixes that wrappers add to every key: DataParallel/DDP, torch.compile, Lightning modules.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


def from_object(path: Path, obj: Any, model_factory: str | None, pickled: bool) -> LoadedModel:
    import torch

    if isinstance(obj, torch.nn.Module):
        no_factory(path, model_factory, "a whole pickled model")
        return LoadedModel(obj.eval(), "pickled_module", path)
    state = _find_state_dict(obj)
    if state is not None:
        return from_state_dict(path, state, model_factory, "a state_dict")
    if pickled and isinstance(obj, Mapping):
        for key in _CHECKPOINT_KEYS:
            if isinstance(obj.get(key), torch.nn.Module):
                no_factory(path, model_factory, "a whole pickled model")
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


def from_state_dict(path: Path, state: Mapping, model_factory: str | None, what: str) -> LoadedModel:
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
    except SystemExit as exc:  # sys.exit, quit(): the build ended with exit status 0 and nothing built
        raise TritongenError(f"model factory {model_factory} {_exited(exc)}", _EXIT_FIX) from None
    except Exception as exc:  # noqa: BLE001 -- user code
        raise TritongenError(
            f"model factory {model_factory} raised {first_line(exc)}",
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
            first_line(exc)
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


_EXIT_FIX = (
    "name a function that returns the nn.Module, in a file whose own script code runs only under "
    "if __name__ == '__main__':"
)


def _exited(exc: SystemExit) -> str:
    return f"exited (SystemExit {shown(repr(exc.code), 40)}) instead of returning a model"


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
        except SystemExit as exc:  # a script's own main: the build ended with its exit status, nothing built
            sys.modules.pop(name, None)
            raise TritongenError(f"model factory {spec}: importing {file} {_exited(exc)}", _EXIT_FIX) from None
        except Exception as exc:  # noqa: BLE001 -- user code
            sys.modules.pop(name, None)
            raise TritongenError(
                f"model factory {spec}: importing {file} raised {first_line(exc)}",
                "fix the error in that file (or install what it imports)",
            ) from None
        return module
    if os.getcwd() not in sys.path and "" not in sys.path:  # like `python -m`: modules in the working directory
        sys.path.append(os.getcwd())
    try:
        return importlib.import_module(target)
    except SystemExit as exc:
        raise TritongenError(f"model factory {spec}: importing {target} {_exited(exc)}", _EXIT_FIX) from None
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise TritongenError(
                f"model factory {spec}: no module named {target!r}",
                "check the spelling, install the package, or run from the folder that contains it (or set PYTHONPATH)",
            ) from None
        raise TritongenError(
            f"model factory {spec}: importing {target} failed: {first_line(exc)}",
            f"install the missing package {exc.name!r}",
        ) from None
    except Exception as exc:  # noqa: BLE001 -- user code
        raise TritongenError(
            f"model factory {spec}: importing {target} raised {first_line(exc)}",
            "fix the error in that module (or install what it imports)",
        ) from None
