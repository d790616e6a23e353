"""The environment every bundle's Triton container starts with: what ``tritongen serve`` gives its server.

- ``OPENBLAS_NUM_THREADS=1``: the Python-backend stubs import numpy, whose OpenBLAS starts a thread per core (and
  its buffers) at import; the generated models call no BLAS routine. See :mod:`tritongen.server.blas` for what was
  measured.
- ``LD_PRELOAD`` of jemalloc, as Triton's model-management guide recommends for models loaded and unloaded through
  the model control protocol (glibc's malloc keeps the freed memory: see :mod:`tritongen.server.allocator` for the
  growth measured here, 55 -> 103 MB over three rollouts with glibc, flat with jemalloc). The bundles start Triton
  with model control ``none``, where nothing is unloaded, so it is set always rather than only for
  ``explicit``/``poll``: it costs nothing there, and it is in place once an operator adds
  ``--model-control-mode=explicit`` (what ``tritongen rollout`` needs) without knowing the guide. The path is the
  one the guide gives for NGC's image (which has ``libjemalloc.so``), for x86_64: the bundles target
  x86_64 already (their pinned packages are checked against manylinux x86_64 wheels), and neither a compose
  ``environment`` nor a Kubernetes ``env`` can run the guide's ``$(uname -m)``.
"""

from __future__ import annotations

from ..server.allocator import NGC_LIBRARIES
from ..server.blas import BLAS_THREADS_VARIABLE

NGC_JEMALLOC = NGC_LIBRARIES["jemalloc"]

SERVING_ENV: dict[str, str] = {
    BLAS_THREADS_VARIABLE: "1",
    "LD_PRELOAD": NGC_JEMALLOC,
}


def kubernetes_env() -> list[dict[str, str]]:
    """:data:`SERVING_ENV` as a container's ``env`` list."""
    return [{"name": name, "value": value} for name, value in SERVING_ENV.items()]
