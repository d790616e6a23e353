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


def check_out_dir(out: Path, repo: Path, force: bool) -> Path:
    """``out`` resolved, after refusing what cannot be written: an existing folder without ``force``, a file,
    or a place inside the model repository (Triton would take the bundle for a model folder)."""
    out = Path(out).expanduser().absolute()
    repo = Path(repo).expanduser().resolve()
    if out.resolve() == repo or repo in out.resolve().parents:
        raise TritongenError(
            f"--out {out} is inside the model repository {repo}",
            "write the bundle beside the repository, e.g. --out deploy/",
        )
    if out.exists() and not out.is_dir():
        raise TritongenError(f"--out {out} is a file", "pass a folder path (it is created)")
    if out.exists() and not force:
        raise TritongenError(f"--out {out} already exists", "pass --force to replace it, or choose another folder")
    return out


def write_bundle(
    out: Path, files: Mapping[str, str | bytes | Path], *, force: bool, executable: tuple[str, ...] = ()
) -> Path:
    """Write ``files`` (relative name -> text, bytes or a file to copy) as the folder ``out``, atomically."""
    out = Path(out)
    if out.exists() and not force:
        raise TritongenError(f"--out {out} already exists", "pass --force to replace it, or choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, content in files.items():
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
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.rename(out, old / out.name)
            os.rename(stage, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return out


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
