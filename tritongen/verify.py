"""Integrity: everything Triton would load from a repository is a file some build's manifest vouches for.

Triton loads every folder of the repository as a model (hidden names included), the newest version folder
(or those its version policy names), and whatever the backends read or import from the model and version
folders. So ``verify`` walks every model folder and every file in it:

- a folder whose name starts with a dot is refused (Triton would load it; tritongen does not build such names);
- every numeric version folder needs its own manifest (``<version>/tritongen/manifest.json``), and a folder
  Triton reads as a version though it is not one (``9x``: Triton reads the leading digits and loads version 9
  from ``9/``, or fails to) is a problem (:func:`~tritongen.layout.misread_version_folders`);
- each version folder's files are checked against that version's manifest, the files shared by all versions
  (``config.pbtxt``, ``warmup/``, ``labels.txt``) against the newest manifest that lists them (a
  ``--new-version`` build rewrites them);
- a file no manifest lists, a symlink, or anything but a regular file is a problem;
- a model without any manifest is a problem unless named in ``allow_unverified`` (hand-written models);
- in every model, hand-written ones too, a config setting that points Triton at files outside the model folder
  (a Python environment, an operation library, TensorRT caches and plugins: :mod:`tritongen.config_paths`) is a
  problem, and every file in a ``__pycache__/`` folder must be the bytecode of the source beside it
  (:mod:`tritongen.bytecode`): the signature leaves those folders out, since the server writes them after signing;
- one file no manifest lists is tritongen's own: ``<model>/tritongen-rollout.json``, the record ``tritongen rollout``
  keeps (which version is live). Triton reads no such file (it reads ``config.pbtxt``, the version folders and the
  files the config names, and the config is checked by its manifest); verify still requires it to be a regular
  file of at most 1 MiB holding a JSON object written by tritongen for this model.

Without a key this proves consistency with the manifests, not their origin: whoever can write the repository
can rewrite a manifest too. :mod:`tritongen.signing` adds the origin (``--public-key``).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .bytecode import FIX as BYTECODE_FIX
from .bytecode import PYCACHE, bytecode_problem, cached_source
from .config_paths import FIX as CONFIG_PATHS_FIX
from .config_paths import outside_path_problems
from .errors import TritongenError
from .files import json_from_bytes, walk
from .layout import (
    ARTIFACT_DIR,
    CONFIG_NAME,
    MANIFEST_NAME,
    ROLLOUT_LOCK_MAX_BYTES,
    ROLLOUT_LOCK_NAME,
    ROLLOUT_LOCK_TOOL,
    ROLLOUT_RECORD_MAX_BYTES,
    ROLLOUT_RECORD_NAME,
    TOP_LEVEL_FIX,
    link_problems,
    misread_version_folders,
    misread_version_problem,
    top_level_problems,
    version_numbers,
)
from .manifest import load_manifest, sha256_regular_file
from .names import one_line
from .validate import HIDDEN_FOLDER_FIX, check_repository_folder, config_from_file, hidden_folder_problem

_FIX_CHANGED = "rebuild the model with tritongen build --force, or restore the original file"
_FIX_UNLISTED = (
    "remove it, or rebuild the model with tritongen build --force (every file in a model folder must be "
    "listed in a manifest)"
)
_FIX_LINK = "replace the link with what it points to: tritongen never writes links, and Triton follows them"


@dataclass(frozen=True)
class VerifyReport:
    repo: Path
    checked_files: int
    problems: tuple[str, ...]
    unverified_models: tuple[str, ...] = field(default=())
    fixes: tuple[str, ...] = field(default=())  # one per problem
    signature: Path | None = None  # checked against a public key first, when one was given
    # a signature file beside the repository that nobody checked (verified without a public key): see summary()
    unchecked_signature: Path | None = None
    # "<model>/<path>" -> the sha256 of the bytes checked against the manifest (verified_config_text holds a later
    # read to them)
    digests: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        """What ``tritongen verify`` prints (:meth:`summary`); every result of the API has ``text()``."""
        return self.summary()

    def summary(self) -> str:
        lines = [
            f"{self.checked_files} files match their manifests in {self.repo}"
            if self.ok
            else f"{len(self.problems)} integrity problem(s) in {self.repo}:"
        ]
        lines += [f"  {p}" for p in self.problems]
        if self.signature is not None:
            lines.append(f"signature {self.signature} is valid for the public key: the files are as signed")
        if self.unverified_models:
            names = ", ".join(self.unverified_models)
            lines.append(f"no manifest (allowed with --allow-unverified, not verified): {names}")
        if self.unchecked_signature is not None:
            lines.append(unchecked_signature_line(self.unchecked_signature))
        return "\n".join(lines)


def unchecked_signature_line(path: Path) -> str:
    """The summary's last line where the repository has a signature at ``path`` that was not checked."""
    return (
        f"hint: signature {path} was not checked (no --public-key): pass --public-key with the signer's public key "
        "to check that the files are as signed"
    )


