"""Finding and rendering the jinja2 templates under ``templates/``.

In a source checkout they live at the repository root; a wheel carries them as ``tritongen/templates``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .errors import TritongenError


@lru_cache(maxsize=1)
def template_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "config.pbtxt.j2").is_file():
            return candidate
    raise TritongenError(
        "tritongen's templates are missing from its installation",
        "reinstall tritongen (pip install --force-reinstall tritongen)",
    )


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(template: str, **context) -> str:
    return _environment().get_template(template).render(**context)


def template_path(name: str) -> Path:
    return template_dir() / name
