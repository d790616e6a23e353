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


def test_a_cache_whose_header_names_another_source_or_a_huge_one_is_refused_without_compiling(tmp_path):
    """Found by an attacker: 116 bytes of fake cache beside 16 MiB of source were compared by compiling the source
    three times (54 s, 7 GB); the header (PEP 552) says which source a cache is of, in 16 bytes."""
    source = tmp_path / "model.py"
    source.write_text("VALUE = 1\n")
    pyc = tmp_path / "__pycache__" / f"model.{sys.implementation.cache_tag}.pyc"
    for mode in (py_compile.PycInvalidationMode.TIMESTAMP, py_compile.PycInvalidationMode.CHECKED_HASH):
        py_compile.compile(str(source), cfile=str(pyc), doraise=True, invalidation_mode=mode)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        assert bytecode_problem(pyc, source, digest, sys.implementation.cache_tag, 0, [str(source)]) is None
        data = bytearray(pyc.read_bytes())
        data[12] ^= 1  # another size (or hash) in the header, the code itself unchanged
        pyc.write_bytes(bytes(data))
        problem = bytecode_problem(pyc, source, digest, sys.implementation.cache_tag, 0, [str(source)])
        assert problem is not None and "its header records another source" in problem
    big = tmp_path / "big.py"
    big.write_bytes(b"X = 1\n" * ((9 << 20) // 6))
    header = importlib.util.MAGIC_NUMBER + bytes(8) + (len(big.read_bytes()) & 0xFFFFFFFF).to_bytes(4, "little")
    fake = tmp_path / "__pycache__" / f"big.{sys.implementation.cache_tag}.pyc"
    fake.write_bytes(header + b"\xe3" + bytes(99))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    problem = bytecode_problem(fake, big, digest, sys.implementation.cache_tag, 0, [str(big)])
    assert problem is not None and "more than the 8 MiB compared with its bytecode" in problem
