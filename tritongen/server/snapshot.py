"""The copy of a repository that a checked server loads: the checks and Triton read the same bytes.

``serve`` checks a repository (signature, Triton's rules, manifests) and then Triton reads it: a file changed on
disk between the two (a second writer, a build into the served repository) would be loaded unchecked. So the
repository is first copied, file by file, into a private folder (mode 0700, in the temp directory) that nothing
else writes; the checks run on the copy and Triton loads the copy. The copy keeps symbolic links as links and
refuses special files, so the checks see what the repository holds (and refuse links as they always do).

:func:`snapshot_from_repository` makes the copy; :func:`with_repository_words` turns a check's message about
the copy back into one about the repository the user named.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import TritongenError

COPY_CHUNK_BYTES = 1 << 20
SNAPSHOT_PREFIX = "tritongen-snapshot-"  # the private folder (in the temp directory) that holds a served copy
SOURCE_NAME = "source.txt"  # in that folder, beside the copy: the path of the repository it copies


def snapshot_root(repo: Path) -> Path:
    """A new private folder for a copy of ``repo``, naming ``repo`` in its :data:`SOURCE_NAME` (what a server
    serving the copy answers from, for those who ask: ``infer --check``)."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX))
    (root / SOURCE_NAME).write_text(str(Path(repo).resolve()))
    return root


def snapshot_source(served: Path) -> Path | None:
    """The repository that the served folder ``served`` is a copy of, or None where it is no such copy."""
    marker = Path(served).parent / SOURCE_NAME
    if not Path(served).parent.name.startswith(SNAPSHOT_PREFIX):
        return None
    try:
        return Path(marker.read_text()[:4096].strip())
    except OSError:
        return None


def snapshot_from_repository(repo: Path, dest: Path) -> Path:
    """Copy every entry of ``repo`` into ``dest`` (created, mode 0700; it must not exist): regular files by
    content (each opened once, without following a link, and checked to be a regular file on that descriptor),
    symbolic links as links, folders as folders. Returns ``dest``. A special file (FIFO, socket, device) is
    refused: Triton could be made to read one, and a copy could not be checked."""
    repo = Path(repo)
    os.mkdir(dest, 0o700)
    for dirpath, dirnames, filenames in os.walk(repo, onerror=_unreadable_folder):
        here = Path(dirpath)
        there = dest / here.relative_to(repo)
        for name in list(dirnames):
            if (here / name).is_symlink():  # copied as a link, not descended into
                dirnames.remove(name)
                filenames.append(name)
            else:
                (there / name).mkdir(mode=0o700)
        for name in filenames:
            _copy_entry(here / name, there / name, repo)
    return dest


def _unreadable_folder(exc: OSError) -> None:
    raise TritongenError(
        f"cannot read folder {exc.filename} of the repository ({exc.strerror or exc})", "check its permissions"
    )


def _copy_entry(source: Path, target: Path, repo: Path) -> None:
    shown = source.relative_to(repo).as_posix()
    try:
        mode = source.lstat().st_mode
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(source), target)  # the checks refuse it, naming it
            return
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise TritongenError(
            f"{shown} in {repo} cannot be read ({exc.strerror or exc})", "check its permissions"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # checked on the descriptor the bytes come from
            raise TritongenError(f"{shown} in {repo} is not a regular file", "remove it from the repository")
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, stat.S_IMODE(info.st_mode) & 0o700)
        try:
            while chunk := os.read(fd, COPY_CHUNK_BYTES):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
        finally:
            os.close(out)
    except OSError as exc:
        raise TritongenError(
            f"{shown} of {repo} could not be copied for serving ({exc.strerror or exc})",
            "free space in the temp directory ($TMPDIR), or check the file",
        ) from None
    finally:
        os.close(fd)


def with_repository_words(error: TritongenError, snapshot: Path, repo: Path) -> TritongenError:
    """``error`` (raised by a check of the copy ``snapshot``) naming ``repo``, the repository the user gave."""
    for attribute in ("problem", "fix", "details"):
        text = getattr(error, attribute)
        setattr(error, attribute, text.replace(str(snapshot), str(repo)))
    error.args = (error.message,)
    return error


# Files in a model folder that tritongen's rollout rewrites and Triton never reads: not a change to load.
_NOT_LOADED = ("tritongen-rollout.json", "tritongen-rollout.lock")


