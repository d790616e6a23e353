"""Deployment bundles for a built model repository: ``tritongen deploy REPO --to TARGET --out DIR``.

Each target is a module with a ``<target>_bundle_from_repository(repo, out, ...)`` function returning a typed
result; :func:`bundle_from_repository` maps a target name to it (:data:`TARGETS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import TritongenError
from ..perf.results import PerfRun
from ..plan_compat import DEFAULT_NGC_RELEASE
from .docker import DockerBundle, docker_bundle_from_repository, docker_steps_from_repository


def _to_docker(
    repo: Path,
    out: Path,
    *,
    ngc_version: str = DEFAULT_NGC_RELEASE,
    host: str = "127.0.0.1",
    force: bool = False,
    extra_packages: Mapping[str, str] | tuple[str, ...] = (),
    allow_unverified: tuple[str, ...] = (),
    signed_digests: Mapping[str, str] | None = None,
) -> Any:
    return docker_bundle_from_repository(
        repo,
        out,
        ngc_release=ngc_version,
        host=host,
        force=force,
        extra_packages=extra_packages_from_args(extra_packages),
        allow_unverified=tuple(allow_unverified),
        signed_digests=signed_digests,
    )


def _to_cluster(target: str) -> Callable[..., Any]:
    def write(
        repo: Path,
        out: Path,
        *,
        ngc_version: str | None = None,  # Kubernetes: DEFAULT_NGC_RELEASE; KServe: its Triton runtime's image
        perf_results: Path | PerfRun | None = None,  # a results.json (or its report folder), or perf()'s result
        slo_p99_ms: float | None = None,
        peak_rps: float | None = None,
        model: str | None = None,
        image: str | None = None,
        model_uri: str | None = None,
        namespace: str = "tritongen",
        gpus: int | None = None,
        canary_traffic_percent: int | None = None,
        force: bool = False,
        allow_unverified: tuple[str, ...] = (),
        signed_digests: Mapping[str, str] | None = None,
    ) -> Any:
        from .k8s_bundle import kubernetes_bundle_from_repository

        return kubernetes_bundle_from_repository(
            repo,
            out,
            target=target,
            perf_results=perf_results,
            slo_p99_ms=slo_p99_ms,
            peak_rps=peak_rps,
            model=model,
            image=image,
            ngc_release=ngc_version,
            model_uri=model_uri,
            namespace=namespace,
            gpus=gpus,
            canary_traffic_percent=canary_traffic_percent,
            force=force,
            allow_unverified=tuple(allow_unverified),
            signed_digests=signed_digests,
        )

    return write


# target name -> function(repo, out, **options) returning a result with summary(); its keyword parameters are the
# options that target takes: another target's option, or an unknown one, is refused (bundle_from_repository).
TARGETS: dict[str, Callable[..., Any]] = {
    "docker": _to_docker,
    "kubernetes": _to_cluster("kubernetes"),
    "kserve": _to_cluster("kserve"),
}


# Options a target's function has but the target does not take: kubernetes and kserve share one function, and a
# canary is KServe's (canaryTrafficPercent).
_NOT_TAKEN: dict[str, tuple[str, ...]] = {"kubernetes": ("canary_traffic_percent",)}
# What deploy passes itself, no option: the digests the signature gives (tritongen.deploy(public_key=...))
_INTERNAL = ("signed_digests",)
# The CLI's flag for an option whose keyword is spelled otherwise (api.CLI_SPELLINGS["deploy"], the other way round)
_FLAGS = {"perf_results": "--from-perf", "canary_traffic_percent": "--canary-percent"}
# What else does the work of an option, for a target that does not take it
_INSTEAD = {"canary_traffic_percent": "compare versions on one server (tritongen perf MODEL --version-split 1:90,2:10)"}


def target_options(target: str) -> tuple[str, ...]:
    """The options ``target`` takes (its function's keyword parameters, less :data:`_NOT_TAKEN`'s)."""
    import inspect

    params = inspect.signature(TARGETS[target]).parameters.values()
    left_out = (*_NOT_TAKEN.get(target, ()), *_INTERNAL)
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in left_out)


def _flag(key: str) -> str:
    """The ``tritongen deploy`` flag of option ``key``: ``perf_results`` -> ``--from-perf``."""
    return _FLAGS.get(key, f"--{key.replace('_', '-')}")


def bundle_from_repository(
    repo: Path, target: str, out: Path, *, signed_digests: Mapping[str, str] | None = None, **options: Any
) -> Any:
    """Write the ``target`` bundle (docker, kubernetes, kserve) that serves ``repo`` into ``out``; an option
    ``target`` does not take is refused, before anything is written."""
    from ..fields import check_arguments
    from ..names import shown, with_suggestion

    if not isinstance(target, str) or target not in TARGETS:
        raise TritongenError(
            f"deploy target '{shown(target)}' is not known",
            with_suggestion(target, TARGETS, f"use one of {', '.join(sorted(TARGETS))}"),
        )
    takes = target_options(target)
    for key in options:
        if key in takes:
            continue
        others = [t for t in sorted(TARGETS) if key in target_options(t)]
        if others:
            to = " or ".join(others)
            fix = (
                f"leave it out, deploy to {to}, or {_INSTEAD[key]}"
                if key in _INSTEAD
                else f"leave it out, or deploy to {to}"
            )
            raise TritongenError(f"deploy option {_flag(key)} is for {' and '.join(others)} bundles, not {target}", fix)
        raise TritongenError(
            f"deploy to {target} has no option '{shown(key)}'",
            with_suggestion(key, takes, f"its options are {', '.join(takes)}"),
        )
    options = check_arguments(TARGETS[target], options, f"deploy to {target}")
    return TARGETS[target](Path(repo), Path(out), signed_digests=signed_digests, **options)


def extra_packages_from_args(values: Any) -> dict[str, str]:
    """``IMPORT=REQUIREMENT`` strings (or a mapping already) -> {import name: pinned requirement}."""
    if isinstance(values, Mapping):
        return dict(values)
    if isinstance(values, str):
        values = (values,)  # one IMPORT=REQUIREMENT, not its letters
    out: dict[str, str] = {}
    for value in values:
        module, sep, requirement = value.partition("=")
        if not sep or not module or not requirement or not module.isidentifier():
            raise TritongenError(
                f"--extra-package '{value}' is not IMPORT=REQUIREMENT",
                "write the import name, '=' and a pinned requirement: --extra-package sklearn=scikit-learn==1.5.2",
            )
        if out.get(module, requirement) != requirement:  # the last one silently won
            raise TritongenError(
                f"--extra-package names {module} twice, as {out[module]} and {requirement}",
                f"give {module} one requirement",
            )
        out[module] = requirement
    return out


__all__ = [
    "TARGETS",
    "DockerBundle",
    "bundle_from_repository",
    "docker_bundle_from_repository",
    "docker_steps_from_repository",
    "extra_packages_from_args",
    "target_options",
]
