"""Writing a deployment bundle (a folder of generated files) all at once, for every deploy target.

The files are written into a hidden staging folder beside ``out`` and renamed into place at the end, so a
failure leaves nothing behind and an existing bundle is replaced only with ``force``, in one rename.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ..errors import TritongenError
from ..names import one_line

MARKER_FILE = ".tritongen-bundle"  # written into every bundle: what ``--force`` may replace
MARKER_LINE = "tritongen deploy bundle"
MARKER_TEXT = (
    f"{MARKER_LINE}\n"
    "Written by `tritongen deploy`. `tritongen deploy ... --out <this folder> --force` replaces the whole folder:\n"
    "keep no files of your own here.\n"
)
MAX_MARKER_BYTES = 4096


def comment_text(text: str) -> str:
    """``text`` fit for one YAML comment line: whitespace runs (newlines too) as one space, other control
    characters dropped, so no text (a model name from a results file, say) can end the comment and start a
    document of its own."""
    return "".join(c for c in " ".join(text.split()) if c.isprintable())


def is_bundle(folder: Path) -> bool:
    """Whether ``folder`` is a bundle ``tritongen deploy`` wrote: it holds :data:`MARKER_FILE` (a regular file,
    not a link) whose first line is :data:`MARKER_LINE`."""
    from ..files import regular_bytes

    try:
        data = regular_bytes(Path(folder) / MARKER_FILE, MAX_MARKER_BYTES, follow_links=False)
    except OSError:
        return False
    return data.split(b"\n", 1)[0] == MARKER_LINE.encode()


def _is_empty(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def _check_replaceable(out: Path) -> None:
    """Refuse to replace (``--force``) a folder that is neither empty nor a bundle tritongen wrote: it may hold
    anything (a project, a home folder), and replacing it deletes all of it."""
    if _is_empty(out) or is_bundle(out):
        return
    raise TritongenError(
        f"--out {one_line(str(out))} is not empty and is not a bundle tritongen deploy wrote (it has no {MARKER_FILE})"
        ", so --force will not replace it",
        "choose a new folder for --out, e.g. --out deploy/, or move that folder's files away first",
    )


def _repository_places(repo: Path) -> set[Path]:
    """Where the repository is: its real folder, and the place of the path given (a link to it, say)."""
    given = Path(os.path.abspath(Path(repo).expanduser()))  # ".." collapsed: the folder named, not a link's target
    places = {given.resolve()}
    try:
        places.add(given.parent.resolve() / given.name)
    except (OSError, RuntimeError):  # a link loop above it: its real folder is all that can be compared
        pass
    return places


def repository_holding(path: Path, repo: Path) -> Path | None:
    """The place of the model repository ``repo`` that ``path`` is (or lies inside), else None: a folder written
    there becomes a model folder to Triton and to ``verify``."""
    real = Path(path).expanduser().absolute().resolve()
    return next((place for place in sorted(_repository_places(repo)) if real == place or place in real.parents), None)


def check_out_dir(out: Path, repo: Path, force: bool) -> Path:
    """``out`` resolved, after refusing what cannot be written: a place inside the model repository (Triton would
    take the bundle for a model folder), the repository itself or a folder holding it (replacing it would delete
    the repository), a file, an existing folder without ``force``, and with ``force`` a folder that is neither
    empty nor a bundle tritongen wrote, or the current folder (or one holding it)."""
    out = Path(out).expanduser().absolute()
    real = out.resolve()
    shown_out = one_line(str(out))
    for place in sorted(_repository_places(repo)):
        if real == place or place in real.parents:
            raise TritongenError(
                f"--out {shown_out} is inside the model repository {one_line(str(place))}",
                "write the bundle beside the repository, e.g. --out deploy/",
            )
        if real in place.parents:
            raise TritongenError(
                f"--out {shown_out} holds the model repository {one_line(str(place))}",
                "write the bundle into a folder of its own beside the repository, e.g. --out deploy/",
            )
    if out.exists() and not out.is_dir():
        raise TritongenError(f"--out {shown_out} is a file", "pass a folder path (it is created)")
    if out.exists() and not force:
        raise TritongenError(
            f"--out {shown_out} already exists", "pass --force to replace it, or choose another folder"
        )
    if out.exists():
        try:
            here = Path.cwd().resolve()
        except OSError:
            here = None
        if here is not None and (real == here or real in here.parents):
            raise TritongenError(
                f"--out {shown_out} is the current folder"
                + ("" if real == here else f" or holds it ({one_line(str(here))})")
                + ", which --force would replace under the shell that runs in it",
                "run tritongen deploy from the folder above it, or choose another --out",
            )
        _check_replaceable(out)
    return out


def write_bundle(
    out: Path, files: Mapping[str, str | bytes | Path], *, force: bool, executable: tuple[str, ...] = ()
) -> Path:
    """Write ``files`` (relative name -> text, bytes or a file to copy) as the folder ``out``, atomically, with
    :data:`MARKER_FILE` beside them; an existing ``out`` is replaced only with ``force``, and only when it is
    empty or a bundle tritongen wrote (checked again just before)."""
    out = Path(out)
    if out.exists() and not force:
        raise TritongenError(f"--out {out} already exists", "pass --force to replace it, or choose another folder")
    if MARKER_FILE in files:
        raise TritongenError(f"a bundle file is named {MARKER_FILE}", "that name is tritongen's marker: rename it")
    try:
        _write_staged(out, files, executable)
    except OSError as exc:  # disk full, a folder we may not write: one line, from the API too
        where = f" ({one_line(str(exc.filename))})" if exc.filename else ""
        raise TritongenError(
            f"cannot write the bundle {one_line(str(out))}: {exc.strerror or exc}{where}",
            "check that its folder is writable and has free space, or pass another --out",
        ) from None
    return out


def _write_staged(out: Path, files: Mapping[str, str | bytes | Path], executable: tuple[str, ...]) -> None:
    """:func:`write_bundle`'s writing: a staging folder beside ``out``, renamed into place (removed on failure)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, content in {**files, MARKER_FILE: MARKER_TEXT}.items():
            path = stage / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, path)
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
            os.chmod(path, 0o755 if name in executable else 0o644)
        os.chmod(stage, 0o755)
        if out.exists() or out.is_symlink():
            if not out.is_dir():
                raise TritongenError(
                    f"--out {one_line(str(out))} is not a folder", "pass a folder path (it is created)"
                )
            _check_replaceable(out)
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.rename(out, old / out.name)
            os.rename(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def render(template: str, **context) -> str:
    """Render ``templates/deploy/<template>``; block tags take their whole line (trim_blocks, lstrip_blocks)."""
    return _environment().get_template(f"deploy/{template}").render(**context)


_ENV: list = []


def _environment():
    if not _ENV:
        import jinja2  # noqa: PLC0415

        from ..templates import template_dir  # noqa: PLC0415

        _ENV.append(
            jinja2.Environment(
                loader=jinja2.FileSystemLoader(str(template_dir())),
                undefined=jinja2.StrictUndefined,
                keep_trailing_newline=True,
                autoescape=False,
                trim_blocks=True,
                lstrip_blocks=True,
            )
        )
    return _ENV[0]
