"""Load stage: a user's model file -> a callable torch module in eval mode.

The form is read from the file's content, never its extension:

* **TorchScript** (``torch.jit.save``): a zip whose records (under one root folder) include ``constants.pkl``
  next to ``data.pkl`` and ``code/``. Loaded with ``torch.jit.load(map_location="cpu")``; TorchScript's own
  unpickler only builds TorchScript types, so no Python code from the file runs. Its TorchScript code does run
  (``__setstate__`` at load, ``forward`` at export): code naming an op that reads or writes files or calls out
  (:data:`tritongen.load.safety.SIDE_EFFECT_OPS`) is refused before the load, and every loaded method graph is
  checked again for them before it runs; a torch.export program's node targets are checked the same way.
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
import dataclasses
import os
import pickle
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import TritongenError, errors_naming
from .common import FACTORY_FIX, FORMS_HELP, PICKLE_FIX, LoadedModel, first_line, guarded, no_factory, quiet_torch
from .detect import Format, detect_format, open_model_archive
from .exported import program_from_archive
from .safety import check_torchscript_code, scan_pickles, side_effect_error, side_effect_ops_in_script_module
from .state_dict import factory_from_spec, from_object, from_state_dict

__all__ = [
    "FACTORY_FIX",
    "FORMS_HELP",
    "PICKLE_FIX",
    "Format",
    "LoadedModel",
    "detect_format",
    "factory_from_spec",
    "module_from_file",
    "open_model_archive",
    "private_copy",
]


def module_from_file(path: Path, model_factory: str | None = None, allow_pickle: bool = False) -> LoadedModel:
    """Load ``path`` in whichever form it is (see the module docstring). Raises :class:`TritongenError`.

    A model file torch loads (every form but ONNX) is first copied, in one read, into a private folder: the format
    is read, every check runs and torch loads from that copy, so a file swapped or rewritten on disk between a check
    and the load (the pickle scan, the side-effect scan) is never what loads. Messages name ``path``."""
    path = Path(path)
    if detect_format(path).kind == "onnx":
        return _onnx_from_private_copy(path, model_factory)
    with private_copy(path) as copy:
        loaded = _loaded_from(copy, model_factory, allow_pickle)
        if loaded.form == "onnx":  # it was not, a moment ago: and ONNX is read from the path again later
            raise TritongenError(
                f"{path} changed while it was read (it is an ONNX file now)",
                "keep the model file unchanged while tritongen builds from it (where only you write)",
            )
    return dataclasses.replace(loaded, source=path)


@contextlib.contextmanager
def private_copy(path: Path) -> Iterator[Path]:
    """``path`` copied in one read into a private folder (in $TMPDIR, removed after the block), for code that checks
    a model file and then has torch load it: both read the copy. A :class:`TritongenError` raised in the block names
    ``path``, not the copy."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="tritongen-model-") as private:
        copy = Path(private) / path.name
        _copy_once(path, copy)
        with errors_naming(path, copy):
            yield copy


def _onnx_from_private_copy(path: Path, model_factory: str | None) -> LoadedModel:
    """An ONNX file and the external data files it names, copied once into a private folder that lives as long as the
    reference made from it (:class:`tritongen.onnx_reference.OnnxReference` holds it): the checks, ONNX Runtime and
    the build's cleaning read the copy, so a file swapped after its checks is not what runs or what is served."""
    from ..onnx_input import external_data_locations, onnx_model_from_file
    from ..onnx_reference import OnnxReference

    private = tempfile.TemporaryDirectory(prefix="tritongen-model-")
    try:
        copy = Path(private.name) / path.name
        _copy_once(path, copy)
        with errors_naming(path, copy):
            for location in external_data_locations(copy, path):  # names checked to stay beside the model
                target = copy.parent / location
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    _copy_once(path.parent / location, target, inside=path.parent)
            onnx_model_from_file(copy, load_data=False)  # the checks, before ONNX Runtime reads the copy
            no_factory(path, model_factory, "an ONNX file")
            reference = OnnxReference(copy, keep=private)
    except BaseException:
        private.cleanup()
        raise
    return LoadedModel(reference, "onnx", path)


