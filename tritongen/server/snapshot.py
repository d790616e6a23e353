"""The copy of a repository that a checked server loads: the checks and Triton read the same bytes.

``serve`` checks a repository (signature, Triton's rules, manifests) and then Triton reads it: a file changed on
disk between the two (a second writer, a build into the served repository) would be loaded unchecked. So the
repository is first copied, file by file, into a private folder (mode 0700, in the temp directory) that nothing
else writes; the checks run on the copy and Triton loads the copy. The copy keeps symbolic links as links and
refuses special files, so the checks see what the repository holds (and refuse links as they always do).

:func:`snapshot_from_repository` makes the copy; :func:`with_repository_words` turns a check's message about
the copy back into one about the repository the user named.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import TritongenError

COPY_CHUNK_BYTES = 1 << 20
SNAPSHOT_PREFIX = "tritongen-snapshot-"  # the private folder (in the temp directory) that holds a served copy
SOURCE_NAME = "source.txt"  # in that folder, beside the copy: the path of the repository it copies


def snapshot_root(repo: Path) -> Path:
    """A new private folder for a copy of ``repo``, naming ``repo`` in its :data:`SOURCE_NAME` (what a server
    serving the copy answers from, for those who ask: ``infer --check``)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX))
    (root / SOURCE_NAME).write_text(str(Path(repo).resolve()))
    return root


def snapshot_source(served: Path) -> Path | None:
    """The repository that the served folder ``served`` is a copy of, or None where it is no such copy."""
    marker = Path(served).parent / SOURCE_NAME
    if not Path(served).parent.name.startswith(SNAPSHOT_PREFIX):
        return None
    try:
        return Path(marker.read_text()[:4096].strip())
    except OSError:
        return None


def snapshot_from_repository(repo: Path, dest: Path) -> Path:
    """Copy every entry of ``repo`` into ``dest`` (created, mode 0700; it must not exist): regular files by
    content (each opened once, without following a link, and checked to be a regular file on that descriptor),
    symbolic links as links, folders as folders. Returns ``dest``. A special file (FIFO, socket, device) is
    refused: Triton could be made to read one, and a copy could not be checked."""
    repo = Path(repo)
    os.mkdir(dest, 0o700)
    for dirpath, dirnames, filenames in os.walk(repo, onerror=_unreadable_folder):
        here = Path(dirpath)
        there = dest / here.relative_to(repo)
        for name in list(dirnames):
            if (here / name).is_symlink():  # copied as a link, not descended into
                dirnames.remove(name)
                filenames.append(name)
            else:
                (there / name).mkdir(mode=0o700)
        for name in filenames:
            _copy_entry(here / name, there / name, repo)
    return dest


def _unreadable_folder(exc: OSError) -> None:
    raise TritongenError(
        f"cannot read folder {exc.filename} of the repository ({exc.strerror or exc})", "check its permissions"
    )


def _copy_entry(source: Path, target: Path, repo: Path) -> None:
    shown = source.relative_to(repo).as_posix()
    try:
        mode = source.lstat().st_mode
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(source), target)  # the checks refuse it, naming it
            return
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise TritongenError(
            f"{shown} in {repo} cannot be read ({exc.strerror or exc})", "check its permissions"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # checked on the descriptor the bytes come from
            raise TritongenError(f"{shown} in {repo} is not a regular file", "remove it from the repository")
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, stat.S_IMODE(info.st_mode) & 0o700)
        try:
            while chunk := os.read(fd, COPY_CHUNK_BYTES):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
        finally:
            os.close(out)
    except OSError as exc:
        raise TritongenError(
            f"{shown} of {repo} could not be copied for serving ({exc.strerror or exc})",
            "free space in the temp directory ($TMPDIR), or check the file",
        ) from None
    finally:
        os.close(fd)


def with_repository_words(error: TritongenError, snapshot: Path, repo: Path) -> TritongenError:
    """``error`` (raised by a check of the copy ``snapshot``) naming ``repo``, the repository the user gave."""
    for attribute in ("problem", "fix", "details"):
        text = getattr(error, attribute)
        setattr(error, attribute, text.replace(str(snapshot), str(repo)))
    error.args = (error.message,)
    return error
