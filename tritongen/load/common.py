"""What every loader shares: the loaded model, the messages, quiet torch, errors turned into one line."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TritongenError

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


@dataclass(frozen=True)
class LoadedModel:
    module: (
        Any  # a callable torch module in eval mode: ScriptModule, nn.Module or the GraphModule of an ExportedProgram
    )
    form: str  # "torchscript" | "torch.export" | "state_dict" | "pickled_module" | "onnx"
    source: Path
    exported_program: Any = None  # the torch.export ExportedProgram for .pt2 archives


@contextlib.contextmanager
def quiet_torch() -> Iterator[list[logging.LogRecord]]:
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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {line[:300]}" if line else type(exc).__name__


def guarded(path: Path, what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except TritongenError:
        raise
    except (ImportError, AttributeError) as exc:
        # Unpickling names a class by module and attribute; both must be importable here.
        if "__main__" in str(exc):  # defined in the script that saved it: no import can bring it back
            raise TritongenError(
                f"{what} {path} failed: the pickled model's class was defined in the script that saved it "
                f"(__main__), which is not there when tritongen loads it ({first_line(exc)})",
                "save it in a self-contained form: torch.export.save(...) or torch.jit.save(...), or save its "
                "state_dict and pass --model-factory module:function that builds the model",
            ) from None
        missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
        module = f"module '{missing}'" if missing else "module"
        raise TritongenError(
            f"{what} {path} failed: the pickled model refers to code that cannot be imported here ({first_line(exc)})",
            f"make the model's {module} importable (install it, or set PYTHONPATH to the folder that holds it), "
            "or save it in a self-contained form: torch.export.save(...) or torch.jit.save(...)",
        ) from None
    except Exception as exc:  # noqa: BLE001 -- a damaged or foreign file; the user can act on the message
        raise TritongenError(
            f"{what} {path} failed: {first_line(exc)}", "check that the file is complete and was saved by PyTorch"
        ) from None


def no_factory(path: Path, model_factory: str | None, what: str) -> None:
    if model_factory:
        raise TritongenError(
            f"{path} is {what} that already contains the model, so --model-factory {model_factory} would not be used",
            "drop --model-factory (it is only for state_dict files)",
        )
