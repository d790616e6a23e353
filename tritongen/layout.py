"""Where things are: every repository, model-folder and artifact name tritongen and Triton use, version parsing,
and tritongen's cache. The ground floor of the package: it imports nothing from tritongen but ``errors`` and
``names``, so every stage can import it.

A model folder::

    <repo>/<model>/config.pbtxt
    <repo>/<model>/labels.txt                     (classifiers: LABELS_FILENAME)
    <repo>/<model>/warmup/                         (warm-up request data: WARMUP_DIR)
    <repo>/<model>/tritongen-rollout.json          (ROLLOUT_RECORD_NAME: tritongen rollout's record; Triton never
                                                    reads it, verify checks its form)
    <repo>/<model>/tritongen-rollout.lock          (ROLLOUT_LOCK_NAME: held while a rollout runs; same treatment)
    <repo>/<model>/<version>/model.onnx | model.py | model.plan
    <repo>/<model>/<version>/tritongen/            (ARTIFACT_DIR: tritongen's own files, Triton ignores them)
        manifest.json  samples.npz  reference_outputs.npz  engine.json  model.onnx (tensorrt target)
    <repo>/.tritongen-signature.sig                (SIGNATURE_NAME)
"""

from __future__ import annotations

import itertools
import os
import re
import stat
from pathlib import Path

from .errors import TritongenError
from .files import leads_through_loop, walk
from .names import shown, with_suggestion

CONFIG_NAME = "config.pbtxt"
MAX_CONFIG_BYTES = 4 << 20  # a config.pbtxt tritongen reads: Triton configs are a few KiB (ensembles: tens)
LABELS_FILENAME = "labels.txt"  # written beside config.pbtxt when the spec has labels
WARMUP_DIR = "warmup"  # Triton reads model_warmup input_data_file from <model>/warmup/
NON_VERSION_FOLDERS = frozenset({WARMUP_DIR, "initial_state", "configs"})  # Triton skips these in a model folder

ARTIFACT_DIR = "tritongen"  # inside each version folder
MANIFEST_NAME = "manifest.json"
SAMPLES_NAME = "samples.npz"
TOKENIZED_SAMPLES_NAME = "tokenized_sentences.npz"  # a text ensemble's model step: its sample sentences, tokenized
REFERENCE_NAME = "reference_outputs.npz"
ENGINE_PLAN_NAME = "engine.json"  # what `tritongen engine` needs to build the plan (tensorrt target)
PREPARED_ONNX = "model.onnx"  # inside <version>/tritongen/ for the tensorrt target
PLAN_FILENAME = "model.plan"
TIMING_CACHE_NAME = "timing.cache"

STAGING_PREFIX = ".tritongen-staging-"  # a build's temporary folder beside (or inside) the repository
SIGNATURE_NAME = ".tritongen-signature.sig"
ROLLOUT_RECORD_NAME = "tritongen-rollout.json"  # beside config.pbtxt: which version is live, the rollout history
ROLLOUT_RECORD_MAX_BYTES = 1 << 20
ROLLOUT_LOCK_NAME = "tritongen-rollout.lock"  # beside config.pbtxt while a rollout/rollback runs: its holder
ROLLOUT_LOCK_TOOL = "tritongen-rollout-lock"
ROLLOUT_LOCK_MAX_BYTES = 4096

CACHE_ENV = "TRITONGEN_CACHE_DIR"


# What Triton's ``VersionsToLoad`` reads from a sub-folder's name: ``std::stoll``, i.e. C ``isspace`` white space,
# a sign and the leading ASCII digits, the rest ignored
_STOLL = re.compile("[ \t\n\x0b\x0c\r]*([+-]?[0-9]+)")
_INT64 = range(-(2**63), 2**63)
MAX_VERSION = 2**63 - 1  # the highest version Triton reads from a folder name (a signed 64-bit integer)


def triton_version(name: str) -> int | None:
    """The version number Triton reads from the name of a model folder's sub-folder (core ``VersionsToLoad``), or
    None for a folder it does not count: one it skips (``warmup/``, ``initial_state/``), a name of more than one
    character starting with ``0`` (ignored with a warning) and one ``std::stoll`` cannot convert. Otherwise it is
    what ``std::stoll`` reads: white space, a sign and the leading digits, so ``9x`` is version 9 and ``-1`` is
    -1. Triton then loads version N from the folder named ``N``. (A number past 64 bits makes ``std::stoll``
    throw an error Triton does not catch.) The one owner of that rule: :func:`version_numbers` and
    :func:`misread_version_folders` apply it."""
    if name in NON_VERSION_FOLDERS or (len(name) > 1 and name.startswith("0")):
        return None
    match = _STOLL.match(name)
    return int(match.group(1)) if match else None


