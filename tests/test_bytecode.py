"""Python's bytecode cache names (tritongen/bytecode.py): which source and optimisation level a .pyc is of."""

from __future__ import annotations

import hashlib
import importlib.util
import py_compile
import sys

import pytest

from tritongen.bytecode import bytecode_problem, cached_source


@pytest.mark.parametrize(
    "rel, expected",
    [
        ("m/1/__pycache__/model.cpython-311.pyc", ("m/1/model.py", "cpython-311", 0)),
        # a greedy stem read this as the source model.cpython-311.py under the tag opt-1
        ("m/1/__pycache__/model.cpython-311.opt-1.pyc", ("m/1/model.py", "cpython-311", 1)),
        ("m/1/__pycache__/model.cpython-311.opt-2.pyc", ("m/1/model.py", "cpython-311", 2)),
        ("__pycache__/a.b.cpython-311.pyc", ("a.b.py", "cpython-311", 0)),  # a source name with a dot of its own
        ("__pycache__/a.b.cpython-311.opt-1.pyc", ("a.b.py", "cpython-311", 1)),
        ("__pycache__/model.pyc", None),
        ("m/1/model.cpython-311.pyc", None),  # not in __pycache__
    ],
)
def test_a_cache_name_gives_its_source_tag_and_optimisation_level(rel, expected):
    assert cached_source(rel) == expected


def test_the_names_python_writes_read_back_as_their_source(tmp_path):
    for optimization in ("", 1, 2):
        rel = importlib.util.cache_from_source("m/1/model.py", optimization=optimization)
        assert cached_source(rel) == ("m/1/model.py", sys.implementation.cache_tag, int(optimization or 0))


def test_an_optimised_cache_is_checked_at_its_own_level(tmp_path):
    """model.cpython-3XY.opt-1.pyc, written by ``python -O``: compared with the source compiled at -O (it was read
    as the cache of a model.cpython-3XY.py that is not there)."""
    source = tmp_path / "model.py"
    source.write_text("assert False, 'stripped under -O'\nVALUE = 1\n")
    pyc = tmp_path / "__pycache__" / f"model.{sys.implementation.cache_tag}.opt-1.pyc"
    py_compile.compile(str(source), cfile=str(pyc), optimize=1, doraise=True)
    _, tag, level = cached_source(f"__pycache__/{pyc.name}")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert bytecode_problem(pyc, source, digest, tag, level, [str(source)]) is None
    assert bytecode_problem(pyc, source, digest, tag, 0, [str(source)]) == "is not the bytecode of its verified source"
