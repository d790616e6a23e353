"""Integer inputs of an ONNX graph that only index tables (token ids into an embedding): how many rows the
smallest such table holds, so that generated samples draw ids across it rather than 0 and 1 alone.

Generated integer samples are 0 and 1 (valid ids, masks and indices for any model): the export runs on them. After
the export the graph says what each integer input does. An input whose every use, through ops that only move or
cast values (``Cast``, ``Reshape``, ``Unsqueeze``, ...), is the indices of a ``Gather`` on a constant table (an
initializer or a ``Constant``), or a read of its shape (``Shape``), may hold any id below that table's size along
the gathered axis; the parity gate, the precision guard's samples where no ``--calib-data`` is given, and the saved
check sample then see the whole table, not two of its rows. A comparison with a constant (``ids != pad``, a mask
made from the ids) holds for any id and is allowed too. Any other use (arithmetic: a mask; a comparison with
computed values; a gather on computed data; a subgraph) leaves the input's samples as they were, and the build says
so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# ops that hand their first input's values on unchanged (a new shape, type or order)
PASS_THROUGH = frozenset({"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Transpose"})
# ops that read a tensor's shape, never its values (positions taken from the ids' length)
SHAPE_ONLY = frozenset({"Shape", "Size"})
# comparisons whose other side is a constant (``ids != pad``: an attention mask made from the ids): true or false
# for any id, so an id drawn across the table is as valid there as 0 or 1
COMPARISONS = frozenset({"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"})


def index_bounds_from_onnx(onnx_path: Path, names: Iterable[str]) -> dict[str, int]:
    """For each of ``names`` (graph inputs) that only indexes constant tables, the rows of the smallest of them."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)  # shapes only: the tables' data is not needed
    return index_bounds_from_graph(model.graph, names)


def index_bounds_from_graph(graph: Any, names: Iterable[str]) -> dict[str, int]:
    tables = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    tables[node.output[0]] = tuple(attr.t.dims)
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))
    in_subgraphs = _subgraph_inputs(graph)
    outputs = {o.name for o in graph.output}
    bounds = {}
    for name in names:
        bound = _bound(name, consumers, tables, in_subgraphs, outputs)
        if bound is not None:
            bounds[name] = bound
    return bounds


def _bound(
    name: str,
    consumers: Mapping[str, Sequence[tuple[Any, int]]],
    tables: Mapping[str, tuple[int, ...]],
    in_subgraphs: set[str],
    outputs: set[str],
) -> int | None:
    """The smallest table ``name`` indexes, or None where any of its values' uses is something else."""
    sizes: list[int] = []
    pending, seen = [name], set()
    while pending:
        tensor = pending.pop()
        if tensor in seen:
            continue
        seen.add(tensor)
        if tensor in in_subgraphs or tensor in outputs:
            return None
        for node, position in consumers.get(tensor, ()):
            if node.op_type in SHAPE_ONLY:
                continue
            if node.op_type in COMPARISONS and len(node.input) == 2 and node.input[1 - position] in tables:
                continue
            if node.op_type in PASS_THROUGH and position == 0:
                pending.extend(node.output)
            elif node.op_type == "Gather" and position == 1 and node.input[0] in tables:
                size = _gathered_rows(node, tables[node.input[0]])
                if size is None:
                    return None
                sizes.append(size)
            else:
                return None
    return min(sizes) if sizes else None


def _gathered_rows(node: Any, dims: tuple[int, ...]) -> int | None:
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    if not -len(dims) <= axis < len(dims):
        return None
    rows = dims[axis]
    return int(rows) if rows >= 1 else None


def _subgraph_inputs(graph: Any) -> set[str]:
    """Every tensor name a node inside an If/Loop/Scan body reads (an outer value used there)."""
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            for body in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                for inner in body.node:
                    names.update(inner.input)
                names |= _subgraph_inputs(body)
    return names