def version_from_api(name: object) -> int | None:
    """The version number a server's answer names (model metadata's ``versions``, ``"3"``), or None for one that is
    no version: Triton's versions are int64, so 1 to 19 ASCII digits, at most :data:`MAX_VERSION`. ``str.isdigit``
    takes ``"²"``, which ``int()`` refuses, and ``int()`` refuses over 4300 digits: both were a traceback."""
    if isinstance(name, int) and not isinstance(name, bool):
        return name if 0 <= name <= MAX_VERSION else None
    if not (isinstance(name, str) and name.isascii() and name.isdigit() and len(name) <= len(str(MAX_VERSION))):
        return None
    number = int(name)
    return number if number <= MAX_VERSION else None


def _sub_folders(model_dir: Path) -> list[str]:
    model_dir = Path(model_dir)
    return sorted(p.name for p in model_dir.iterdir() if p.is_dir()) if model_dir.is_dir() else []


def version_of_folder(name: str) -> int | None:
    """The version a sub-folder of a model folder named ``name`` holds, or None where it is no version folder: its
    name must be the number :func:`triton_version` reads from it, without a sign, within 64 bits ("0" is a version;
    "01", "9x" and "\u00b2" are not: ``str.isdigit`` takes the last, which ``int()`` refuses). Every loop over version
    folders filters with this."""
    v = triton_version(name)
    return v if v is not None and name == str(v) and v >= 0 and v in _INT64 else None


def version_numbers(model_dir: Path) -> list[int]:
    """Version folders Triton would consider, ascending (:func:`version_of_folder`). Empty when ``model_dir`` is not a
    folder."""
    return sorted(v for name in _sub_folders(model_dir) if (v := version_of_folder(name)) is not None)


def misread_version_folders(model_dir: Path) -> list[tuple[str, int]]:
    """``(name, version)`` for each sub-folder of ``model_dir`` that Triton counts as a version but that is not a
    version folder (:func:`version_numbers`): ``9x`` (Triton loads version 9 from ``9/``, or fails to: not from
    ``9x/``), `` 7``, ``+3``, a negative version or one past 64 bits."""
    out = []
    for name in _sub_folders(model_dir):
        version = triton_version(name)
        if version is not None and (name != str(version) or version < 0 or version not in _INT64):
            out.append((name, version))
    return out


def misread_version_problem(model: str, folder: str, version: int) -> tuple[str, str]:
    """(problem, fix) for a folder of :func:`misread_version_folders` (validate and verify say the same)."""
    where = f"folder '{shown(folder)}' of model '{shown(model)}'"
    if version not in _INT64:
        return (
            f"{where} starts with a number Triton reads as a version but cannot hold in 64 bits (std::stoll "
            "fails on it)",
            "rename it to a version number (1, 2, ...) or remove it",
        )
    return (
        f"{where} is read by Triton as version {version} (it reads the sign and leading digits of a folder's "
        f"name), so Triton loads version {version} from {shown(model)}/{version}/, not from this folder",
        f"rename it to {version} or remove it" if version >= 0 else "rename it to a version number or remove it",
    )


def artifact_dir(model_dir: Path, version: int) -> Path:
    """``<model>/<version>/tritongen/``: the build's manifest, samples and references."""
    return Path(model_dir) / str(version) / ARTIFACT_DIR


def manifest_path(model_dir: Path, version: int) -> Path:
    return artifact_dir(model_dir, version) / MANIFEST_NAME


# The first line of a config.pbtxt that tritongen tune wrote (a build adding a version replaces it: it says so)
TUNED_CONFIG_HEADER = "# Tuned by tritongen tune: see <version>/tritongen/tune.json for the measurements.\n"


def is_tuned_config(path: Path) -> bool:
    """Whether ``path`` is a config.pbtxt written by tritongen tune (False where it cannot be read)."""
    try:
        return config_text(path).startswith(TUNED_CONFIG_HEADER)
    except TritongenError:
        return False


def has_manifest(model_dir: Path) -> bool:
    """Whether a build of tritongen wrote the model (a version holds its manifest, and with it saved samples)."""
    return any(model_dir.glob(f"*/{ARTIFACT_DIR}/{MANIFEST_NAME}"))


