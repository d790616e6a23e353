"""Repository writer: stage a model folder in a temporary directory, then move it into place atomically.

A build never leaves a half-written model behind: everything is written under a hidden staging folder beside the
target repository (or in it; same file system either way, so the final step is a rename) and removed if anything
fails.
The install itself is a series of renames, each with its inverse (:class:`Undo`): one that fails part-way (an
ensemble's third model, a new version's second shared file) takes back the ones before it.
An existing model is replaced only with ``force``; ``new_version`` adds version N+1 beside the old ones.

The repository is the boundary: a model folder that is a symbolic link, or holds a version folder that is one
or any link leading outside the repository, is refused (a build would write or delete through it). A model
that an ensemble calls is replaced or given a version only together with that ensemble, and before installing,
the ensembles that call a staged model are validated against the staged configs (:func:`check_ensembles_with`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import TritongenError
from .layout import STAGING_PREFIX, link_problems, version_numbers
from .names import one_line
from .spec import BuildSpec


@dataclass(frozen=True)
class InstallPlan:
    repo: Path
    model_dir: Path
    version: int
    mode: str  # "new", "replace" or "new_version"
    created: tuple[Path, ...]  # the folders the plan made for the repository, deepest first: removed on failure


def ensembles_using(repo: Path) -> dict[str, set[str]]:
    """Model name -> the ensembles in ``repo`` whose steps call it (configs that do not parse are skipped)."""
    from .validate import config_from_file

    users: dict[str, set[str]] = {}
    for folder in sorted(Path(repo).iterdir()) if Path(repo).is_dir() else []:
        config_path = folder / "config.pbtxt"
        if folder.name.startswith(".") or folder.is_symlink() or not config_path.is_file():
            continue
        try:
            config = config_from_file(config_path)
        except (TritongenError, OSError, UnicodeDecodeError):
            continue
        for step in config.ensemble_scheduling.step:
            users.setdefault(step.model_name, set()).add(folder.name)
    return users


def _refuse_links(repo: Path, model_dir: Path) -> None:
    found = link_problems(repo, model_dir) if os.path.lexists(model_dir) else []
    if found:
        raise TritongenError(
            f"{found[0]}: a build would write or delete through it",
            f"replace the link with a real folder inside {repo}, or choose another --name",
        )


def plan_install(spec: BuildSpec, rebuilt: frozenset[str] = frozenset()) -> InstallPlan:
    """Decide where the model goes and fail early (before any export work) on conflicts.

    ``rebuilt`` names every model the same command builds (an ensemble and its steps): replacing a model
    or adding a version to it is refused while an ensemble outside ``rebuilt`` calls it.
    """
    repo = spec.repo
    if repo.exists() and not repo.is_dir():
        raise TritongenError(f"the repository path {repo} is a file, not a folder", "pass --repo with a folder path")
    created: tuple[Path, ...] = ()
    if not repo.exists():
        missing = tuple(p for p in (repo, *repo.absolute().parents) if not p.exists())
        try:
            repo.mkdir(parents=True)
            created = missing
        except OSError as exc:
            raise TritongenError(
                f"cannot create repository folder {repo} ({exc.strerror})", "pass --repo with a folder you can write to"
            ) from None
    if not os.access(repo, os.W_OK | os.X_OK):
        raise TritongenError(
            f"no write permission for repository folder {repo}",
            "pass --repo with a folder you can write to, or fix its permissions",
        )
    model_dir = repo / spec.name
    _refuse_links(repo, model_dir)
    if model_dir.exists() and not model_dir.is_dir():
        raise TritongenError(f"{model_dir} exists and is a file", "remove it or choose another --name")
    versions = version_numbers(model_dir)
    if model_dir.exists() and (spec.new_version or spec.force):
        _refuse_ensemble_step(repo, spec, rebuilt)
    if model_dir.exists() and spec.new_version:
        return InstallPlan(repo, model_dir, (max(versions) + 1) if versions else 1, "new_version", created)
    if model_dir.exists() and not spec.force:
        raise TritongenError(
            f"model '{spec.name}' already exists in {repo}",
            "pass --force to replace it, --new-version to add a version beside it, or choose another --name",
        )
    return InstallPlan(repo, model_dir, 1, "replace" if model_dir.exists() else "new", created)


def _refuse_ensemble_step(repo: Path, spec: BuildSpec, rebuilt: frozenset[str]) -> None:
    callers = sorted(ensembles_using(repo).get(spec.name, set()) - set(rebuilt))
    if not callers:
        return
    action = "adding a version to it" if spec.new_version else "replacing it"
    also = f" (and {', '.join(callers[1:])})" if len(callers) > 1 else ""
    raise TritongenError(
        f"model '{spec.name}' is a step of ensemble '{callers[0]}'{also}: {action} on its own could leave the "
        "ensemble invalid",
        f"rebuild the ensemble with its steps in one command (tritongen build SOURCE --name {callers[0]} --force, "
        f"SOURCE being its model file or Hugging Face folder), or build this model under another --name",
    )


def check_ensembles_with(repo: Path, staged: dict[str, Path], added_versions: frozenset[str] = frozenset()) -> None:
    """Refuse to install the ``staged`` model folders (name -> folder) if an ensemble that calls one of them (or
    a staged ensemble) would then have a problem it does not have now. Models in ``added_versions`` keep their
    installed versions beside the staged one. Steps calling models that are absent are not this build's doing
    (a hand-written ensemble may be filled one model at a time): they are left to ``tritongen validate``."""
    from .validate import config_from_file
    from .validate_ensemble import problems_in_ensembles

    repo = Path(repo)
    before, versions, unreadable = {}, {}, set()
    for folder in sorted(repo.iterdir()):
        if folder.name.startswith(".") or folder.is_symlink() or not (folder / "config.pbtxt").is_file():
            continue
        try:
            before[folder.name] = config_from_file(folder / "config.pbtxt")
        except (TritongenError, OSError, UnicodeDecodeError):
            unreadable.add(folder.name)
            continue
        versions[folder.name] = set(version_numbers(folder))
    after, versions_after = dict(before), dict(versions)
    for name, folder in staged.items():
        after[name] = config_from_file(folder / "config.pbtxt")
        kept = versions.get(name, set()) if name in added_versions else set()
        versions_after[name] = set(version_numbers(folder)) | kept
        unreadable.discard(name)
    called = {step.model_name for config in after.values() for step in config.ensemble_scheduling.step}
    called |= {step.model_name for config in before.values() for step in config.ensemble_scheduling.step}
    had = problems_in_ensembles(before, versions, unreadable | (called - set(before)))
    found = problems_in_ensembles(after, versions_after, unreadable | (called - set(after)))
    touched = set(staged) | {
        n for n, config in after.items() if any(step.model_name in staged for step in config.ensemble_scheduling.step)
    }
    problems = {
        name: new
        for name in sorted(touched & set(found))
        if (new := [p for p in found[name] if p not in had.get(name, [])])
    }
    if problems:
        name = next(iter(problems))
        raise TritongenError(
            f"installing {', '.join(sorted(staged))} would leave ensemble '{name}' invalid: {problems[name][0]}",
            "rebuild the ensemble with its steps in one command (--force), or fix the model it calls; "
            "nothing was installed",
            details="\n".join(f"{n}: {p}" for n in problems for p in problems[n]),
        )


def staging_parent(repo: Path) -> Path:
    """Where a build stages its files: beside the repository when that folder is writable and on the same file system
    (the final step stays a rename, and a server polling the repository never sees the staging folder, which it
    would try to load as a model), else inside the repository."""
    repo = Path(repo)
    parent = repo.absolute().parent
    try:
        same_device = os.stat(parent).st_dev == os.stat(repo).st_dev
    except OSError:
        return repo
    return parent if same_device and parent != repo.absolute() and os.access(parent, os.W_OK | os.X_OK) else repo


@contextlib.contextmanager
def staging_dir(plan: InstallPlan) -> Iterator[Path]:
    """A temporary folder beside the repository (or inside it, see :func:`staging_parent`), removed on exit
    whatever happens."""
    parent = staging_parent(plan.repo)
    prefix = STAGING_PREFIX if parent == plan.repo else f"{STAGING_PREFIX}{plan.repo.name}-"
    try:
        stage = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    except OSError as exc:
        raise TritongenError(
            f"cannot write to repository folder {plan.repo} ({exc.strerror})",
            "pass --repo with a folder you can write to",
        ) from None
    ok = False
    try:
        yield stage
        ok = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not ok:
            for folder in plan.created:  # the repository and the parents the build made for it, while empty
                try:
                    folder.rmdir()
                except OSError:
                    break


def _normalise_modes(root: Path) -> None:
    """Temporary folders are private (0700) and some writers create 0600 files; a served model must be
    readable by the server's user, so apply the usual modes (minus the umask) before moving into place."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")]:
        path.chmod((0o755 if path.is_dir() else 0o644) & ~umask)


