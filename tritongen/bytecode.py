"""Python's bytecode cache beside a verified ``.py``: accepted only when it is exactly that source, compiled.

Triton's Python backend embeds an isolated interpreter (environment variables such as
``PYTHONDONTWRITEBYTECODE`` are ignored), so loading ``<version>/model.py`` writes
``<version>/__pycache__/model.cpython-3XY.pyc`` into the repository. Python runs such a file instead of the
source when its header fits, and an unchecked hash-based one whatever the source says, so it cannot simply be
ignored. A cache file is accepted when its bytes equal what compiling the verified source gives (this Python,
the same optimisation level, the file name the server used); anything else is a problem, and removing
``__pycache__/`` is always safe.
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from .manifest import open_regular

PYCACHE = "__pycache__"
MAX_PYC_BYTES = 64 << 20
_HEADER_BYTES = 16
_PYC_NAME = re.compile(r"(?P<stem>[^/]+)\.(?P<tag>[^./]+)(?:\.opt-(?P<opt>[12]))?\.pyc")
FIX = (
    "remove the __pycache__ folder (Python's bytecode cache: it is written again from the verified source on the "
    "next load)"
)


def cached_source(rel: str) -> tuple[str, str, int] | None:
    """For ``D/__pycache__/NAME.TAG[.opt-N].pyc``: (``D/NAME.py``, TAG, N); else None."""
    parts = rel.split("/")
    if len(parts) < 2 or parts[-2] != PYCACHE:
        return None
    match = _PYC_NAME.fullmatch(parts[-1])
    if match is None:
        return None
    return "/".join([*parts[:-2], f"{match['stem']}.py"]), match["tag"], int(match["opt"] or 0)


def _read(path: Path, limit_bytes: int) -> bytes:
    with open(open_regular(path), "rb") as fh:
        return fh.read(limit_bytes + 1)


def bytecode_problem(
    pyc: Path, source: Path, source_sha256: str, tag: str, optimize: int, filenames: Iterable[str]
) -> str | None:
    """None if ``pyc`` is byte for byte ``source`` (whose sha256 must be ``source_sha256``) compiled under one of
    ``filenames``; else what is wrong with it."""
    if tag != sys.implementation.cache_tag:
        return (
            f"is bytecode for another Python ({tag}), which this one ({sys.implementation.cache_tag}) cannot "
            "compare with its source"
        )
    try:
        text, data = _read(source, MAX_PYC_BYTES), _read(pyc, MAX_PYC_BYTES)
    except OSError as exc:
        return f"cannot be read with its source ({exc.strerror or exc})"
    if hashlib.sha256(text).hexdigest() != source_sha256:
        return "is bytecode of a source that does not match its manifest"
    if len(data) > MAX_PYC_BYTES or data[:4] != importlib.util.MAGIC_NUMBER:
        return "is not bytecode of this Python"
    for filename in dict.fromkeys(filenames):
        try:
            code = compile(text, filename, "exec", dont_inherit=True, optimize=optimize)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return "is bytecode of a source that does not compile"
        if marshal.dumps(code) == data[_HEADER_BYTES:]:
            return None
    return "is not the bytecode of its verified source"
