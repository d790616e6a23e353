"""The symbolic sizes of a torch.export archive, checked before torch reads them.

``torch.export.load`` turns each ``expr_str`` of the program's JSON (``Mul(Integer(2), Symbol('s27', positive=True,
integer=True))``) into a sympy expression with ``sympy.sympify``, which evaluates the text as Python: a crafted
archive ran ``__import__('os').system(...)`` that way, pickles and compiled code being the only payloads checked.
Here every such text is parsed (``ast``, nothing evaluated) and must be calls of sympy's and torch's size functions
on numbers and symbol names, with keyword flags: no other name, no attribute, no subscript.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from typing import Any

# sympy's constructors and relations as torch writes them (srepr), and torch.utils._sympy.functions' names as its
# deserializer maps them (torch/_export/serde/serialize.py, sympy_functions)
SIZE_FUNCTIONS = frozenset(
    {
        "Symbol", "Integer", "Rational", "Float", "Mul", "Add", "Pow", "Mod", "Max", "Min", "Abs", "floor", "ceiling",
        "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan",
        "Equality", "Unequality", "And", "Or", "Not", "Xor", "Piecewise", "ExprCondPair", "ITE", "Tuple",
        "BooleanTrue", "BooleanFalse", "Infinity", "NegativeInfinity", "NegativeOne", "One", "Zero", "Half",
        "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
        "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
        "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat",
        "Identity",
    }
)  # fmt: skip
CONSTANT_NAMES = frozenset({"oo", "zoo", "nan", "true", "false", "pi", "E", "I"})
_GENERATED_FUNCTION = re.compile(r"(OpaqueUnaryFn|BitwiseFn)_[a-z0-9_]{1,40}")  # torch names these per operation
_SYMBOL_NAME = re.compile(r"[a-z]{1,8}\d{1,9}")  # s0, u3, zuf0: a size symbol written bare
_TEXT = re.compile(r"[A-Za-z0-9_.+\-]{1,64}")  # a symbol's name, a Float's digits
_OPERATORS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd)
MAX_EXPR_CHARS = 100_000


def expr_strings(value: Any) -> Iterator[str]:
    """Every ``expr_str`` in a parsed program JSON, however deep."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if key == "expr_str":
                    yield child if isinstance(child, str) else repr(child)
                else:
                    stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def unsafe_expr(text: str) -> str | None:
    """Why ``text`` is not a size expression sympify may evaluate safely (``None``: it is one)."""
    if len(text) > MAX_EXPR_CHARS:
        return f"is {len(text)} characters long"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "is not an expression"
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.Load, ast.keyword, *_OPERATORS)):
            continue
        if isinstance(node, (ast.BinOp, ast.UnaryOp)):
            continue  # their operators are checked as nodes of their own
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or not _known_function(node.func.id):
                return "calls a function that is not a size function"
            if any(k.arg is None or not isinstance(k.value, ast.Constant) for k in node.keywords):
                return "passes something other than a flag by keyword"
            continue
        if isinstance(node, ast.Name):
            if not (_known_function(node.id) or node.id in CONSTANT_NAMES or _SYMBOL_NAME.fullmatch(node.id)):
                return f"names {node.id[:40]!r}"
            continue
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str) and not _TEXT.fullmatch(node.value):
                return "holds text that is not a symbol's name or a number"
            if not isinstance(node.value, (bool, int, float, str)) and node.value is not None:
                return "holds a constant that is not a number"
            continue
        kind = type(node).__name__
        return f"holds {'an' if kind[0] in 'AEIOU' else 'a'} {kind} (only calls of size functions on numbers are read)"
    return None


def _known_function(name: str) -> bool:
    return name in SIZE_FUNCTIONS or bool(_GENERATED_FUNCTION.fullmatch(name))
