"""The BLAS threads the Python-backend stubs start with (``OPENBLAS_NUM_THREADS`` in tritonserver's environment,
which every stub inherits).

numpy's wheel links OpenBLAS built with pthreads, which starts one thread per core, with its buffers, when numpy is
imported, and each thread spin-waits (``sched_yield``: ~2000 calls in its first half second, counted with strace)
before it sleeps. Every stub imports numpy, and a rollout's switch starts a new stub on the cores the clients and
the server use. Measured with ``bench/rollout_cpu.py`` (CPU seconds from ``/proc``, 2 cores shared with other
jobs): a stub's start cost 0.30 CPU-s by default and 0.14-0.18 with ``OPENBLAS_NUM_THREADS=1`` on an idle server
(the lead's earlier run: 0.30-0.37 vs 0.21); with 32 clients busy, the yielding thread gets little CPU and both
cost 0.20-0.23. The generated models call no BLAS routine on their serving path (ONNX Runtime has its own thread
pool; numpy only concatenates and casts), so one thread costs steady serving nothing; a custom step that
multiplies large matrices with numpy is the case for ``stub_blas_threads=0`` (numpy's default) or a larger count.

OpenBLAS reads ``OPENBLAS_NUM_THREADS``, then ``GOTO_NUM_THREADS``, then ``OMP_NUM_THREADS``: a user who set any of
them has chosen, and their environment is kept as it is.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import TritongenError

BLAS_THREADS_VARIABLE = "OPENBLAS_NUM_THREADS"
USER_CHOICE_VARIABLES = (BLAS_THREADS_VARIABLE, "GOTO_NUM_THREADS", "OMP_NUM_THREADS")  # OpenBLAS's order


def check_blas_threads(threads: object) -> None:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise TritongenError(
            f"stub BLAS threads {threads!r} is not a whole number from 0",
            "give --stub-blas-threads 1 (the default), another count, or 0 for numpy's default (one per core)",
        )


def blas_environ(env: Mapping[str, str], threads: int) -> tuple[dict[str, str], str]:
    """``env`` with ``OPENBLAS_NUM_THREADS=threads`` unless ``threads`` is 0 or ``env`` already chooses (see the
    module's docstring), and a line that says which: ``OPENBLAS_NUM_THREADS=1``, ``OMP_NUM_THREADS=4 (from the
    environment)`` or ``numpy's default (one thread per core)``."""
    check_blas_threads(threads)
    out = dict(env)
    for name in USER_CHOICE_VARIABLES:
        if out.get(name):
            return out, f"{name}={out[name]} (from the environment)"
    if threads == 0:
        return out, "numpy's default (one thread per core)"
    out[BLAS_THREADS_VARIABLE] = str(threads)
    return out, f"{BLAS_THREADS_VARIABLE}={threads}"
