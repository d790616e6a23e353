"""Reading a file someone hands us: one open, a regular file only, never more than a stated number of bytes; and
writing one into a folder someone may have handed us (:func:`replace_file`: a planted link is never followed).

Every reader of a user's (or an attacker's) file goes through :func:`regular_bytes`: a FIFO would hang a plain
``open`` (it is opened non-blocking and refused), a device such as ``/dev/zero`` would never end (refused: only
regular files), and a large file is refused after at most ``max_bytes + 1`` bytes, from the same descriptor whose
type was checked, so what was checked is what is read. :func:`json_from_bytes` parses with the failures a crafted
file can cause (nesting deep enough to exhaust the parser's recursion, integers too long to convert) as
``ValueError``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import TritongenError
from .names import shown

READ_CHUNK_BYTES = 1 << 16


class FileTooLargeError(OSError):
    """The file holds more than the reader accepts."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(errno.EFBIG, f"it is over {size_text(max_bytes)}", str(path))
        self.max_bytes = max_bytes


def size_text(n_bytes: int) -> str:
    """``64 MiB``, ``16 KiB``, ``100 bytes``."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n_bytes >= 1 << shift and n_bytes % (1 << shift) == 0:
            return f"{n_bytes >> shift} {unit}"
    return f"{n_bytes} bytes"


def regular_bytes(path: Path | str, max_bytes: int, *, follow_links: bool = True) -> bytes:
    """The bytes of the regular file ``path``: ``OSError`` when it is missing, not a regular file (a folder, a FIFO,
    a device; a symlink when ``follow_links`` is False) or cannot be read; :class:`FileTooLargeError` over
    ``max_bytes``."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "it is a folder", str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "it is not a regular file (a FIFO, a device or a socket)", str(path))
        chunks, left = [], max_bytes + 1
        while left > 0 and (chunk := os.read(fd, min(left, READ_CHUNK_BYTES))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise FileTooLargeError(Path(path), max_bytes)
    return data


def leads_through_loop(path: Path | str) -> bool:
    """Whether ``path`` (or a folder on the way to it) is a loop of symbolic links. Asked of the system (ELOOP):
    ``Path.resolve()`` raises RuntimeError on a loop before Python 3.13 and returns the looping path from 3.13 on."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def json_from_bytes(raw: bytes | str) -> Any:
    """``json.loads``, with every failure a crafted file can cause raised as ``ValueError`` (``UnicodeDecodeError``
    for bytes that are not UTF-8, UTF-16 or UTF-32, itself a ``ValueError``)."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


def read_problem(error: OSError) -> str:
    """What went wrong reading a file, for an error line: ``does not exist``, ``cannot be read (it is a folder)``."""
    if isinstance(error, FileNotFoundError):
        return "does not exist"
    return f"cannot be read ({error.strerror or error})"


def json_file(path: Path | str, max_bytes: int, *, follow_links: bool = True) -> Any:
    """:func:`json_from_bytes` of :func:`regular_bytes`: ``OSError`` or ``ValueError`` for every bad file."""
    return json_from_bytes(regular_bytes(path, max_bytes, follow_links=follow_links))


def replace_file(path: Path, text: str | bytes, mode: int | None = None) -> None:
    """Write ``path`` through a new file renamed over it: a link planted at ``path`` (a report folder received from
    someone) is replaced, never followed, and a failure leaves what was there. The file gets ``mode`` less the umask
    where given (a script's 0o755), else the permissions a plain write would leave: an existing regular file's own,
    or 0o666 less the umask."""
    try:
        existing = None if mode is not None else os.lstat(path)
    except OSError:
        existing = None
    if existing is not None and stat.S_ISREG(existing.st_mode):
        permissions = stat.S_IMODE(existing.st_mode)
    else:
        umask = os.umask(0)
        os.umask(umask)
        permissions = (0o666 if mode is None else mode) & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as fh:
            fh.write(text)
        os.chmod(tmp, permissions)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def refuse_linked_folders(folder: Path, root: Path) -> None:
    """Refuse ``folder`` (``root`` or inside it) where a folder below ``root`` on the way to it is a link: a file
    written there would land wherever the link points (a link planted in a repository someone else can write).
    Checked before anything is written; a file itself is written with :func:`replace_file`."""
    here = root
    for part in folder.relative_to(root).parts:
        here = here / part
        if here.is_symlink():
            raise TritongenError(
                f"{here} is a link, and tritongen would write through it to wherever it points",
                "replace the link with a folder of its own (or remove it), then run again",
            )


def text_lines(text: str) -> Iterator[str]:
    """The non-blank lines of a text file's contents, one at a time, split on ``"\n"`` alone (a ``"\r"`` ending
    dropped): a ``"\r"``, form feed, ``"\x85"`` or U+2028 inside a line stays in it (``splitlines`` split there).
    Calibration text and golden text files are read with it."""
    start = 0
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        line, start = text[start:end].removesuffix("\r"), end + 1
        if line.strip():
            yield line


MAX_TREE_DEPTH = 64  # folders below a walked top: a model folder holds model/version/files, a package a few more


def walk(
    top: str | os.PathLike[str], onerror: Any = None, *, depth: int = 0
) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top, onerror=onerror)`` (top-down, links not descended into, ``dirnames`` prunable in place),
    without recursion and at most :data:`MAX_TREE_DEPTH` folders deep: Python 3.11's ``os.walk`` recurses once
    per level, so 1,100 nested empty folders in a model were a RecursionError traceback in validate, verify, sign
    and serve. Deeper is a :class:`TritongenError` naming the folder. ``depth``: how deep ``top`` itself lies in
    the tree the bound counts from (a model folder lies 1 below its repository), so that a walk of the model and
    one of its repository refuse the same trees (sign passed a tree its own verify --public-key refused)."""
    stack: list[tuple[str, int]] = [(os.fspath(top), depth)]
    while stack:
        folder, depth = stack.pop()
        try:
            with os.scandir(folder) as scan:
                entries = list(scan)
        except OSError as exc:
            if onerror is not None:
                onerror(exc)
            continue
        dirs: list[str] = []
        files: list[str] = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # as os.walk: a link to a folder is listed among the folders
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(entry.name)
        yield folder, dirs, files
        below = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]
        if below and depth >= MAX_TREE_DEPTH:
            raise TritongenError(
                f"{shown(os.fspath(top), 120)} holds folders nested more than {MAX_TREE_DEPTH} deep "
                f"(at {shown(os.path.relpath(os.path.join(folder, below[0]), top), 120)})",
                "remove the deep folders: a model folder holds its config and version folders with the model's files",
            )
        stack.extend((os.path.join(folder, d), depth + 1) for d in reversed(below))
