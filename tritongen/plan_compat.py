"""Which TensorRT a Triton release runs, and whether the plans in a repository were built with it.

A TensorRT plan loads only in a Triton whose TensorRT has the same version as the one that built it (Triton
says "Version tag does not match" and the model fails to load). ``tritongen engine`` records the TensorRT
version of every plan in the model's manifest; :func:`plan_problems_from_repository` compares those with
the TensorRT of the Triton that will serve them and names the NGC images that would work.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# NGC release (YY.MM) -> (Triton server version, TensorRT version), from NVIDIA's Triton release notes.
NGC_RELEASES: dict[str, tuple[str, str]] = {
    "24.05": ("2.46.0", "10.0.1.6"),
    "24.06": ("2.47.0", "10.1.0.27"),
    "24.07": ("2.48.0", "10.2.0.19"),
    "24.08": ("2.49.0", "10.3.0.26"),
    "24.09": ("2.50.0", "10.4.0.26"),
    "24.10": ("2.51.0", "10.5.0.18"),
    "24.11": ("2.52.0", "10.6.0.26"),
    "24.12": ("2.53.0", "10.7.0.23"),
    "25.01": ("2.54.0", "10.8.0.43"),
}
# NGC release -> (Ubuntu, Python) of its tritonserver and tensorrt images (the release notes' container tables):
# packages pip-installed into those images must have wheels for that Python. 25.01 moved to Ubuntu 24.04.
NGC_PLATFORMS: dict[str, tuple[str, str]] = {
    **{rel: ("22.04", "3.10") for rel in NGC_RELEASES if rel < "25.01"},
    "25.01": ("24.04", "3.12"),
}
DEFAULT_NGC_RELEASE = "24.10"  # Triton 2.51: the server the nvidia-pytriton wheel ships, so what runs here runs there
DEFAULT_TRITON_VERSION = "2.51.0"  # the nvidia-pytriton 0.7.0 wheel's server, and `serve --docker`'s image (24.10)
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:{release}-py3"
TENSORRT_IMAGE = "nvcr.io/nvidia/tensorrt:{release}-py3"


def _release(version: str) -> str:
    """major.minor.patch: what a plan's version tag has to match."""
    return ".".join(str(version).split(".")[:3])


def release_of_triton(triton_version: str) -> str | None:
    """The NGC release (YY.MM) that ships Triton ``triton_version``, when known."""
    return next(
        (rel for rel, (triton, _) in NGC_RELEASES.items() if _release(triton) == _release(triton_version)), None
    )


def tensorrt_of_triton(triton_version: str) -> str | None:
    release = release_of_triton(triton_version)
    return NGC_RELEASES[release][1] if release else None


def releases_with_tensorrt(tensorrt_version: str) -> list[str]:
    return [rel for rel, (_, trt) in NGC_RELEASES.items() if _release(trt) == _release(tensorrt_version)]


def triton_version_from_environment() -> str | None:
    """``$TRITON_SERVER_VERSION``: set in NGC's Triton images, where tritonserver is on PATH."""
    return os.environ.get("TRITON_SERVER_VERSION") or None


def plan_problems_for_model(model_dir: Path, triton_version: str) -> list[str]:
    """One line per plan of ``model_dir`` (from its manifests) that Triton ``triton_version`` cannot load."""
    from .layout import version_numbers
    from .manifest import engines_of

    server_trt = tensorrt_of_triton(triton_version)
    if server_trt is None:
        return []  # a release this table does not know: Triton itself will say so at load time
    server_release = release_of_triton(triton_version)
    problems = []
    for version in version_numbers(model_dir):
        engines = engines_of(model_dir, version)  # unreadable manifests are tritongen verify's business
        for cc, engine in sorted(engines.items()):
            built = engine.get("tensorrt_version")
            if not built or _release(built) == _release(server_trt):
                continue
            serve_with = [TRITON_IMAGE.format(release=r) for r in releases_with_tensorrt(built)]
            fix = (
                f"serve it with {' or '.join(serve_with)}, or " if serve_with else ""
            ) + f"rebuild it with `tritongen engine` in {TENSORRT_IMAGE.format(release=server_release)}"
            problems.append(
                f"version {version}: {engine.get('plan', 'model.plan')} (compute capability {cc}) was built with "
                f"TensorRT {built}, but Triton {triton_version} ({TRITON_IMAGE.format(release=server_release)}) "
                f"runs TensorRT {server_trt} and will not load it: {fix}"
            )
    return problems


