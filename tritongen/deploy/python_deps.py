"""What a repository's Python-backend models import, and the PyPI packages that provide it in Triton's image.

Every ``.py`` file in every version folder of every Python-backend model (``model.py`` and files beside it,
such as a custom step's ``user_code.py``) is parsed, never run; every ``import`` and ``from ... import``,
function-level ones included, is collected. A module is then:

- in Python's standard library (``sys.stdlib_module_names``);
- provided by Triton's Python backend (``triton_python_backend_utils``);
- local to the model (a ``.py`` file or package folder beside it);
- or a third-party module, mapped to a pinned PyPI requirement by :data:`KNOWN_PACKAGES`, or by the user's
  ``--extra-package IMPORT=REQUIREMENT``. Anything else is an error: the image would fail to load the model.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TritongenError
from ..files import regular_bytes
from ..layout import version_of_folder
from ..names import one_line

# Provided inside every Triton Python-backend stub (not on PyPI).
BACKEND_MODULES = frozenset({"triton_python_backend_utils", "c_python_backend_utils"})

# Import name -> pinned requirement. One set for every NGC release tritongen knows (24.05-24.12: Python 3.10;
# 25.01: Python 3.12): each version has manylinux x86_64 wheels for Python 3.10, 3.11 and 3.12 (the newest
# onnxruntime, transformers and pillow that still publish 3.10 wheels), and works with numpy 1.26 (Triton
# 2.51's Python backend answers wrongly under numpy 2). onnxruntime is the CPU build: the generated
# `--target local` models run ONNX Runtime on the CPU by design. transformers loads tokenizers without torch.
KNOWN_PACKAGES: Mapping[str, str] = {
    "numpy": "numpy==1.26.4",
    "onnxruntime": "onnxruntime==1.23.2",
    "transformers": "transformers==5.20.2",
    "tokenizers": "tokenizers==0.23.3",
    "PIL": "pillow==12.3.0",
}
# Installed by every serving image that installs anything: the Python backend itself needs numpy.
ALWAYS = ("numpy",)
# the whole requirement (fullmatch: no trailing newline, which would split the Dockerfile's RUN line)
_REQUIREMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!-]+")


@dataclass(frozen=True)
class ModelImports:
    """Top-level modules imported by one Python-backend model, by the file that imports them."""

    model: str
    modules_by_file: Mapping[str, frozenset[str]] = field(default_factory=dict)  # path relative to the repository

    @property
    def modules(self) -> frozenset[str]:
        return frozenset().union(*self.modules_by_file.values()) if self.modules_by_file else frozenset()


@dataclass(frozen=True)
class ServingPackages:
    """The pip requirements a serving image needs for a repository's Python-backend models."""

    requirements: tuple[str, ...]  # pinned, sorted by name; empty when the repository has no Python-backend model
    imports: tuple[ModelImports, ...]
    provided_by_image: frozenset[str]  # stdlib + backend modules found
    # "numpy==2.1.0 (--extra-package numpy) in place of tritongen's numpy==1.26.4": pins a given package replaced
    replaced_pins: tuple[str, ...] = ()

    @property
    def installed_modules(self) -> tuple[str, ...]:
        """The imported modules the requirements provide (everything not in the image already)."""
        return tuple(sorted({m for model in self.imports for m in model.modules} - self.provided_by_image))


def _valid_version(text: str) -> bool:
    """Whether pip takes ``text`` as a version (PEP 440): ``==!+-`` passed the pattern and failed the image's
    pip install."""
    from packaging.version import InvalidVersion, Version

    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


def _requirement_name(requirement: str) -> str:
    """The package a requirement names, normalized as PyPI does (PEP 503: ``Scikit_Learn`` is ``scikit-learn``)."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\[=<>!~ ]", requirement, maxsplit=1)[0]).lower()


def modules_imported_by(source: str, filename: str = "<model.py>") -> frozenset[str]:
    """Top-level names of every absolute import in ``source`` (module and function level)."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise TritongenError(
            f"{filename} has a syntax error at line {exc.lineno}", "fix the model's Python code"
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # a NUL byte; nesting the parser cannot follow
        raise TritongenError(
            f"{filename} cannot be parsed ({type(exc).__name__})",
            "fix the model's Python code (no NUL bytes; expressions nested less deeply)",
        ) from None
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return frozenset(found)


MAX_SOURCE_BYTES = 16 << 20  # one .py of a Python-backend model (tritongen's runners: a few KiB)


def is_python_model(model_dir: Path, config) -> bool:
    """Whether Triton runs the model of ``model_dir`` (its parsed ``config``) on the Python backend: its backend
    as Triton completes it (``backend: 'python'`` in any quoting, or no backend and a ``model.py``)."""
    from ..validate import completed_backend_name

    return completed_backend_name(config, model_dir) == "python"


