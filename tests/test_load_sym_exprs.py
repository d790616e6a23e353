"""``tritongen.load.sym_exprs``: the symbolic sizes torch.export.load evaluates with sympify, read as syntax only."""

from __future__ import annotations

import pytest

from tritongen.load.sym_exprs import expr_strings, unsafe_expr


@pytest.mark.parametrize(
    "text",
    [
        "Symbol('s27', positive=True, integer=True)",
        "Mul(Integer(2), Symbol('s27', positive=True, integer=True))",
        "FloorDiv(Symbol('s27', positive=True, integer=True), Integer(2))",
        "Add(Integer(-1), Symbol('s0', positive=True, integer=True))",
        "Max(Integer(1), Mul(Rational(1, 2), Symbol('u0', integer=True)))",
        "Float('1.5', precision=53)",
        "OpaqueUnaryFn_sqrt(Symbol('s1', positive=True, integer=True))",
        "s0*2 + 1",
        "oo",
    ],
)
def test_the_size_expressions_torch_writes_are_read(text):
    assert unsafe_expr(text) is None


@pytest.mark.parametrize(
    "text, why",
    [
        ("(__import__('os').system('id'), Symbol('s0'))[1]", "holds a Subscript"),
        ("__import__('os').system('id')", "calls a function that is not a size function"),
        ("eval('1')", "calls a function that is not a size function"),
        ("Symbol('s0').__class__", "holds an Attribute"),
        ("open", "names 'open'"),
        ("S('__import__(\"os\")')", "calls a function that is not a size function"),
        ("Symbol('s0; import os')", "holds text that is not a symbol's name"),
        ("Integer(**{'a': 1})", "passes something other than a flag by keyword"),
        ("lambda: 0", "holds a Lambda"),
        ("[x for x in ()]", "holds a ListComp"),
        ("Symbol(", "is not an expression"),
        ("Integer(1)" + " + Integer(1)" * 20_000, "characters long"),
    ],
)
def test_anything_else_is_refused_before_torch_evaluates_it(text, why):
    assert why in (unsafe_expr(text) or "")


def test_every_expr_str_of_a_program_is_found_however_deep():
    program = {"graph": {"nodes": [{"outputs": [{"as_expr": {"expr_str": "s0"}}]}], "x": {"expr_str": "open"}}}
    assert sorted(expr_strings(program)) == ["open", "s0"]