def _copy_once(path: Path, copy: Path, inside: Path | None = None) -> None:
    """``path``'s bytes into ``copy`` (mode 0600, in a private folder) from one open of a regular file; with
    ``inside``, the file opened must lie in that folder (read back from the open file: a link swapped in after a
    check cannot lead elsewhere)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise TritongenError(f"cannot read {path}: {exc.strerror or exc}", "check the file's permissions") from None
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):  # swapped for a FIFO or device since it was read
            raise TritongenError(f"{path} is not a regular file", FORMS_HELP)
        if inside is not None and not _opened_inside(source.fileno(), inside):
            raise TritongenError(
                f"{path} leads outside {inside}", "keep the model's data files as plain files beside it (no links)"
            )
        try:
            with os.fdopen(os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb") as target:
                shutil.copyfileobj(source, target, 16 << 20)
        except OSError as exc:  # the source read, or the copy written (a full temp folder)
            raise TritongenError(
                f"cannot copy {path} into a private folder under {copy.parent.parent}: {exc.strerror or exc}",
                "free space there, or set TMPDIR to a folder with room for the model file",
            ) from None


def _opened_inside(fd: int, folder: Path) -> bool:
    """Whether the file open as ``fd`` lies under ``folder`` (the kernel's name for it, from Linux's /proc)."""
    base = folder.resolve()
    try:
        opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return True  # no /proc: the location check before the copy stands alone
    return base in opened.parents


def _loaded_from(path: Path, model_factory: str | None, allow_pickle: bool) -> LoadedModel:
    fmt = detect_format(path)
    if fmt.kind == "torchscript":
        module = _load_torchscript(path)
        no_factory(path, model_factory, "a TorchScript archive")
        return LoadedModel(module, "torchscript", path)
    if fmt.kind == "torch.export":
        ep, module = program_from_archive(path, allow_pickle)
        no_factory(path, model_factory, "a torch.export archive")
        return LoadedModel(module, "torch.export", path, ep)
    if fmt.kind == "onnx":  # a private copy of a torch form turned into ONNX: module_from_file refuses it
        return LoadedModel(None, "onnx", path)
    if fmt.kind == "safetensors":
        return from_state_dict(path, _load_safetensors(path), model_factory, "a safetensors file")
    if fmt.kind == "pickle":
        if not allow_pickle:
            raise TritongenError(
                f"{path} is a plain Python pickle, not a torch.save file; loading it could run any code it contains",
                PICKLE_FIX,
            )
        with quiet_torch(), path.open("rb") as f:
            obj = guarded(path, "unpickling", lambda: pickle.load(f))
        return from_object(path, obj, model_factory, pickled=True)
    # torch.save, zip or legacy.
    obj, pickled = _torch_load(path, allow_pickle, fmt.note)
    return from_object(path, obj, model_factory, pickled)


def _load_torchscript(path: Path) -> Any:
    import torch

    check_torchscript_code(path)  # torch.jit.load runs a module's __setstate__
    with quiet_torch():
        module = guarded(path, "loading TorchScript archive", lambda: torch.jit.load(str(path), map_location="cpu"))
    found = side_effect_ops_in_script_module(module)
    if found:
        raise side_effect_error(path, found)
    return module.eval()


def _load_safetensors(path: Path) -> dict:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise TritongenError(
            f"{path} is a safetensors file but the safetensors package is not installed", "pip install safetensors"
        ) from None
    with quiet_torch():
        return guarded(path, "loading safetensors file", lambda: load_file(str(path), device="cpu"))


def _torch_load(path: Path, allow_pickle: bool, note: str) -> tuple[Any, bool]:
    """``torch.load`` with weights_only=True; the full unpickler only when that refuses and ``allow_pickle``."""
    import torch

    try:
        with quiet_torch():
            return torch.load(str(path), map_location="cpu", weights_only=True), False
    except pickle.UnpicklingError:
        pass  # a global the weights-only unpickler does not allow -- or a damaged pickle
    except Exception as exc:  # noqa: BLE001
        raise _unreadable(path, note, exc) from None
    well_formed, classes = scan_pickles(path)
    if not well_formed:
        raise _unreadable(path, note, "its pickled data is damaged")
    if not allow_pickle:
        what = f" ({', '.join(classes[:4])}{', ...' if len(classes) > 4 else ''})" if classes else ""
        raise TritongenError(
            f"{path} is a pickled Python object{what}, not just weights, and loading it could run any code it contains",
            PICKLE_FIX,
        )
    with quiet_torch():
        return guarded(path, "unpickling", lambda: torch.load(str(path), map_location="cpu", weights_only=False)), True


def _unreadable(path: Path, note: str, why: BaseException | str) -> TritongenError:
    why = why if isinstance(why, str) else first_line(why)
    return TritongenError(
        f"{path} looks like a torch.save file ({note}) but cannot be read: {why}",
        f"check that the file is complete; {FORMS_HELP}",
    )
