"""tritongen: from a trained PyTorch model to a Triton model repository that is proven to serve.

The Python API (each function imports its stage when called, so ``import tritongen`` stays light)::

    import tritongen

    result = tritongen.build("resnet.pt", name="resnet", inputs=["x:FP32:3,224,224"], repo="model_repository")
    tritongen.validate("model_repository")
    tritongen.verify("model_repository")
    with tritongen.serve("model_repository") as server:  # ports 8000/8001/8002 when free, else free ones
        print(tritongen.infer("resnet", url=server.grpc_url, repo="model_repository", check=True).text())

``build`` takes a model file, a Hugging Face folder or an in-memory ``torch.nn.Module`` (with ``example_inputs``);
``serve`` validates and verifies before it boots Triton (``docker_steps``: how to serve it with NGC's image
instead); ``perf`` (``report``: one report for several runs; ``compare``: runs side by side), ``tune``,
``engine``, ``lint``, ``deploy``, ``rollout``, ``rollback`` and ``sign`` are the other commands. Every failure
raises :class:`TritongenError` (``problem`` and ``fix``). Every result prints as the CLI prints it with ``text()``.
"""

from __future__ import annotations

import sys
import types

__version__ = "0.1.0"

from .api import (  # noqa: E402
    build,
    compare,
    deploy,
    docker_steps,
    engine,
    infer,
    lint,
    perf,
    report,
    rollback,
    rollout,
    serve,
    sign,
    tune,
    validate,
    verify,
)
from .errors import TritongenError  # noqa: E402

__all__ = [
    "TritongenError",
    "__version__",
    "build",
    "compare",
    "deploy",
    "docker_steps",
    "engine",
    "infer",
    "lint",
    "perf",
    "report",
    "rollback",
    "rollout",
    "serve",
    "sign",
    "tune",
    "validate",
    "verify",
]


class _Package(types.ModuleType):
    """Keeps the API functions bound although submodules share their names (``tritongen.build`` the module,
    ``tritongen.perf`` the package, ...): importing a submodule sets it as an attribute of its package, which
    would otherwise replace the function. Submodules stay importable by their full names."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in __all__ and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