class _Findings:
    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []
        self.checked = 0
        self.digests: dict[str, str] = {}

    def add(self, problem: str, fix: str = _FIX_CHANGED) -> None:
        self.problems.append((printable(problem), printable(fix)))


def printable(text: str) -> str:
    """``text`` with control and other unprintable characters escaped: file names are the repository's, and a
    newline in one must not start a line of its own."""
    return text if text.isprintable() else "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _walk(model_dir: Path, found: _Findings) -> dict[str, bool]:
    """Every entry under ``model_dir`` (relative POSIX path -> is a regular file); links and special files are
    problems (and not descended into)."""
    entries: dict[str, bool] = {}

    def unreadable(exc: OSError) -> None:
        found.add(f"{model_dir.name}: cannot read folder {exc.filename} ({exc.strerror})", "check its permissions")

    for dirpath, dirnames, filenames in walk(model_dir, onerror=unreadable, depth=1):
        here = Path(dirpath)
        for name in list(dirnames):
            if (here / name).is_symlink():
                dirnames.remove(name)
                filenames.append(name)
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(model_dir).as_posix()
            try:
                mode = path.lstat().st_mode
            except OSError as exc:
                found.add(
                    f"{model_dir.name}/{rel} cannot be read ({exc.strerror or exc})",
                    "check the file and its permissions",
                )
                continue
            if stat.S_ISLNK(mode):
                found.add(f"{model_dir.name}/{rel} is a symbolic link", _FIX_LINK)
            elif not stat.S_ISREG(mode):
                found.add(f"{model_dir.name}/{rel} is not a regular file", "remove it from the model folder")
            entries[rel] = stat.S_ISREG(mode)
    return entries


def _manifests(model_dir: Path, versions: list[int], found: _Findings) -> dict[int, dict[str, str] | None]:
    """The ``files`` of each version's manifest (None: the manifest is there but unreadable)."""
    out: dict[int, dict[str, str] | None] = {}
    for version in versions:
        path = model_dir / str(version) / ARTIFACT_DIR / MANIFEST_NAME
        if not os.path.lexists(path):
            continue
        try:
            files = load_manifest(path, model_dir).files
        except TritongenError as err:
            found.add(f"{model_dir.name}: {err.problem}", err.fix)
            out[version] = None
            continue
        for rel in files:
            head = rel.split("/", 1)[0]
            if head.isdigit() and head != str(version):  # any digit name (01, ²): wider than a version, refused
                found.add(f"{model_dir.name}: the manifest of version {version} lists {rel}, a file of another version")
                out[version] = None
                break
        else:
            out[version] = files
    return out


def _expected(manifests: dict[int, dict[str, str] | None], newest: int) -> tuple[dict[str, str], set[str]]:
    """(relative path -> the sha256 its file must have, the paths that must be there): a version folder's files from
    that version's manifest, the files shared by all versions from the newest manifest that lists them."""
    expected: dict[str, str] = {}
    required: set[str] = set()
    for version, files in sorted(manifests.items(), reverse=True):  # shared files: the newest manifest listing them
        for rel, digest in (files or {}).items():
            in_version = rel.split("/", 1)[0].isdigit()  # each version's own file, required (the wider rule)
            if in_version or rel not in expected:
                expected[rel] = digest
                if in_version or version == newest:
                    required.add(rel)
    return expected, required


def manifest_digests(model_dir: Path) -> dict[str, str] | None:
    """What :func:`verify_repository` holds the files of ``model_dir`` to: relative path -> sha256, as the
    manifests list them (a version folder's files from its manifest, the shared files from the newest manifest
    listing them); None when the model has no manifest (a model allowed unverified). A manifest that cannot be
    read raises :class:`TritongenError`. For whoever reads the files after ``verify``: hashing the bytes it read
    against these proves that what it acts on is what was verified."""
    versions = version_numbers(model_dir)
    found = _Findings()
    manifests = _manifests(model_dir, versions, found)
    if found.problems:
        raise TritongenError(*found.problems[0])
    return _expected(manifests, versions[-1])[0] if manifests else None


