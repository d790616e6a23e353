"""Building from an ONNX file: the original graph in ONNX Runtime as the parity reference, and the checked,
cleaned graph saved like an export's. Above :mod:`tritongen.export` and :mod:`tritongen.parity`; the graph
reading that the spec needs stays below, in :mod:`tritongen.onnx_input`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import TritongenError
from .onnx_input import onnx_model_from_file


class OnnxReference:
    """The original ONNX file in ONNX Runtime, called like a torch module (tensors in, a tuple of tensors out): the
    reference that the parity gate and the precision guard compare with."""

    def __init__(self, path: Path) -> None:
        from .parity import onnx_session

        self.path = Path(path)
        self.session = onnx_session(self.path)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, *tensors: Any) -> tuple[Any, ...]:
        import torch

        feed = {n: np.ascontiguousarray(t.detach().cpu().numpy()) for n, t in zip(self.input_names, tensors)}
        return tuple(torch.from_numpy(np.asarray(a)) for a in self.session.run(None, feed))

    def eval(self) -> OnnxReference:
        return self


def onnx_from_onnx_file(loaded: Any, spec: Any, out_dir: Path) -> Any:
    """The "export" of an ONNX input: the checked graph, cleaned and saved like an export's."""
    from .export import ONNX_DATA_FILENAME, ExportResult, cleaned_onnx_from_onnx, graph_outputs

    model = onnx_model_from_file(loaded.source)
    names = tuple(o.name for o in model.graph.output)
    onnx_path, cleaned = cleaned_onnx_from_onnx(model, out_dir)
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
