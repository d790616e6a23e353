"""What an ONNX export failure means, in one line: the failing operator, shape or line of ``forward()``, and the fix.

The exporters' own messages run to dozens of lines (the dynamo exporter wraps the cause in a 3-step
explanation, the TorchScript exporter prints the graph first). :func:`failure_from_exception` reads the
exception chain for the cases users meet most:

* an operator with no ONNX translation (``No ONNX function found for <OpOverload(op='mylib.op')>``,
  ``Exporting the operator 'aten::x' to ONNX opset version 18 is not supported``, an unknown namespace);
* a dimension declared ``-1`` that the model fixes to one size (torch.export's "specialized it to be a
  constant", "tracing inferred a static shape");
* Python control flow on a tensor's value (a data-dependent guard), with the line of ``forward()``;

and otherwise keeps the exception summary's first line. :func:`trace_warning_failure` turns the TorchScript
tracer's "Converting a tensor to a Python value" warnings into a failure: such a trace holds the samples'
values and is only right for them.
"""

from __future__ import annotations

import inspect
import linecache
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .dim_ranges import batch_dims_hint

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OP_PATTERNS = (
    re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)'"),
    re.compile(r"Exporting the operator '([\w:.]+)' to ONNX opset version \d+ is not supported"),
    re.compile(r"unrecognized namespace ([\w:.]+)"),
    re.compile(r"Error when translating node .*?target=torch\.ops\.(\w+\.\w+)\."),
)
_SHAPE_PATTERNS = (
    # torch.export: "... but tracing inferred a static shape of 16 for dimension inputs['x'].shape[1]."
    re.compile(r"static shape of (?P<size>\d+) for dimension inputs\['(?P<name>\w+)'\]\.shape\[(?P<axis>\d+)\]"),
    # dynamo: "You marked L['x'].size()[1] as dynamic but your code specialized it to be a constant (16)"
    re.compile(
        r"marked L\['(?P<name>\w+)'\]\.size\(\)\[(?P<axis>\d+)\] as dynamic but your code specialized it "
        r"to be a constant \((?P<size>\d+)\)"
    ),
)
_DATA_DEPENDENT = re.compile(r"data-dependent|GuardOnDataDependentSymNode|Dynamic control flow is not supported")
_CALL_SITE = re.compile(
    r'The following call raised this error:\s*\n\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in '
    r"\w+\n\s*(?P<code>[^\n]*)"
)
_SUMMARY = re.compile(r"## Exception summary\s*\n\s*<class '[\w.]+'>: (?P<line>[^\n]+)")
_TRACER_WORDS = "might cause the trace to be incorrect"
MAX_REASON_CHARS = 300


@dataclass(frozen=True)
class ExportFailure:
    """One exporter's failure: ``reason`` names the operator/shape/line, ``fix`` says what to do."""

    exporter: str
    reason: str
    fix: str
    kind: str  # "operator" | "shape" | "control-flow" | "trace" | "other"
    fixed_at: tuple[str, int, str] | None = None  # a shape failure's (input, dimension without batch, size)


def _chain_texts(exc: BaseException) -> list[str]:
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(texts) < 16:
        seen.add(id(current))
        texts.append(_ANSI.sub("", str(current)))
        current = current.__cause__ or current.__context__
    return texts


def _where(file: str, line: int | str, code: str = "") -> str:
    code = (code.strip() or linecache.getline(file, int(line)).strip()).split("  #")[0].strip()
    return f"{Path(file).name}:{line}" + (f" (`{code[:80]}`)" if code else "")


