"""Loading a torch.export archive (``torch.export.save``): the program and its module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import TritongenError
from .common import FORMS_HELP, first_line, guarded, quiet_torch
from .safety import check_pt2_payloads, training_ops


def program_from_archive(path: Path, allow_pickle: bool) -> tuple[Any, Any]:
    """(ExportedProgram, its module in eval mode) of a torch.export archive: pickled payloads refused unless
    ``allow_pickle``, a program exported in training mode refused."""
    import torch

    check_pt2_payloads(path, allow_pickle)
    with quiet_torch() as logged, path.open("rb") as f:  # a file object: torch warns about paths not ending in .pt2
        try:
            ep = torch.export.load(f)
        except Exception as exc:  # noqa: BLE001
            # For a vague "we ran into an error ... check the warnings above", the cause is in the logged warning.
            cause = next((r.exc_info[1] for r in reversed(logged) if r.exc_info and r.exc_info[1] is not None), None)
            detail = first_line(cause if cause is not None and "warnings above" in str(exc) else exc)
            raise TritongenError(
                f"loading torch.export archive {path} failed: {detail}",
                "save it again with torch.export.save from the torch version installed here "
                f"({torch.__version__.split('+')[0]}), or use another form; {FORMS_HELP}",
            ) from None
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