class Undo:
    """The renames an install made, each with its inverse: a step that fails part-way (an ensemble's third model, a
    new version's second shared file) puts the repository back as it was, newest step first. An install that
    finishes leaves what it replaced in ``trash`` (the staging area, removed after)."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Path, Path]] = []

    def rename(self, source: Path, target: Path) -> None:
        os.rename(source, target)
        self._steps.append(("rename", source, target))

    def exchange(self, a: Path, b: Path) -> bool:
        if not exchange_paths(a, b):
            return False
        self._steps.append(("exchange", a, b))
        return True

    def replace_file(self, new: Path, target: Path, kept: Path) -> None:
        """``new`` over the file ``target`` in one rename, ``target``'s old bytes kept at ``kept`` (a hard link)."""
        existed = os.path.lexists(target)
        if existed:
            try:
                os.link(target, kept, follow_symlinks=False)
            except OSError:
                shutil.copy2(target, kept, follow_symlinks=False)
        os.replace(new, target)  # the step is recorded once it is done: a replace that failed changed nothing
        self._steps.append(("kept", kept, target) if existed else ("created", new, target))

    def undo(self) -> list[str]:
        """Reverse every step, newest first; what could not be reversed, as lines naming the paths."""
        failed = []
        while self._steps:
            kind, a, b = self._steps.pop()
            try:
                if kind == "rename":
                    os.rename(b, a)
                elif kind == "exchange":
                    exchange_paths(a, b)
                elif kind == "kept":
                    os.replace(a, b)
                else:  # a file the install added: it goes back where it came from
                    os.rename(b, a)
            except OSError as exc:
                failed.append(f"{b}: {exc.strerror or exc}")
        return failed