def _check_model(model_dir: Path, allow_unverified: set[str], found: _Findings) -> bool:
    """Check one model folder; False if it has no manifest and is allowed to be unverified."""
    name = model_dir.name
    _check_config_paths(model_dir, found)
    versions = version_numbers(model_dir)
    manifests = _manifests(model_dir, versions, found)
    if not manifests:
        if name in allow_unverified:
            for problem in link_problems(model_dir.parent, model_dir):  # Triton follows these, unchecked by us too
                found.add(problem, "copy the files into the model folder (no links out of the repository)")
            _check_unverified_bytecode(model_dir, found)
            return False
        if not versions:  # nothing Triton could load, and no manifest because its version folders are gone
            found.add(
                f"model '{name}' has no version folder (1/, 2/, ...), so Triton cannot load it",
                f"restore its version folder, rebuild it with tritongen build --force, or remove {name}/",
            )
            return True
        found.add(
            f"model '{name}' has no manifest (not built by tritongen), so Triton would load it unchecked",
            f"rebuild it with tritongen build, or pass --allow-unverified {name} if you wrote it by hand",
        )
        return True
    for folder, version in misread_version_folders(model_dir):  # Triton counts it: it decides what Triton loads
        found.add(*misread_version_problem(name, folder, version))
    for version in versions:
        if version not in manifests:
            found.add(
                f"version folder {name}/{version} has no manifest (added by hand?), and Triton loads it "
                "(by default the newest version)",
                f"remove {name}/{version}, or build it with tritongen build --new-version",
            )
    expected, required = _expected(manifests, versions[-1])
    entries = _walk(model_dir, found)
    version_names = {str(v): v for v in versions}
    shared_unknown = versions[-1] in manifests and manifests[versions[-1]] is None  # the newest manifest is bad
    for rel, regular in sorted(entries.items()):
        head = rel.split("/", 1)[0]
        if (
            not regular
            or (head in version_names and manifests.get(version_names[head]) is None)
            or (head not in version_names and shared_unknown)
        ):
            continue  # a link or special file, or files of a manifest already reported (missing or bad)
        if head in version_names and rel == f"{head}/{ARTIFACT_DIR}/{MANIFEST_NAME}":
            continue
        if rel == ROLLOUT_RECORD_NAME and rel not in expected:
            _check_rollout_record(model_dir, found)
            continue
        if rel == ROLLOUT_LOCK_NAME and rel not in expected:
            _check_rollout_lock(model_dir, found)
            continue
        shown = f"{name}/{rel}"
        if rel not in expected and (cached := cached_source(rel)) and cached[0] in expected:
            _check_bytecode(model_dir, rel, cached, expected[cached[0]], found)
            continue
        if rel not in expected:
            found.add(
                f"{shown} is not listed in any manifest, and Triton may load it (a file beside a model can "
                "run as code)",
                _FIX_UNLISTED,
            )
            continue
        try:
            digest = sha256_regular_file(model_dir / rel)
        except OSError as exc:
            found.add(f"{shown} cannot be read ({exc.strerror or exc})")
            continue
        if digest != expected[rel]:
            found.add(f"{shown} does not match its manifest (sha256 differs): the file was changed or swapped")
        else:
            found.checked += 1
            found.digests[f"{name}/{rel}"] = digest
    for rel in sorted(required - set(entries)):
        found.add(f"{name}/{rel} is missing")
    return True


def _check_config_paths(model_dir: Path, found: _Findings) -> None:
    """Settings of the model's config that point Triton at files outside the folder (:mod:`tritongen.config_paths`),
    for every model, hand-written ones included: what they name is in no manifest and under no signature. A config
    that tritongen cannot read or parse is a problem: Triton may load it all the same (a non-UTF-8 byte in a
    comment, a config above tritongen's size bound, an enum number without a name), with settings unchecked."""
    path = model_dir / CONFIG_NAME
    if path.is_symlink():  # Triton reads what it leads to, which this check would not have read
        found.add(
            f"the config of model '{model_dir.name}' is a symbolic link (to {one_line(os.readlink(path))[:120]})",
            f"put the file itself at {model_dir.name}/{CONFIG_NAME}",
        )
        return
    if not path.is_file():
        return
    try:
        config = config_from_file(path)
    except TritongenError as err:
        found.add(
            f"the config of model '{model_dir.name}' cannot be checked for settings that read files outside its "
            f"folder ({err.problem})",
            "fix the config.pbtxt (tritongen validate names what is wrong), or rebuild the model",
        )
        return
    for problem in outside_path_problems(config, model_dir.name):
        found.add(problem, CONFIG_PATHS_FIX)