def config_text(path: Path) -> str:
    """A ``config.pbtxt``'s text: a regular file of at most :data:`MAX_CONFIG_BYTES`, read with one open, UTF-8;
    anything else raises :class:`TritongenError`. Every reader of a config goes through it."""
    from .files import FileTooLargeError, read_problem, regular_bytes, size_text

    try:
        raw = regular_bytes(path, MAX_CONFIG_BYTES)
    except FileTooLargeError:
        raise TritongenError(
            f"{path} is over {size_text(MAX_CONFIG_BYTES)}, far more than a model configuration holds",
            "write the model's settings only (a Triton config is a few KiB); keep data in files beside it",
        ) from None
    except OSError as exc:
        raise TritongenError(f"{path} {read_problem(exc)}", f"pass a readable {CONFIG_NAME}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TritongenError(f"{path} is not UTF-8 text", "save it as UTF-8 (protobuf text format)") from None


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` is one model's folder (``REPO/NAME``: it holds ``config.pbtxt``), not a repository."""
    return (Path(path) / CONFIG_NAME).is_file()


def check_not_model_folder(repo: Path) -> None:
    """Refuse a model folder given where its repository goes (``repo/pnet`` for ``repo``): read as a repository, its
    version folders look like models without a config, and the fixes offered for that would be wrong."""
    if is_model_folder(repo):
        raise TritongenError(
            f"{repo} is a model folder (it holds {CONFIG_NAME}), not a model repository",
            f"pass the repository that holds it: {Path(repo).resolve().parent}",
        )


def latest_artifacts(repo: Path, name: str, inputs_option: str = "--input-file") -> tuple[Path, int]:
    """The artifact folder of model ``name``'s newest version in ``repo``, and that version (``inputs_option``:
    the command's option that sends other inputs, named in the fix when there is no build)."""
    versions = version_numbers(Path(repo) / name)
    if not versions:
        check_not_model_folder(repo)
        fix = f"pass --repo with the repository it was built into, or {inputs_option} with inputs"
        if (Path(repo) / name).is_dir():
            raise TritongenError(
                f"no build of model '{name}' in {repo} (its folder holds no version folder such as 1/)",
                f"rebuild it with tritongen build --force, or pass {inputs_option} with inputs",
            )
        models = repository_models(repo)
        raise TritongenError(f"no build of model '{name}' in {repo}", with_suggestion(name, models, fix))
    return artifact_dir(Path(repo) / name, versions[-1]), versions[-1]


def repository_models(repo: Path, limit: int = 1000) -> list[str]:
    """The models of the repository ``repo``: its folders that hold a config.pbtxt (at most ``limit`` looked at; no
    hidden ones), sorted; none where ``repo`` is no readable folder. What every did-you-mean for a model name and
    every "models there: ..." list reads."""
    try:
        found = (p for p in Path(repo).glob(f"*/{CONFIG_NAME}") if not p.parent.name.startswith(".") and p.is_file())
        return sorted(p.parent.name for p in itertools.islice(found, limit))
    except OSError:
        return []


def cache_root() -> Path:
    """tritongen's cache: ``$TRITONGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/tritongen``, else ``~/.cache/tritongen``;
    absolute (a server started from another folder is given its paths)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser().absolute()
    return (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "tritongen").absolute()


def top_level_problems(repo: Path) -> list[str]:
    """Entries at the top of ``repo`` that no model check reads and Triton may still follow: a symbolic link that is
    no folder now (to a file, or dangling: Triton loads whatever folder it leads to when it looks, which may be
    there by then), and special files (FIFOs, sockets, devices). Links to folders are model folders'
    (:func:`link_problems`)."""
    problems = []
    for entry in sorted(Path(repo).iterdir()):
        try:
            mode = entry.lstat().st_mode
        except FileNotFoundError:  # gone since the listing (a build's staging folder)
            continue
        if stat.S_ISLNK(mode) and not entry.is_dir():
            problems.append(
                f"'{shown(entry.name)}' at the top of the repository is a symbolic link (to "
                f"{shown(os.readlink(entry), 120)}): Triton would load what it leads to when it looks, unchecked"
            )
        elif not (stat.S_ISLNK(mode) or stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            problems.append(f"'{shown(entry.name)}' at the top of the repository is a special file (not a file)")
    return problems


TOP_LEVEL_FIX = "remove it, or put the folder (or file) itself there, not a link to it"


def link_problems(repo: Path, model_dir: Path) -> list[str]:
    """Symbolic links in ``model_dir`` that Triton (or a build) would follow: the folder itself or a version
    folder being a link, or any link inside resolving outside ``repo``. Empty when there are none."""
    name = model_dir.name
    if model_dir.is_symlink():
        return [f"model folder '{shown(name)}' is a symbolic link (to {shown(os.readlink(model_dir), 120)})"]
    root = Path(repo).resolve()
    problems = []
    for folder, dirs, files in walk(model_dir, depth=1):  # links are not followed
        for entry in sorted(dirs + files):
            path = Path(folder) / entry
            if not path.is_symlink():
                continue
            rel = path.relative_to(model_dir).as_posix()
            where = f"{shown(name)}/{shown(rel)}"
            if leads_through_loop(path):
                problems.append(f"'{where}' is a symbolic link that loops (to {shown(os.readlink(path), 120)})")
                continue
            target = path.resolve()
            if Path(folder) == model_dir and entry.isdigit():  # any digit name, wider than Triton's: refused
                problems.append(f"version folder '{where}' is a symbolic link (to {shown(os.readlink(path), 120)})")
            elif target != root and root not in target.parents:
                problems.append(
                    f"'{where}' is a symbolic link leading outside the repository (to {shown(target, 120)})"
                )
    return problems