def python_models(repo: Path) -> list[Path]:
    """Model folders of ``repo`` that Triton runs on the Python backend (each ``config.pbtxt`` parsed: bounded,
    one open)."""
    from ..validate import config_from_file

    out = []
    for model_dir in sorted(p for p in Path(repo).iterdir() if p.is_dir() and not p.name.startswith(".")):
        config = model_dir / "config.pbtxt"
        if config.is_file() and is_python_model(model_dir, config_from_file(config)):
            out.append(model_dir)
    return out


def imports_from_model(model_dir: Path, repo: Path) -> ModelImports:
    """Modules imported by every ``.py`` of every version folder (tritongen's own records excluded)."""
    by_file = {}
    for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir() and version_of_folder(p.name) is not None):
        local = {p.stem for p in version_dir.glob("*.py")} | {
            p.name for p in version_dir.iterdir() if (p / "__init__.py").is_file()
        }
        for path in sorted(version_dir.rglob("*.py")):
            if "tritongen" in path.relative_to(version_dir).parts[:1]:
                continue
            try:
                text = regular_bytes(path, MAX_SOURCE_BYTES).decode("utf-8")  # bounded, one open
            except (OSError, UnicodeDecodeError) as exc:
                raise TritongenError(
                    f"cannot read {path} ({exc})",
                    f"make the model's Python files readable UTF-8 of at most {MAX_SOURCE_BYTES >> 20} MiB",
                ) from None
            modules = modules_imported_by(text, str(path)) - local
            by_file[path.relative_to(repo).as_posix()] = frozenset(modules)
    return ModelImports(model_dir.name, by_file)


def is_provided_by_image(module: str) -> bool:
    """Standard library or Triton's Python backend: present in every NGC tritonserver image."""
    return module in sys.stdlib_module_names or module in BACKEND_MODULES or module == "__future__"


def serving_packages_from_repository(repo: Path, extra_packages: Mapping[str, str] | None = None) -> ServingPackages:
    """The pinned requirements for every module ``repo``'s Python-backend models import.

    ``extra_packages`` maps import names tritongen does not know to a pinned requirement
    (``{"sklearn": "scikit-learn==1.5.2"}``). An import neither known nor given is a :class:`TritongenError`.
    """
    extra = dict(extra_packages or {})
    for module, requirement in extra.items():
        if not _REQUIREMENT_RE.fullmatch(requirement) or not _valid_version(requirement.partition("==")[2]):
            example = one_line(re.split(r"[=<>!~\s]", requirement)[0])
            raise TritongenError(
                f"--extra-package {one_line(module)}={one_line(requirement)} is not a pinned requirement",
                f"pin one version, e.g. {one_line(module)}={example or 'package'}==1.2.3",
            )
    mapping = {**KNOWN_PACKAGES, **extra}
    imports = tuple(imports_from_model(m, Path(repo)) for m in python_models(Path(repo)))
    provided: set[str] = set()
    requirements: dict[str, str] = {}
    unknown: dict[str, list[str]] = {}
    for model in imports:
        for path, modules in model.modules_by_file.items():
            for module in sorted(modules):
                if is_provided_by_image(module):
                    provided.add(module)
                elif module in mapping:
                    _pin(requirements, module, mapping[module], extra)
                else:
                    unknown.setdefault(module, []).append(path)
    if unknown:
        module, paths = next(iter(sorted(unknown.items())))
        others = f" (and {len(unknown) - 1} more: {', '.join(sorted(unknown)[1:])})" if len(unknown) > 1 else ""
        raise TritongenError(
            f"{paths[0]} imports '{module}', a module tritongen cannot map to a PyPI package{others}",
            f"name its package and version: --extra-package {module}=PACKAGE==VERSION (repeatable)",
        )
    if imports:
        for module in ALWAYS:
            _pin(requirements, module, mapping[module], extra)
    replaced = tuple(
        f"{extra[m]} (--extra-package {m}) in place of tritongen's {KNOWN_PACKAGES[m]}"
        for m in sorted(extra)
        if m in KNOWN_PACKAGES and extra[m] != KNOWN_PACKAGES[m] and extra[m] in requirements.values()
    )
    return ServingPackages(tuple(requirements[k] for k in sorted(requirements)), imports, frozenset(provided), replaced)


def _pin(requirements: dict[str, str], module: str, requirement: str, extra: Mapping[str, str]) -> None:
    """Add ``requirement`` (for import ``module``) to ``requirements`` (package -> pin); two different pins of one
    package (a given one against tritongen's, or two given ones) are refused, not one of them dropped."""
    name = _requirement_name(requirement)
    held = requirements.setdefault(name, requirement)
    if held.split("==", 1)[-1] == requirement.split("==", 1)[-1]:
        return  # one version, however the name is spelled
    given = [f"--extra-package {m}={r}" for m, r in sorted(extra.items()) if _requirement_name(r) == name]
    raise TritongenError(
        f"two pins for package '{name}': {held} and {requirement} ({'; '.join(given) or 'tritongen pins'})",
        f"give every --extra-package of {name} the same version (e.g. {held})",
    )
