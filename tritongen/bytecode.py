"""Python's bytecode cache beside a verified ``.py``: accepted only when it is exactly that source, compiled.

Triton's Python backend embeds an isolated interpreter (environment variables such as
``PYTHONDONTWRITEBYTECODE`` are ignored), so loading ``<version>/model.py`` writes
``<version>/__pycache__/model.cpython-3XY.pyc`` into the repository. Python runs such a file instead of the
source when its header fits, and an unchecked hash-based one whatever the source says, so it cannot simply be
ignored. A cache file is accepted when its bytes equal what compiling the verified source gives (this Python,
the same optimisation level; the file name it was compiled under may be any absolute path to the same model file,
so that a repository moved or copied after a load still verifies); anything else is a problem, and removing
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
MAX_COMPILED_SOURCE_BYTES = 8 << 20  # a source compiled to compare with its cache (a generated model.py: KBs)
_HEADER_BYTES = 16
# NAME.TAG[.opt-N].pyc: the stem as short as the rest allows (a greedy one read model.cpython-311.opt-1.pyc as the
# source model.cpython-311.py under the tag opt-1), as importlib.util.source_from_cache splits it; a source name with
# dots of its own (a.b.py -> a.b.cpython-311.pyc) still matches, by backtracking
_PYC_NAME = re.compile(r"(?P<stem>[^/]+?)\.(?P<tag>[^./]+)(?:\.opt-(?P<opt>[12]))?\.pyc")
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


def _header_matches(data: bytes, text: bytes) -> bool:
    """Whether the pyc header (PEP 552) names ``text``: its size (a timestamp-based cache) or its SipHash (a
    hash-based one)."""
    if len(data) < _HEADER_BYTES:
        return False
    flags = int.from_bytes(data[4:8], "little")
    if flags & 1:  # hash-based
        return data[8:16] == importlib.util.source_hash(text)
    return int.from_bytes(data[12:16], "little") == len(text) & 0xFFFFFFFF


def _read(path: Path, limit_bytes: int) -> bytes:
    with open(open_regular(path), "rb") as fh:
        return fh.read(limit_bytes + 1)


def bytecode_problem(
    pyc: Path,
    source: Path,
    source_sha256: str,
    tag: str,
    optimize: int,
    filenames: Iterable[str],
    moved_suffix: str | None = None,
) -> str | None:
    """None if ``pyc`` is byte for byte ``source`` (whose sha256 must be ``source_sha256``) compiled under one of
    ``filenames``, or under any absolute path ending in ``moved_suffix`` (``/<model>/<version>/model.py``: the
    repository loaded from elsewhere); else what is wrong with it."""
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
    if not _header_matches(data, text):  # before any compile: an attacker's 116 bytes beside 16 MiB of source
        return "is not the bytecode of its verified source (its header records another source)"
    if len(text) > MAX_COMPILED_SOURCE_BYTES:  # each compile of 16 MiB took seconds and GBs
        return (
            f"is the cache of a source of {len(text) >> 20} MiB, more than the {MAX_COMPILED_SOURCE_BYTES >> 20} MiB "
            "compared with its bytecode"
        )
    for filename in (_PLACEHOLDER, *dict.fromkeys(filenames)):
        try:
            code = compile(text, filename, "exec", dont_inherit=True, optimize=optimize)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return "is bytecode of a source that does not compile"
        compiled = marshal.dumps(code)
        if compiled == data[_HEADER_BYTES:] or (
            filename == _PLACEHOLDER
            and moved_suffix is not None
            and _accepted_path(_file_name_in_place(compiled, data[_HEADER_BYTES:]), moved_suffix)
        ):
            return None
    return "is not the bytecode of its verified source"


# Bytecode holds the path it was compiled from (``co_filename``: what tracebacks name), so a repository moved or
# copied after the server loaded it holds caches compiled under another path. The source is compiled under this
# name, and a cache is accepted when its bytes differ from that only in the one marshalled string that holds it: a
# path is all such a cache can choose.
_PLACEHOLDER = "<tritongen-verify>"
_STRING_TYPES = {ord("z"): 1, ord("Z"): 1, ord("a"): 4, ord("A"): 4, ord("u"): 4, ord("t"): 4}  # -> length bytes


def _accepted_path(name: str | None, suffix: str) -> bool:
    """A path the cache may name: absolute, the same file of the same model folder (tracebacks read the file a
    cache names, so not any file of the machine)."""
    return name is not None and name.startswith("/") and name.endswith(suffix) and "\x00" not in name


def _file_name_in_place(compiled: bytes, data: bytes) -> str | None:
    """The file name ``data`` holds where ``compiled`` (compiled under ``_PLACEHOLDER``) holds that placeholder,
    when nothing else differs; else None."""
    name = _PLACEHOLDER.encode()
    at = compiled.find(name)
    if (
        at < 2
        or compiled.find(name, at + 1) >= 0
        or compiled[at - 2] & 0x7F != ord("z")
        or compiled[at - 1] != len(name)
    ):
        return None
    head, tail = compiled[: at - 2], compiled[at + len(name) :]
    if len(data) < len(head) + len(tail) + 2 or not data.startswith(head) or not data.endswith(tail):
        return None
    string = data[len(head) : len(data) - len(tail)]
    kind, flag = string[0] & 0x7F, string[0] & 0x80
    size_bytes = _STRING_TYPES.get(kind)
    if size_bytes is None or flag != compiled[at - 2] & 0x80 or len(string) < 1 + size_bytes:
        return None  # not a string, or the flag that numbers the objects after it differs
    size = int.from_bytes(string[1 : 1 + size_bytes], "little")
    text = string[1 + size_bytes :]
    if len(text) != size:
        return None
    try:
        return text.decode("utf-8" if kind in (ord("u"), ord("t")) else "ascii", "surrogatepass")
    except UnicodeDecodeError:
        return None
