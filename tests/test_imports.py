"""The package's import graph: no circles (function-level imports included) and no private names across modules."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tritongen"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[importer].name == "__init__.py"
    base = importer.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(importer: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every import in the module, wherever it stands."""
    found = []
    for node in ast.walk(ast.parse(MODULES[importer].read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(importer, node)
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append(
                    (submodule, "", node.lineno) if submodule in MODULES else (target, alias.name, node.lineno)
                )
    return found


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for importer in MODULES:
        for target, _, _ in imports_of(importer):
            # importing a.b.c runs a.b's __init__ too, unless the importer lives inside a.b (already running)
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                module = ".".join(parts[:i])
                inside = importer == module or importer.startswith(module + ".")
                if module in MODULES and module != importer and not inside:
                    edges[importer].add(module)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_walker_sees_function_level_imports_and_finds_a_circle():
    assert "tritongen.api" in MODULES and "tritongen.perf.tune" in MODULES
    assert "tritongen.build" in graph()["tritongen.api"]  # imported inside a function of api.py
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    assert cycles(graph()) == []


def test_no_private_names_imported_across_modules():
    bad = [
        f"{importer}:{line} imports {name} from {target}"
        for importer in MODULES
        for target, name, line in imports_of(importer)
        if target.startswith("tritongen") and name.startswith("_") and not name.startswith("__")
    ]
    assert bad == []


def _is_leaf(module: str) -> bool:
    """The command line and the test helpers: nothing else in the package may import them."""
    return (
        module in ("tritongen.cli", "tritongen.__main__")
        or module.startswith("tritongen.cli_")
        or module == "tritongen.testing"
        or module.startswith("tritongen.testing.")
    )


def test_nothing_in_the_package_imports_the_cli_or_the_test_helpers():
    bad = [
        f"{importer} imports {target}"
        for importer, targets in graph().items()
        for target in targets
        if _is_leaf(target) and not _is_leaf(importer)
    ]
    assert bad == []