@contextlib.contextmanager
def installing(repo: Path) -> Iterator[Undo]:
    """A block of installs that go in together: if one fails, the others in the block are undone and the error
    raised says whether the repository is as it was."""
    undo = Undo()
    try:
        yield undo
    except BaseException as exc:
        failed = undo.undo()
        if not failed:
            raise
        why = exc.message if isinstance(exc, TritongenError) else str(exc) or type(exc).__name__
        raise TritongenError(
            f"installing into {repo} failed ({one_line(why)}) and {len(failed)} step(s) could not be undone: "
            f"{failed[0]}",
            "check the paths named and their permissions, then rebuild with --force",
            details="\n".join(failed),
        ) from exc


def install_model(staged_model: Path, plan: InstallPlan, trash: Path, undo: Undo | None = None) -> Path:
    """Move a staged model folder into the repository. ``trash`` is a folder inside the staging area. Within
    :func:`installing`, pass its ``undo``: a later failure in the block undoes this install too."""
    if undo is None:
        with installing(plan.repo) as own:
            return install_model(staged_model, plan, trash, own)
    _refuse_links(plan.repo, plan.model_dir)  # again: a link may have appeared while the model was exported
    _normalise_modes(staged_model)
    if plan.mode == "new":
        undo.rename(staged_model, plan.model_dir)
    elif plan.mode == "replace":
        undo.rename(plan.model_dir, trash / "previous")
        undo.rename(staged_model, plan.model_dir)
    else:  # new version beside the existing ones: the version folder first (one rename: it appears whole), then
        # shared files, each replaced in one step, so a server polling the repository never sees one missing
        undo.rename(staged_model / str(plan.version), plan.model_dir / str(plan.version))
        for item in sorted(staged_model.iterdir()):
            swap_into_place(item, plan.model_dir / item.name, trash, undo)
    return plan.model_dir


RENAME_EXCHANGE = 2  # linux/fs.h
AT_FDCWD = -100


def swap_into_place(new: Path, target: Path, trash: Path, undo: Undo | None = None) -> None:
    """Put ``new`` at ``target``, the folder or file there before going to ``trash``. A reader sees the old one or
    the new one, never neither: files are replaced by one rename, folders exchanged by one
    ``renameat2(RENAME_EXCHANGE)`` (Linux; elsewhere, or on a file system without it, two renames)."""
    undo = undo or Undo()
    if target.is_dir() and not target.is_symlink():
        if undo.exchange(new, target):
            undo.rename(new, trash / target.name)  # ``new`` now holds what was at ``target``
            return
        undo.rename(target, trash / target.name)
        undo.rename(new, target)
        return
    undo.replace_file(new, target, trash / target.name)


def exchange_paths(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the system cannot (then nothing changed)."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))