def forward_arg_names(module: Any) -> list[str]:
    """The positional parameter names of ``module.forward`` (torch names inputs by them in its messages)."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


# The TorchScript exporter cannot write a dict; torch.export programs and eager modules return dicts fine.
DICT_OUTPUT_FIX = (
    "return a tuple of tensors from forward() and name them with --output, or save the model with "
    "torch.export.save (a program's dict outputs are read by name)"
)


def failure_from_exception(
    exc: BaseException, exporter: str, opset: int, input_names: Sequence[str], arg_names: Sequence[str], batched: bool
) -> ExportFailure:
    """Classify ``exc`` (raised by ``exporter``) into one reason and one fix."""
    texts = _chain_texts(exc)
    joined = "\n".join(texts)
    for pattern in _OP_PATTERNS:
        found = pattern.search(joined)
        if found:
            op = found.group(1).replace(".", "::", 1) if "::" not in found.group(1) else found.group(1)
            fix = (
                DICT_OUTPUT_FIX
                if op == "prim::DictConstruct"
                else f"replace {op} in forward() with standard torch operations, or try another --opset"
            )
            return ExportFailure(exporter, f"operator {op} has no ONNX translation (opset {opset})", fix, "operator")
    for pattern in _SHAPE_PATTERNS:
        found = pattern.search(joined)
        if found:
            return _shape_failure(exporter, found, input_names, arg_names, batched)
    site = _CALL_SITE.search(joined)
    if _DATA_DEPENDENT.search(joined):
        where = f" at {_where(site['file'], site['line'], site['code'])}" if site else ""
        return ExportFailure(
            exporter,
            f"forward() branches on a tensor's value{where}, which an ONNX graph cannot hold",
            "compute both results and pick with torch.where (or use torch.cond), so the graph keeps the choice",
            "control-flow",
        )
    summary = _SUMMARY.search(joined)
    if summary:
        line = summary["line"]
    else:
        lines = [ln.strip() for ln in texts[-1].splitlines() if ln.strip()]
        line = lines[0] if lines else type(exc).__name__
    where = f" at {_where(site['file'], site['line'], site['code'])}" if site else ""
    fix = "fix the dims, replace the unsupported operation, or try another --opset or --exporter"
    if exporter == "torchscript":  # a TorchScript file has no other exporter: its eager module has
        fix = (
            "fix the dims or replace the unsupported operation; a TorchScript file exports only this way, so the "
            "eager module may fare better: save it with torch.export.save (or pass the module to tritongen.build)"
        )
    return ExportFailure(exporter, f"{line[:MAX_REASON_CHARS]}{where}", fix, "other")


def _shape_failure(
    exporter: str, found: re.Match, input_names: Sequence[str], arg_names: Sequence[str], batched: bool
) -> ExportFailure:
    arg, axis, size = found["name"], int(found["axis"]), found["size"]
    name = input_names[arg_names.index(arg)] if arg in arg_names and arg_names.index(arg) < len(input_names) else arg
    if batched and axis == 0:
        return ExportFailure(
            exporter,
            f"the model fixes the batch dimension of input '{name}' to {size}",
            "make forward() accept any batch size (a torch.export .pt2 fixes the sizes it was exported with: "
            f"export it again with {batch_dims_hint(list(input_names) or [name])}), or build with --max-batch-size 0",
            "shape",
        )
    dim = axis - 1 if batched else axis
    return ExportFailure(
        exporter,
        f"the model fixes dimension {dim} of input '{name}' (declared -1) to {size}",
        f"declare that dimension as {size} in --input, or make forward() accept any size there",
        "shape",
        (name, dim, str(size)),
    )


def trace_warning_failure(caught: Sequence[Any]) -> ExportFailure | None:
    """A failure when the TorchScript tracer turned a tensor into a Python value (the trace keeps the samples')."""
    for w in caught:
        message = str(w.message)
        if w.category.__name__ == "TracerWarning" and _TRACER_WORDS in message:
            what = message.split(" might", 1)[0].replace("Converting a tensor to", "turns a tensor into")
            return ExportFailure(
                "torchscript",
                f"the trace {what} at {_where(w.filename, w.lineno)}, so the graph would keep the samples' value",
                "compute it with torch operations (torch.where "
                "instead of if), or pass --exporter torchscript if that value never changes",
                "trace",
            )
    return None
