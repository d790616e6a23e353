"""Repository writer: stage a model folder in a temporary directory, then move it into place atomically.

A build never leaves a half-written model behind: everything is written under a hidden staging folder in
the target repository (same file system, so the final step is a rename) and removed if anything fails.
An existing model is replaced only with ``force``; ``new_version`` adds version N+1 beside the old ones.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import TritongenError
from .spec import BuildSpec

STAGING_PREFIX = ".tritongen-staging-"


@dataclass(frozen=True)
class InstallPlan:
    repo: Path
    model_dir: Path
    version: int
    mode: str  # "new", "replace" or "new_version"
    created_repo: bool


def numeric_versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and not p.name.startswith("0"))


def plan_install(spec: BuildSpec) -> InstallPlan:
    """Decide where the model goes and fail early (before any export work) on conflicts."""
    repo = spec.repo
    if repo.exists() and not repo.is_dir():
        raise TritongenError(f"the repository path {repo} is a file, not a folder", "pass --repo with a folder path")
    created = False
    if not repo.exists():
        try:
            repo.mkdir(parents=True)
            created = True
        except OSError as exc:
            raise TritongenError(f"cannot create repository folder {repo} ({exc.strerror})", "pass --repo with a folder you can write to") from None
    if not os.access(repo, os.W_OK | os.X_OK):
        raise TritongenError(f"no write permission for repository folder {repo}", "pass --repo with a folder you can write to, or fix its permissions")
    model_dir = repo / spec.name
    if model_dir.exists() and not model_dir.is_dir():
        raise TritongenError(f"{model_dir} exists and is a file", "remove it or choose another --name")
    versions = numeric_versions(model_dir)
    if model_dir.exists() and spec.new_version:
        return InstallPlan(repo, model_dir, (max(versions) + 1) if versions else 1, "new_version", created)
    if model_dir.exists() and not spec.force:
        raise TritongenError(
            f"model '{spec.name}' already exists in {repo}",
            "pass --force to replace it, --new-version to add a version beside it, or choose another --name",
        )
    return InstallPlan(repo, model_dir, 1, "replace" if model_dir.exists() else "new", created)


@contextlib.contextmanager
def staging_dir(plan: InstallPlan) -> Iterator[Path]:
    """A temporary folder inside the repository, removed on exit whatever happens."""
    try:
        stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=plan.repo))
    except OSError as exc:
        raise TritongenError(f"cannot write to repository folder {plan.repo} ({exc.strerror})", "pass --repo with a folder you can write to") from None
    ok = False
    try:
        yield stage
        ok = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not ok and plan.created_repo:
            with contextlib.suppress(OSError):
                plan.repo.rmdir()  # only succeeds if we created it and it is still empty


def _normalise_modes(root: Path) -> None:
    """Temporary folders are private (0700) and some writers create 0600 files; a served model must be
    readable by the server's user, so apply the usual modes (minus the umask) before moving into place."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        path.chmod((0o755 if path.is_dir() else 0o644) & ~umask)


def install_model(staged_model: Path, plan: InstallPlan, trash: Path) -> Path:
    """Move a staged model folder into the repository. ``trash`` is a folder inside the staging area."""
    _normalise_modes(staged_model)
    if plan.mode == "new":
        os.rename(staged_model, plan.model_dir)
    elif plan.mode == "replace":
        os.rename(plan.model_dir, trash / "previous")
        try:
            os.rename(staged_model, plan.model_dir)
        except OSError:
            os.rename(trash / "previous", plan.model_dir)
            raise
    else:  # new version beside the existing ones: the version folder first, then shared files
        os.rename(staged_model / str(plan.version), plan.model_dir / str(plan.version))
        for item in staged_model.iterdir():
            target = plan.model_dir / item.name
            if target.is_dir():
                os.rename(target, trash / item.name)
            os.replace(item, target)
    return plan.model_dir