def fingerprint(repo: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every entry under ``repo`` (relative POSIX path -> mode, size, mtime in ns, inode), links not followed; a
    changed, added or removed file changes it. Unreadable folders leave their entries out (the check names them)."""
    entries: dict[str, tuple[int, int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(repo):
        here = Path(dirpath)
        for name in (*dirnames, *filenames):
            path = here / name
            rel = path.relative_to(repo).as_posix()
            if rel.count("/") == 1 and name in _NOT_LOADED:
                continue
            try:
                info = path.lstat()
            except OSError:
                continue
            entries[rel] = (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ino)
    return entries


def changed_models(before: Mapping[str, tuple], after: Mapping[str, tuple]) -> list[str]:
    """The model folders (top-level entries) whose entries differ between two fingerprints, by name."""
    tops = {rel.split("/", 1)[0] for rel in (*before, *after)}

    def of(prints: Mapping[str, tuple], top: str) -> dict[str, tuple]:
        return {rel: v for rel, v in prints.items() if rel == top or rel.startswith(f"{top}/")}

    return sorted(top for top in tops if of(before, top) != of(after, top))


class CheckedPoll:
    """Triton's poll mode, with every change checked before Triton sees it.

    Every ``interval_s`` the repository's :func:`fingerprint` is compared with the one last looked at. Where it
    changed, the whole repository is copied again (:func:`snapshot_from_repository`) and ``check`` runs on that
    copy (signature, validate, verify: what ``serve`` checks at start); only then are the changed model folders
    moved into the served copy, and ``reload`` (model, whether it is still there) has Triton load (or unload)
    each, over explicit model control (an ensemble after its steps). A change that fails the check is not
    loaded: ``progress`` says why, and the server keeps serving what it had until the repository changes again.
    """

    def __init__(
        self,
        repo: Path,
        served: Path,
        seen: Mapping[str, tuple],
        check: Callable[[Path], None],
        reload: Callable[[str, bool], None],
        interval_s: float,
        progress: Callable[[str], None],
    ) -> None:
        self.repo, self.served = Path(repo), Path(served)
        self.applied = dict(seen)  # what the served copy holds
        self.attempted = dict(seen)  # what was last checked (a refused change is not checked again unchanged)
        self.check, self.reload, self.progress = check, reload, progress
        self.interval_s = interval_s
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tritongen-checked-poll", daemon=True)

    def start(self) -> CheckedPoll:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll_once()
            except Exception as exc:  # noqa: BLE001 - the server keeps serving; say why this round failed
                self.progress(f"poll: {self.repo} could not be read this round ({exc})")

    def poll_once(self) -> list[str]:
        """One look at the repository; returns the models whose change was loaded (or unloaded)."""
        now = fingerprint(self.repo)
        if now == self.attempted:
            return []
        self.attempted = now
        changed = changed_models(self.applied, now)
        if not changed:
            self.applied = now
            return []
        self.rounds += 1
        work = self.served.parent / f"next-{self.rounds}"
        os.mkdir(work, 0o700)
        try:
            staged = snapshot_from_repository(self.repo, work / self.served.name)
            try:
                self.check(staged)
            except TritongenError as error:
                words = with_repository_words(error, staged, self.repo)
                self.progress(f"poll: not loaded, the change to {', '.join(changed)} in {self.repo}: {words}")
                return []
            retired = work / "retired"
            retired.mkdir()
            for model in changed:  # Triton reads a model folder only when told to load it (explicit control)
                live, new = self.served / model, staged / model
                if os.path.lexists(live):
                    live.rename(retired / model)
                if os.path.lexists(new):
                    new.rename(live)
            self.applied = now
            done = []
            for model in sorted(changed, key=lambda m: _is_ensemble(self.served / m)):  # steps first
                present = (self.served / model).is_dir()
                try:
                    self.reload(model, present)
                except TritongenError as error:
                    self.progress(f"poll: Triton did not {'load' if present else 'unload'} {model}: {error}")
                    continue
                done.append(model)
                self.progress(f"poll: {'loaded' if present else 'unloaded'} {model} (checked change in {self.repo})")
            return done
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _is_ensemble(model_dir: Path) -> bool:
    from ..files import regular_bytes

    try:
        return b'platform: "ensemble"' in regular_bytes(model_dir / "config.pbtxt", 1 << 20)
    except OSError:
        return False
