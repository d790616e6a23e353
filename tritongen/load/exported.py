"""Loading a torch.export archive (``torch.export.save``): the program and its module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import TritongenError
from .common import FORMS_HELP, first_line, guarded, quiet_torch
from .safety import check_pt2_payloads, side_effect_error, side_effect_ops_in_program, training_ops


def program_from_archive(path: Path, allow_pickle: bool) -> tuple[Any, Any]:
    """(ExportedProgram, its module in eval mode) of a torch.export archive: pickled payloads refused unless
    ``allow_pickle``, a program exported in training mode refused."""
    import torch

    check_pt2_payloads(path, allow_pickle)
    imported: set[str] = set()
    while True:
        with quiet_torch() as logged, path.open("rb") as f:  # a file object: torch warns about paths not ending .pt2
            try:
                ep = torch.export.load(f)
                break
            except Exception as exc:  # noqa: BLE001
                # For a vague "we ran into an error ... check the warnings above", the cause is in the logged warning.
                cause = next(
                    (r.exc_info[1] for r in reversed(logged) if r.exc_info and r.exc_info[1] is not None), None
                )
                detail = first_line(cause if cause is not None and "warnings above" in str(exc) else exc)
                unregistered = _unregistered_type(f"{exc} {cause}")
        if unregistered and _registers(unregistered, imported):
            continue  # a Hugging Face output type: registered by importing its module, then loaded again
        if unregistered:
            raise TritongenError(
                f"loading torch.export archive {path} failed: the program returns a {unregistered}, a type "
                "registered with torch's pytree where it was exported and not here",
                "return a tensor, a tuple or a dict of tensors from forward() and export it again (a Hugging Face "
                "ModelOutput is read too)",
            )
        raise TritongenError(
            f"loading torch.export archive {path} failed: {detail}",
            "save it again with torch.export.save from the torch version installed here "
            f"({torch.__version__.split('+')[0]}), or use another form; {FORMS_HELP}",
        )
    found = side_effect_ops_in_program(ep)  # what torch resolved the targets to, before anything runs
    if found:
        raise side_effect_error(path, found)
    with quiet_torch():
        module = guarded(path, "unlifting the exported program in", ep.module)
    training = training_ops(ep)
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


# Packages whose output types (ModelOutput dataclasses) register with torch's pytree when their module is imported.
# Only these are imported for an archive: the type's name comes from the file, and importing a module runs it.
_PYTREE_PACKAGES = ("transformers.",)


def _unregistered_type(text: str) -> str:
    """The type torch.export.load names as not registered with pytree (``transformers.modeling_outputs.X``)."""
    import re

    found = re.search(r"Deserializing ([A-Za-z_][\w.]{0,200}) in pytree is not registered", text)
    return found.group(1) if found else ""


def _registers(type_name: str, imported: set[str]) -> bool:
    """Import the module of ``type_name`` when it is a known package's (once): True if that was done now."""
    import importlib

    module = type_name.rpartition(".")[0]
    if not type_name.startswith(_PYTREE_PACKAGES) or module in imported:
        return False
    imported.add(module)
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 -- not installed, or broken: the type stays unregistered
        return False
    return True