def _bounded_bytes(path: Path, max_bytes: int) -> bytes | None:
    """The bytes of the regular file ``path`` (not followed if a link), or None if it is not one or holds more
    than ``max_bytes``: one open, so the size checked is the size read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, left = [], max_bytes + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        return data if len(data) <= max_bytes else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _check_rollout_record(model_dir: Path, found: _Findings) -> None:
    """``<model>/tritongen-rollout.json``: tolerated unlisted only in the form tritongen writes it."""
    path = model_dir / ROLLOUT_RECORD_NAME
    fix = f"remove {model_dir.name}/{ROLLOUT_RECORD_NAME} (tritongen rollout writes it again; the server is unchanged)"
    from .rollout_format import record_from_data  # rollout's own reading: what it refuses, this does

    why = "it cannot be read"
    try:
        text = _bounded_bytes(path, ROLLOUT_RECORD_MAX_BYTES)
        if text is not None:
            record_from_data(json_from_bytes(text), model_dir.name)
            found.checked += 1
            return
    except ValueError as exc:
        why = one_line(str(exc))[:120]
    found.add(
        f"{model_dir.name}/{ROLLOUT_RECORD_NAME} is not a rollout record tritongen wrote for this model ({why})", fix
    )


def _check_rollout_lock(model_dir: Path, found: _Findings) -> None:
    """``<model>/tritongen-rollout.lock``: tolerated unlisted only empty or naming its holder, as rollout writes it
    (a run holds it; a killed run leaves it, and the next run takes it over)."""
    path = model_dir / ROLLOUT_LOCK_NAME
    try:
        text = _bounded_bytes(path, ROLLOUT_LOCK_MAX_BYTES)
        data = json_from_bytes(text) if text else ({} if text == b"" else None)
    except ValueError:
        data = None
    ours = isinstance(data, dict) and data.get("tool") == ROLLOUT_LOCK_TOOL and data.get("model") == model_dir.name
    if data == {} or ours:
        found.checked += 1
    else:
        found.add(
            f"{model_dir.name}/{ROLLOUT_LOCK_NAME} is not a rollout lock tritongen wrote for this model",
            f"remove {model_dir.name}/{ROLLOUT_LOCK_NAME} when no rollout of '{model_dir.name}' is running",
        )


def _check_bytecode(
    model_dir: Path, rel: str, cached: tuple[str, str, int], source_sha256: str, found: _Findings
) -> None:
    """A Python bytecode cache file beside a listed source (the Python backend writes them on load)."""
    source, tag, optimize = cached
    # the names the server compiled it under: this path, or the repository mounted at /models by `serve --docker`
    path = model_dir / source
    names = [os.path.abspath(path), str(path.resolve()), f"/models/{model_dir.name}/{source}"]
    problem = bytecode_problem(
        model_dir / rel, model_dir / source, source_sha256, tag, optimize, names, f"/{model_dir.name}/{source}"
    )
    if problem:
        found.add(f"{model_dir.name}/{rel} {problem}", BYTECODE_FIX)
    else:
        found.checked += 1


def _check_unverified_bytecode(model_dir: Path, found: _Findings) -> None:
    """The bytecode caches of a model allowed unverified. Its files are the user's (and the signature's, which
    leaves ``__pycache__/`` out: the server writes it after signing), but Python runs a cache instead of its
    source, so each must be its source as it is now, compiled; anything else in a cache folder is a problem."""
    for dirpath, dirnames, _ in walk(model_dir, depth=1):
        if PYCACHE not in dirnames:
            continue
        dirnames.remove(PYCACHE)
        folder = Path(dirpath) / PYCACHE
        shown = f"{model_dir.name}/{folder.relative_to(model_dir).as_posix()}"
        try:
            if folder.is_symlink():
                found.add(f"{shown} is a symbolic link", _FIX_LINK)
                continue
            names = sorted(os.listdir(folder))
        except OSError as exc:
            found.add(f"{shown} cannot be read ({exc.strerror or exc})", BYTECODE_FIX)
            continue
        for name in names:
            rel = (folder / name).relative_to(model_dir).as_posix()
            cached = cached_source(rel)
            try:
                regular = stat.S_ISREG((folder / name).lstat().st_mode)
                digest = sha256_regular_file(model_dir / cached[0]) if regular and cached else None
            except OSError:
                digest = None
            if cached is None or digest is None:
                found.add(
                    f"{model_dir.name}/{rel} is not the bytecode cache of a Python source beside it, and Python "
                    "may run it",
                    BYTECODE_FIX,
                )
            else:
                _check_bytecode(model_dir, rel, cached, digest, found)


def verify_repository(repo: Path, *, allow_unverified: Iterable[str] = ()) -> VerifyReport:
    """Check every model folder of ``repo`` (see the module docstring); problems are collected, not raised."""
    repo = Path(repo)
    check_repository_folder(repo)
    allowed = set(allow_unverified)
    found = _Findings()
    unverified: list[str] = []
    for problem in top_level_problems(repo):
        found.add(problem, TOP_LEVEL_FIX)
    folders = [entry for entry in sorted(repo.iterdir()) if entry.is_dir()]
    if not folders:  # files at the top of the repository are not loaded by Triton (the signature lives there)
        found.add(
            f"model repository {repo} holds no model folders",
            "pass the folder that holds one sub-folder per model (tritongen build creates it)",
        )
    stray = sorted(allowed - {entry.name for entry in folders})
    if stray:  # first: a typo, or a model since removed (the model it meant then fails for want of a manifest)
        models = ", ".join(one_line(entry.name) for entry in folders) or "none"
        found.add(
            f"--allow-unverified names {', '.join(repr(one_line(n)) for n in stray)}, which is no model folder of "
            f"{repo} (its models: {models})",
            "name a model folder of the repository written by hand, or leave the name out",
        )
    for entry in folders:
        if entry.is_symlink():
            found.add(f"model folder {entry.name} is a symbolic link", _FIX_LINK)
        elif entry.name.startswith("."):
            found.add(hidden_folder_problem(entry.name), HIDDEN_FOLDER_FIX)
        elif not _check_model(entry, allowed, found):
            unverified.append(entry.name)
    # a stale bytecode cache is named after what was changed, whatever the order of the files
    problems = sorted(found.problems, key=lambda problem: problem[1] == BYTECODE_FIX)
    return VerifyReport(
        repo=repo,
        checked_files=found.checked,
        problems=tuple(p for p, _ in problems),
        unverified_models=tuple(unverified),
        fixes=tuple(f for _, f in problems),
        digests=found.digests,
    )


def verified_config_text(report: VerifyReport, model_dir: Path) -> str:
    """``model_dir``'s config.pbtxt read once, held to the digest ``report``'s check found for it: what the caller
    parses is what was verified, not a file swapped in after the check, nor a folder the check did not see (a model
    the check let through unverified, ``--allow-unverified``, has no digest: it is read as it is)."""
    from .layout import config_text

    text = config_text(model_dir / CONFIG_NAME)
    expected = report.digests.get(f"{model_dir.name}/{CONFIG_NAME}")
    if expected is None and model_dir.name not in report.unverified_models:  # a folder the check never saw
        raise TritongenError(
            f"model folder {printable(model_dir.name)} was not there when the repository was verified (it appeared "
            "or was moved back since)",
            "run again once nothing writes to the repository (tritongen verify names what changed)",
        )
    if expected is not None and hashlib.sha256(text.encode("utf-8")).hexdigest() != expected:
        raise TritongenError(
            f"{printable(model_dir.name)}/{CONFIG_NAME} changed after it was verified (its sha256 no longer matches "
            "its manifest)",
            "run again once nothing writes to the repository (tritongen verify names what changed)",
        )
    return text


def check_held_to_signature(report: VerifyReport, signed: Mapping[str, str] | None) -> None:
    """Refuse a verified file whose digest is not the one the repository's signature gives it (``signed``: path in
    the repository -> sha256, from :func:`tritongen.signing.signed_digests`; None: no signature to hold to). The
    signature was checked first, then the manifests: a config.pbtxt and its manifest rewritten between the two
    passed both, and a bundle's thresholds were made from the rewritten config."""
    if signed is None:
        return
    changed = sorted(path for path, digest in report.digests.items() if signed.get(path) != digest)
    if changed:
        raise TritongenError(
            f"{printable(changed[0])} changed after the repository's signature was checked"
            + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""),
            "run again once nothing writes to the repository (tritongen verify --public-key names what changed)",
        )


def check_verified(repo: Path, *, allow_unverified: Iterable[str] = ()) -> VerifyReport:
    """:func:`verify_repository`, raising :class:`TritongenError` naming the first problem. (The signature is
    checked before it by :func:`tritongen.verify`, the public API, with ``public_key``.)"""
    report = verify_repository(repo, allow_unverified=allow_unverified)
    if not report.ok:
        more = len(report.problems) - 1
        raise TritongenError(
            report.problems[0] + (f" (and {more} more)" if more else ""),
            report.fixes[0],
            details="\n".join(report.problems) if more else "",
        )
    return report