def check_triton_version(triton_version: str) -> str:
    """``triton_version`` if it reads as a Triton server version (``2.51.0``), else one clear error; an NGC release
    (``24.10``) is named as such, with its server's version."""
    from .errors import TritongenError  # noqa: PLC0415

    version = re.fullmatch(r"(\d{1,3})\.\d{1,3}(\.\d{1,3})?[0-9A-Za-z.+-]{0,16}", triton_version)  # 2.55.0dev too
    if triton_version in NGC_RELEASES or (version is not None and int(version.group(1)) >= 20):
        known = NGC_RELEASES.get(triton_version)
        raise TritongenError(
            f"--triton-version {triton_version} is an NGC release (YY.MM), not a Triton version",
            f"pass its server's version: --triton-version {known[0]}"
            if known
            else "pass the server's version (tritonserver --version), e.g. 2.51.0 for NGC 24.10",
        )
    if version is None:
        raise TritongenError(
            f"--triton-version {triton_version[:40]!r} is not a Triton server version",
            f"pass one like {DEFAULT_TRITON_VERSION} (tritonserver --version; $TRITON_SERVER_VERSION in NGC's images)",
        )
    return triton_version


def plan_problems_from_repository(repo: Path, triton_version: str) -> dict[str, list[str]]:
    """Model name -> plan problems, for every model folder of ``repo`` that has any (``triton_version`` as a server
    reports it: an unknown one checks nothing; :func:`check_triton_version` judges what a user typed)."""
    out = {}
    for model_dir in sorted(p for p in Path(repo).iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = plan_problems_for_model(model_dir, triton_version)
        if found:
            out[model_dir.name] = found
    return out


def check_release(release: str) -> str:
    """``release`` if this table knows it, else a :class:`TritongenError` listing the releases it knows."""
    from .errors import TritongenError  # noqa: PLC0415

    if release not in NGC_RELEASES:
        raise TritongenError(
            f"NGC release '{release}' is not known to tritongen",
            f"use one of {', '.join(NGC_RELEASES)} (YY.MM; default {DEFAULT_NGC_RELEASE})",
        )
    return release


def pending_plans_from_repository(repo: Path) -> dict[str, list[int]]:
    """Model name -> version numbers prepared by ``build --target tensorrt`` whose plan is not built yet.

    A version is pending when it holds ``tritongen/engine.json`` but none of the plan files its config names
    (``model.plan`` or a ``cc_model_filenames`` entry): Triton cannot load it until ``tritongen engine`` ran.
    """
    from .errors import TritongenError
    from .layout import ARTIFACT_DIR, CONFIG_NAME, ENGINE_PLAN_NAME, PLAN_FILENAME, config_text, version_of_folder

    pending: dict[str, list[int]] = {}
    for plan in sorted(Path(repo).glob(f"*/*/{ARTIFACT_DIR}/{ENGINE_PLAN_NAME}")):
        version_dir = plan.parent.parent
        model_dir = version_dir.parent
        version = version_of_folder(version_dir.name)
        if version is None or model_dir.name.startswith("."):
            continue
        try:  # a config too large (or unreadable) is named by validate; here it names no plan
            config = config_text(model_dir / CONFIG_NAME)
        except TritongenError:
            config = ""
        names = {PLAN_FILENAME, *re.findall(r'value:\s*"([^"]+\.plan)"', config)}
        if not any((version_dir / name).is_file() for name in names):
            pending.setdefault(model_dir.name, []).append(version)
    return {name: sorted(versions) for name, versions in pending.items()}
