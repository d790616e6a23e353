"""Finding ``tritonserver`` and preparing what it needs: the nvidia-pytriton wheel's binary, a backend
directory with the Python stub built for this Python, the environment the stub embeds; numpy and plan checks."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TritongenError
from ..layout import cache_root, config_text
from .spec import INSTALL_FIX, WHEEL_SERVER_VERSION


@dataclass(frozen=True)
class ServerInstall:
    """A tritonserver binary and what it needs to run: backend directory, extra environment variables."""

    binary: Path
    source: str  # "argument" (--server-bin), "path" (tritonserver on PATH) or "wheel" (nvidia-pytriton)
    backend_dir: Path | None = None
    cache_dir: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # set on top of os.environ (PATH/LD_LIBRARY_PATH prepended)
    version: str | None = None  # known for the wheel only
    notes: tuple[str, ...] = ()

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment to start the server with: ``base`` (default os.environ) plus :attr:`env`."""
        env = dict(os.environ if base is None else base)
        for key, value in self.env.items():
            if key in ("PATH", "LD_LIBRARY_PATH") and env.get(key):
                env[key] = f"{value}{os.pathsep}{env[key]}"
            else:
                env[key] = value
        return env

    def args(self) -> list[str]:
        out = []
        if self.backend_dir is not None:
            out.append(f"--backend-directory={self.backend_dir}")
        if self.cache_dir is not None:
            out.append(f"--cache-directory={self.cache_dir}")
        return out


def find_server_binary(server_bin: Path | str | None = None, python_env: Path | None = None) -> ServerInstall:
    """``server_bin`` if given, else ``tritonserver`` on PATH, else the nvidia-pytriton wheel's server.

    ``python_env``: the virtual environment the wheel server's Python-backend models run in (default: this one).
    """
    wheel_root = _wheel_root()
    if python_env is not None:
        if server_bin is not None or shutil.which("tritonserver") or wheel_root is None:
            raise TritongenError(
                "a Python environment for the Python-backend models can "
                "only be given to the nvidia-pytriton wheel's server",
                f"{INSTALL_FIX.split(' or ')[0]}, and leave --server-bin out (and tritonserver off PATH)",
            )
        return _wheel_install(wheel_root, python_env)
    if server_bin is not None:
        path = Path(server_bin).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            what = "does not exist" if not path.exists() else "is not an executable file"
            raise TritongenError(
                f"--server-bin {path} {what}",
                f"pass the path of a tritonserver binary, or {INSTALL_FIX.split(' or ')[0]} and leave --server-bin out",
            )
        if (
            wheel_root is not None
            and path.resolve() == (wheel_root / "tritonserver" / "bin" / "tritonserver").resolve()
        ):
            return _wheel_install(wheel_root)
        return ServerInstall(binary=path.resolve(), source="argument")
    on_path = shutil.which("tritonserver")
    if on_path:
        return ServerInstall(binary=Path(on_path).resolve(), source="path")
    if wheel_root is not None and (wheel_root / "tritonserver" / "bin" / "tritonserver").is_file():
        return _wheel_install(wheel_root)
    raise TritongenError("no tritonserver found (not on PATH, nvidia-pytriton not installed)", INSTALL_FIX)


def _wheel_root() -> Path | None:
    """The installed ``pytriton`` package folder, found without importing it."""
    try:
        found = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def _wheel_install(root: Path, python_env: Path | None = None) -> ServerInstall:
    server_dir = root / "tritonserver"
    libs_dir = root.parent / "nvidia_pytriton.libs"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    backend_src = server_dir / "backends" / "python"
    if not stub.is_file():
        have = sorted(p.name for p in (server_dir / "python_backend_stubs").glob("*"))
        raise TritongenError(
            "the nvidia-pytriton wheel has no Python backend stub for "
            f"Python {version} (it has {', '.join(have) or 'none'})",
            f"run tritongen from a Python {' / '.join(have) or '3.10-3.12'} environment, or pass --server-bin",
        )
    env_bin, libpython, notes = _python_environment(python_env)
    cache = cache_root() / "backends" / _digest(stub, backend_src / "libtriton_python.so", sys.executable, libpython)
    backend_dir = cache / "backends"
    _prepare_backend_dir(backend_dir / "python", backend_src, stub)
    # The stub links libpython3.X.so.1.0; point the loader at this interpreter's own copy so that the embedded
    # Python is the same build as the one whose standard library it reads.
    ld_dirs = []
    if libpython is not None:
        lib_dir = cache / "libpython"
        _link(lib_dir / libpython.name, libpython)
        ld_dirs.append(str(lib_dir))
    ld_dirs.append(str(libs_dir))
    # The embedded interpreter finds its prefix by searching PATH for `python3`; with this environment's bin/
    # first it reads this environment's pyvenv.cfg and site-packages, as `python3` here would.
    env = {"LD_LIBRARY_PATH": os.pathsep.join(ld_dirs), "PATH": str(env_bin)}
    if not (env_bin / "python3").exists():
        env["PYTHONHOME"] = sys.base_prefix
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p.endswith("-packages"))
        notes = notes + (f"{env_bin} has no python3; Python-backend models get PYTHONHOME/PYTHONPATH instead",)
    caches = server_dir / "caches"
    return ServerInstall(
        binary=server_dir / "bin" / "tritonserver",
        source="wheel",
        backend_dir=backend_dir,
        cache_dir=caches if caches.is_dir() else None,
        env=env,
        version=WHEEL_SERVER_VERSION,
        notes=notes,
    )


