"""Building from an ONNX file: the original graph in ONNX Runtime as the parity reference, and the checked,
cleaned graph saved like an export's. Above :mod:`tritongen.export` and :mod:`tritongen.parity`; the graph
reading that the spec needs stays below, in :mod:`tritongen.onnx_input`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import TritongenError, errors_naming
from .onnx_input import onnx_model_from_file


def onnx_from_onnx_file(loaded: Any, spec: Any, out_dir: Path) -> Any:
    """The "export" of an ONNX input: the checked graph, cleaned and saved like an export's."""
    from .export import ONNX_DATA_FILENAME, ExportResult, cleaned_onnx_from_onnx, graph_outputs

    read = loaded.module.path  # the private copy the reference runs (tritongen.load), not the user's path again
    with errors_naming(loaded.source, read):
        model = onnx_model_from_file(read)
        names = tuple(o.name for o in model.graph.output)
        onnx_path, cleaned = cleaned_onnx_from_onnx(model, out_dir, given=read)  # same file name as the user's
    if [i.name for i in cleaned.graph.input if i.name not in {x.name for x in cleaned.graph.initializer}] != [
        t.name for t in spec.inputs
    ]:
        raise TritongenError(f"cleaning {loaded.source.name} changed its inputs", "report this with the model")
    opset = next((o.version for o in cleaned.opset_import if o.domain in ("", "ai.onnx")), 0)
    data = out_dir / ONNX_DATA_FILENAME
    return ExportResult(
        onnx_path=onnx_path,
        data_path=data if data.exists() else None,
        exporter="none (ONNX file)",
        opset=opset,
        outputs=graph_outputs(cleaned, names, spec),
        node_count=len(cleaned.graph.node),
    )
