"""The memory allocator tritonserver runs with.

Triton's model-management guide: memory that grows while models are loaded and unloaded through the model control
protocol is usually glibc malloc keeping freed pages, not a leak; it recommends preloading tcmalloc or jemalloc
(both ship in the NGC Triton image). Measured here (``tests/test_rollout.py``, a 34 MB model rolled out and back
three times under load, the candidate's files uploaded through the load API): with glibc the server process grew
55 -> 91 -> 103 MB over the cycles, with tcmalloc it grew by 42 MB and stayed there, with jemalloc it stayed within
2% of where it started. So ``auto`` prefers jemalloc, then tcmalloc, then the system's malloc.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import TritongenError

ALLOCATORS = ("auto", "jemalloc", "tcmalloc", "system")

# Shared-object names, most preferred first, and the directories the dynamic loader's usual search covers.
_LIBRARIES = {
    "jemalloc": ("libjemalloc.so.2", "libjemalloc.so"),  # the NGC image has both (libjemalloc-dev)
    "tcmalloc": ("libtcmalloc.so.4", "libtcmalloc_minimal.so.4"),
}
_INSTALL = {
    "jemalloc": "apt-get install libjemalloc2",
    "tcmalloc": "apt-get install libtcmalloc-minimal4",
}
LIBRARY_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)

# Where NGC's tritonserver image (x86_64) has them: the paths of Triton's model-management guide with
# $(uname -m) = x86_64 (a docker/compose/Kubernetes environment cannot run it; tritongen's bundles are x86_64).
NGC_LIBRARIES = {
    "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so",
    "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4",
}


def check_allocator(name: str) -> None:
    if name not in ALLOCATORS:
        raise TritongenError(f"allocator '{name}' is not known", f"use one of {', '.join(ALLOCATORS)}")


def library_from_allocator(name: str, dirs: tuple[str, ...] = LIBRARY_DIRS) -> Path | None:
    """The shared library to preload for allocator ``name`` (None: the system's malloc).

    ``auto`` takes jemalloc, else tcmalloc, else None; a named one that is not installed is an error.
    """
    check_allocator(name)
    if name == "system":
        return None
    for kind in ("jemalloc", "tcmalloc") if name == "auto" else (name,):
        for directory in dirs:
            for library in _LIBRARIES[kind]:
                path = Path(directory) / library
                if path.is_file():
                    return path
        if name != "auto":
            raise TritongenError(
                f"{kind} is not installed (looked for {' or '.join(_LIBRARIES[kind])} in {', '.join(dirs)})",
                f"{_INSTALL[kind]}, or pass --allocator auto or system",
            )
    return None


def allocator_from_library(library: Path | None) -> str:
    """``jemalloc``, ``tcmalloc`` or ``system``: what a preloaded ``library`` is."""
    if library is None:
        return "system"
    return "jemalloc" if "jemalloc" in library.name else "tcmalloc"


def preload_environ(env: dict[str, str], library: Path | None) -> dict[str, str]:
    """``env`` with ``library`` first on LD_PRELOAD (unchanged when None)."""
    if library is None:
        return env
    out = dict(env)
    rest = out.get("LD_PRELOAD", "")
    out["LD_PRELOAD"] = f"{library}{os.pathsep}{rest}" if rest else str(library)
    return out


def ngc_preload(name: str) -> str | None:
    """What to preload for allocator ``name`` in NGC's image (None: the system's malloc); ``auto`` is jemalloc."""
    check_allocator(name)
    return None if name == "system" else NGC_LIBRARIES["jemalloc" if name == "auto" else name]
