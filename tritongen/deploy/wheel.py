"""A wheel of the running tritongen, for images that need it (the engine builder): installed, never a source copy.

:func:`wheel_from_installation` packs the ``tritongen`` package this process imports (and its templates, at
``tritongen/templates`` where a wheel keeps them) with the installed distribution's metadata (``METADATA``:
name, version, dependencies; ``entry_points.txt``: the ``tritongen`` command) into a standard pure-Python wheel.
It works the same for a pip-installed tritongen and a source checkout installed with ``pip install -e``, and
needs no build backend at deploy time. The archive is reproducible: sorted entries, fixed timestamps.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from importlib import metadata
from pathlib import Path

from ..errors import TritongenError

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_SKIP_SUFFIXES = (".pyc", ".pyo")


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _package_files() -> dict[str, Path]:
    """Archive name -> file for the imported ``tritongen`` package and its templates."""
    import tritongen  # noqa: PLC0415

    from ..templates import template_dir  # noqa: PLC0415

    package = Path(tritongen.__file__).resolve().parent
    files = {}
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(_SKIP_SUFFIXES):
            files[f"tritongen/{path.relative_to(package).as_posix()}"] = path
    templates = template_dir()
    if package not in templates.parents:  # a source checkout: templates/ at the repository root
        for path in sorted(templates.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files[f"tritongen/templates/{path.relative_to(templates).as_posix()}"] = path
    return files


def wheel_from_installation(out_dir: Path) -> Path:
    """Write ``tritongen-<version>-py3-none-any.whl`` into ``out_dir`` and return its path."""
    from .. import __version__  # noqa: PLC0415

    try:
        dist = metadata.distribution("tritongen")
    except metadata.PackageNotFoundError:
        raise TritongenError(
            "tritongen is not installed as a package here, so it cannot be packed into a wheel",
            "install it (pip install -e . in a checkout, or pip install tritongen) and run again",
        ) from None
    if dist.version != __version__:
        raise TritongenError(
            f"the installed tritongen metadata says version {dist.version}, but the imported package is {__version__}",
            "reinstall tritongen (pip install -e . in the checkout you run) and run again",
        )
    meta = dist.read_text("METADATA")
    entry_points = dist.read_text("entry_points.txt") or "[console_scripts]\ntritongen = tritongen.cli:main\n"
    info = f"tritongen-{__version__}.dist-info"
    wheel_text = "Wheel-Version: 1.0\nGenerator: tritongen.deploy.wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    contents = {name: path.read_bytes() for name, path in _package_files().items()}
    contents[f"{info}/METADATA"] = meta.encode()
    contents[f"{info}/WHEEL"] = wheel_text.encode()
    contents[f"{info}/entry_points.txt"] = entry_points.encode()
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in sorted(contents.items())]
    contents[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"tritongen-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(contents, key=lambda n: (n.startswith(info), n)):  # dist-info last, as wheels do
            item = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            item.external_attr = 0o644 << 16
            item.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(item, contents[name])
    return path