def _python_environment(python_env: Path | None = None) -> tuple[Path, Path | None, tuple[str, ...]]:
    """This interpreter's bin/ folder (not resolved: a venv's bin/ holds symlinks), or ``python_env``'s, and libpython.

    The stub embeds this interpreter's libpython, so ``python_env`` must be a virtual environment of the same
    Python version (``python -m venv``); the embedded interpreter then reads its pyvenv.cfg and site-packages.
    """
    env_bin = Path(sys.executable).absolute().parent if python_env is None else venv_bin(python_env)
    notes: tuple[str, ...] = ()
    libpython = None
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname and (Path(libdir) / soname).is_file():
        libpython = Path(libdir) / soname
    else:
        notes = (
            "this Python has no shared libpython; the Python-backend "
            "stub uses the system's libpython of the same version",
        )
    return env_bin, libpython, notes


def venv_bin(python_env: Path) -> Path:
    cfg = python_env / "pyvenv.cfg"
    stub_python = f"{sys.version_info.major}.{sys.version_info.minor}"
    fix = f"create it with `{Path(sys.executable).name} -m venv {python_env}` (Python {stub_python}, the stub's)"
    if not cfg.is_file() or not (python_env / "bin" / "python3").exists():
        raise TritongenError(f"{python_env} is not a virtual environment (no pyvenv.cfg or bin/python3)", fix)
    settings = dict(line.split("=", 1) for line in cfg.read_text().splitlines() if "=" in line)
    settings = {k.strip(): v.strip() for k, v in settings.items()}
    version = settings.get("version_info") or settings.get("version") or ""
    if version.split(".")[:2] != [str(sys.version_info.major), str(sys.version_info.minor)]:
        raise TritongenError(
            f"{python_env} is a Python {version or '?'} environment; the Python-backend stub "
            f"embeds Python {stub_python}",
            fix,
        )
    return python_env / "bin"


def _digest(*parts: Path | str | None) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode())
        if isinstance(part, Path) and part.exists():
            st = part.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _prepare_backend_dir(target: Path, backend_src: Path, stub: Path) -> None:
    """Copy the Python backend and the matching stub into ``target`` (atomically; safe to race)."""
    if (target / "triton_python_backend_stub").is_file() and (target / "libtriton_python.so").is_file():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".python-", dir=target.parent))
    try:
        for item in backend_src.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        shutil.copy2(stub, tmp / "triton_python_backend_stub")
        try:
            tmp.rename(target)
        except OSError:  # another process made it first
            if not (target / "triton_python_backend_stub").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    tmp.replace(link)


def check_plans(repo: Path, install: ServerInstall) -> None:
    """Refuse TensorRT plans built with another TensorRT than this server's (when its version is known), and
    models whose plan is not built yet (Triton would fail to load them a while after it booted)."""
    from ..plan_compat import (
        pending_plans_from_repository,
        plan_problems_from_repository,
        triton_version_from_environment,
    )

    version = install.version if install.source == "wheel" else triton_version_from_environment()
    problems = plan_problems_from_repository(repo, version) if version else {}
    if problems:
        lines = [f"{model}: {p}" for model, found in problems.items() for p in found]
        raise TritongenError(
            f"{len(lines)} TensorRT plan(s) in {repo} cannot load in Triton {version}: {lines[0]}",
            "use the Triton image named above, or rebuild the plans "
            "with `tritongen engine` in the matching TensorRT image",
            details="\n".join(lines),
        )
    pending = pending_plans_from_repository(repo)
    if pending:
        name, versions = next(iter(pending.items()))
        more = f" (and {len(pending) - 1} more model(s))" if len(pending) > 1 else ""
        raise TritongenError(
            f"model '{name}' of {repo} has no TensorRT plan for version(s) {', '.join(map(str, versions))} yet{more}: "
            "Triton cannot load it",
            f"build the plans with `tritongen engine {repo}` on a GPU host with TensorRT (or `tritongen deploy {repo} "
            "--to docker --out DIR` writes an engine builder), or build the model with --target local to serve it here",
        )


def check_numpy(
    repo: Path, install: ServerInstall, numpy_version: str | None = None, python_env: Path | None = None
) -> None:
    """Triton 2.51's Python backend answers with empty or mis-sized outputs under numpy 2: refuse up front.

    Only for the wheel's server, whose Python-backend models import numpy from this environment.
    """
    if install.source != "wheel" or not has_python_models(repo):
        return
    if numpy_version is None:
        from importlib.metadata import PackageNotFoundError, distributions, version

        if python_env is not None:
            site = [str(p) for p in python_env.glob("lib/python3*/site-packages")]
            found = [d.version for d in distributions(path=site) if (d.metadata["Name"] or "").lower() == "numpy"]
            if not found:
                return
            numpy_version = found[0]
        else:
            try:
                numpy_version = version("numpy")
            except PackageNotFoundError:
                return
    if int(numpy_version.split(".")[0]) >= 2:
        raise TritongenError(
            f"numpy {numpy_version} is installed in {python_env or sys.prefix}, and the Python backend of Triton "
            f"{install.version} "
            "returns empty or wrong-sized outputs with numpy 2",
            "pip install 'numpy<2' in this environment (Python-backend models import numpy from it)",
        )


def has_python_models(repo: Path) -> bool:
    pattern = re.compile(r'^\s*backend\s*:\s*"python"', re.MULTILINE)
    for config in repo.glob("*/config.pbtxt"):
        try:
            if pattern.search(config_text(config)):  # bounded, one open
                return True
        except TritongenError:
            continue
    return False
