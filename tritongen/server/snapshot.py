"""The copy of a repository that a checked server loads: the checks and Triton read the same bytes.

``serve`` checks a repository (signature, Triton's rules, manifests) and then Triton reads it: a file changed on
disk between the two (a second writer, a build into the served repository) would be loaded unchecked. So the
repository is first copied, file by file, into a private folder (mode 0700, in the temp directory) that nothing
else writes; the checks run on the copy and Triton loads the copy. The copy keeps symbolic links as links (the
checks refuse them; in a model allowed unverified a relative link is made absolute, so it still points where it
pointed) and refuses special files.

The private folder (``tritongen-snapshot-*``) holds ``source.txt`` (the repository's path, for ``infer --check``),
``copy/repo/`` (what Triton serves) and, while a poll round runs, ``staging-N/repo/``.

:func:`snapshot_from_repository` makes a copy; :func:`with_repository_words` turns a check's message about a copy
back into one about the repository the user named; :class:`CheckedPoll` is poll mode with every change checked.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from ..errors import TritongenError
from ..files import walk
from ..layout import TOP_LEVEL_FIX
from ..names import one_line

COPY_CHUNK_BYTES = 1 << 20
SNAPSHOT_PREFIX = "tritongen-snapshot-"  # the private folder (in the temp directory) that holds a served copy
SOURCE_NAME = "source.txt"  # in that folder: the path of the repository it copies
COPY_DIR = "copy"  # in that folder: the served copy, copy/repo/
SERVED_NAME = "repo"
SPACE_MARGIN_BYTES = 64 << 20  # left free in the temp directory beside a copy


OWNER_NAME = "owner.txt"  # in that folder: "PID START_TIME" of the serve that made it


def _process_key(pid: int) -> str | None:
    """``"PID START_TIME"`` of a running process (None where there is none): a pid reused later reads otherwise."""
    import psutil

    try:
        return f"{pid} {psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return None


def remove_stale_snapshots() -> list[Path]:
    """Remove this user's snapshot folders in the temp directory whose serve is gone (killed: SIGKILL, a power cut)
    and that no running process names (an orphaned tritonserver still serving one): each is a whole copy of a
    repository (hundreds of MB for a text model). Folders without an owner record (an older tritongen's) are kept."""
    import psutil

    from ..files import regular_bytes

    stale = []
    for root in Path(tempfile.gettempdir()).glob(f"{SNAPSHOT_PREFIX}*"):
        try:
            info = root.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            owner = regular_bytes(root / OWNER_NAME, 256, follow_links=False).decode().split()
        except (OSError, UnicodeDecodeError):
            continue
        if len(owner) == 2 and owner[0].isdigit() and _process_key(int(owner[0])) == " ".join(owner):
            continue  # its serve runs
        stale.append(root)
    if stale:
        named: set[Path] = set()
        for process in psutil.process_iter(["cmdline"]):
            for arg in process.info.get("cmdline") or ():
                named.update(root for root in stale if str(root) in arg)
        stale = [root for root in stale if root not in named]
    for root in stale:
        shutil.rmtree(root, ignore_errors=True)
    return stale


def snapshot_root(repo: Path) -> Path:
    """A new private folder for copies of ``repo``, naming ``repo`` in its :data:`SOURCE_NAME` (what a server
    serving the copy answers from, for those who ask: ``infer --check``) and its serve in :data:`OWNER_NAME` (so a
    later serve removes it once that one is gone: :func:`remove_stale_snapshots`)."""
    remove_stale_snapshots()
    root = Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX))
    try:
        (root / OWNER_NAME).write_text(_process_key(os.getpid()) or "")
        (root / SOURCE_NAME).write_text(str(Path(repo).resolve()))
        os.mkdir(root / COPY_DIR, 0o700)
    except OSError as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise _no_room(exc) from None
    return root


def served_copy(root: Path, repo: Path) -> Path:
    """Where the copy of ``repo`` that Triton serves lies in ``root``: under a fixed name, not the repository's own.
    Triton's Python backend starts each model's stub through ``bash -c`` with the model's path unquoted: a
    repository folder named with a space (measured, Triton 2.51: the stub dies in ``stol`` and the model never
    loads) or a ``$(...)`` would break or run there."""
    return root / COPY_DIR / SERVED_NAME


def snapshot_source(served: Path) -> Path | None:
    """The repository that the served folder ``served`` is a copy of, or None where it is no such copy."""
    from ..files import regular_bytes

    root = Path(served).parent.parent
    if Path(served).parent.name != COPY_DIR or not root.name.startswith(SNAPSHOT_PREFIX):
        return None
    try:
        return Path(regular_bytes(root / SOURCE_NAME, 4096, follow_links=False).decode().strip())
    except (OSError, UnicodeDecodeError):
        return None


def snapshot_from_repository(
    repo: Path, dest: Path, *, models_only: bool = False, cancelled: Callable[[], bool] | None = None
) -> Path:
    """Copy every entry of ``repo`` into ``dest`` (created, mode 0700; it must not exist): regular files by
    content (each opened once, without following a link, and checked to be a regular file on that descriptor),
    symbolic links as links, folders as folders. Returns ``dest``. A special file (FIFO, socket, device) is
    refused: Triton could be made to read one, and a copy could not be checked. ``models_only``: top-level folders
    whose name starts with a dot are left out (Triton never sees them in the copy). ``cancelled``: asked before
    each file; when it says so the copy stops (half made, for the caller to remove). Refused, before anything is
    copied, where the temp directory lacks the room."""
    repo = Path(repo)
    _check_room(repo, Path(dest).parent)
    try:
        os.mkdir(dest, 0o700)
    except OSError as exc:
        raise _no_room(exc) from None
    for dirpath, dirnames, filenames in walk(repo, onerror=_unreadable_folder):
        here = Path(dirpath)
        there = dest / here.relative_to(repo)
        if models_only and here == repo:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in list(dirnames):
            if (here / name).is_symlink():  # copied as a link, not descended into
                dirnames.remove(name)
                filenames.append(name)
            else:
                try:
                    (there / name).mkdir(mode=0o700)
                except OSError as exc:
                    raise _no_room(exc) from None
        for name in filenames:
            if cancelled is not None and cancelled():
                return dest
            if here == repo and (here / name).is_symlink():  # Triton would follow it to whatever is there by then
                raise TritongenError(
                    f"'{one_line(name)}' at the top of {repo} is a symbolic link: the served copy would lead Triton "
                    "out of it",
                    TOP_LEVEL_FIX,
                )
            _copy_entry(here / name, there / name, repo)
    return dest


def _check_room(repo: Path, where: Path) -> None:
    size_bytes = 0
    for dirpath, _, filenames in walk(repo):
        for name in filenames:
            try:
                size_bytes += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue  # named by the copy
    free_bytes = shutil.disk_usage(where).free
    if size_bytes + SPACE_MARGIN_BYTES > free_bytes:
        raise NoRoom(
            f"serve copies {repo} ({size_bytes >> 20} MiB) to check and serve it, and {where} has "
            f"{free_bytes >> 20} MiB free",
            "point $TMPDIR at a folder with room for it, or free space there",
        )


class NoRoom(TritongenError):
    """The copy could not be made for want of room or a writable temp folder: the machine's, not the repository's."""


def _no_room(exc: OSError) -> TritongenError:
    return NoRoom(
        f"the private copy of the repository could not be made in {tempfile.gettempdir()} ({exc.strerror or exc})",
        "point $TMPDIR at a writable folder with room for the repository",
    )


def _unreadable_folder(exc: OSError) -> None:
    raise TritongenError(
        f"cannot read folder {exc.filename} of the repository ({exc.strerror or exc})", "check its permissions"
    )


def _copy_entry(source: Path, target: Path, repo: Path) -> None:
    shown = source.relative_to(repo).as_posix()
    try:
        mode = source.lstat().st_mode
        if stat.S_ISLNK(mode):
            pointed = os.readlink(source)
            # the checks refuse a link, naming it; where they are told not to check a model (allow-unverified), a
            # relative link made absolute points where it pointed from the repository, not into the temp folder
            os.symlink(os.path.join(os.path.dirname(os.path.abspath(source)), pointed), target)
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
        readable = 0o600 | (stat.S_IMODE(info.st_mode) & 0o100)  # this user's, executable where it was
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, readable)
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
            "point $TMPDIR at a folder with room for the repository, or check the file",
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


def fingerprint(repo: Path) -> dict[str, tuple[int, ...]]:
    """Every entry under ``repo`` (relative POSIX path -> mode, inode, and for a file or link its size, mtime and
    ctime in ns), links not followed: a changed, added or removed file changes it; a folder counts by its kind and
    inode only (a file created beside it, such as rollout's lock, changes the folder's mtime but is no change to
    load). Unreadable folders leave their entries out (the check names them)."""
    entries: dict[str, tuple[int, ...]] = {}
    for dirpath, dirnames, filenames in walk(repo):
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
            if stat.S_ISDIR(info.st_mode):
                entries[rel] = (info.st_mode, info.st_ino)
            else:
                entries[rel] = (info.st_mode, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    return entries


def changed_models(before: Mapping[str, tuple], after: Mapping[str, tuple]) -> list[str]:
    """The model folders (top-level folders, not hidden) whose entries differ between two fingerprints."""
    tops = {rel.split("/", 1)[0] for rel in (*before, *after) if "/" in rel or _is_folder(before, after, rel)}

    def of(prints: Mapping[str, tuple], top: str) -> dict[str, tuple]:
        return {rel: v for rel, v in prints.items() if rel == top or rel.startswith(f"{top}/")}

    return sorted(t for t in tops if not t.startswith(".") and of(before, t) != of(after, t))


def _is_folder(before: Mapping[str, tuple], after: Mapping[str, tuple], rel: str) -> bool:
    mode = (after.get(rel) or before.get(rel) or (0,))[0]
    return stat.S_ISDIR(mode)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(first: Path, second: Path) -> None:
    """Swap two paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``): a reader sees one or the other, never
    neither. Where the kernel or the file system cannot, the second moves aside and the first takes its place."""
    libc = ctypes.CDLL(None, use_errno=True)
    rename2 = getattr(libc, "renameat2", None)
    if rename2 is not None:
        if rename2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: not here; anything else is a real failure
            raise OSError(err, os.strerror(err), str(first))
    aside = first.with_name(first.name + ".old")
    second.rename(aside)
    first.rename(second)
    aside.rename(first)


class CheckedPoll:
    """Poll mode with every change checked before Triton can see it.

    Triton polls the served copy (its own poll mode: no model-control API is opened); tritongen polls the
    repository. Every ``interval_s`` the repository's :func:`fingerprint` is compared with the one last looked at.
    Where a model folder changed, the repository is copied again (hidden top-level folders left out: a build's
    staging folder), the copy is fingerprinted again (a change made while it was copied waits for the next round),
    ``check`` runs on it (signature, validate, verify: what ``serve`` checks at start), and only then each changed
    model folder is swapped into the served copy in one step (:func:`exchange`), where Triton's next poll loads it.
    A change that fails the check is never moved: ``progress`` says why, and the server keeps serving what it had
    until the repository changes again.
    """

    def __init__(
        self,
        repo: Path,
        served: Path,
        seen: Mapping[str, tuple],
        check: Callable[[Path], None],
        interval_s: float,
        progress: Callable[[str], None],
    ) -> None:
        self.repo, self.served = Path(repo), Path(served)
        self.applied = dict(seen)  # what the served copy holds
        self.attempted = dict(seen)  # what was last checked (a refused change is not checked again unchanged)
        self.check, self.interval_s, self._progress = check, interval_s, progress
        self.rounds = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tritongen-checked-poll", daemon=True)

    def start(self) -> CheckedPoll:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 120.0) -> bool:
        """Stop polling (a round under way stops copying); True once the thread has ended."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        return not self._thread.is_alive()

    def _say(self, line: str) -> None:
        try:
            self._progress(line)
        except Exception:  # noqa: BLE001,S110 - a closed stderr must not end the polling
            pass

    def _run(self) -> None:
        said = ""
        while not self._stop.wait(self.interval_s):
            try:
                self.poll_once()
                said = ""
            except Exception as exc:  # noqa: BLE001 - the server keeps serving; say why (once), try again
                line = f"poll: the change to {self.repo} could not be checked ({exc}); trying again each poll"
                if line != said:
                    self._say(line)
                said = line

    def poll_once(self) -> list[str]:
        """One look at the repository; returns the models whose checked change was moved into the served copy."""
        with self._lock:
            if self._stop.is_set():
                return []
            now = fingerprint(self.repo)
            if now == self.attempted:
                return []
            changed = changed_models(self.applied, now)
            if not changed:
                self.applied = self.attempted = now
                return []
            self.rounds += 1
            work = self.served.parent.parent / f"staging-{self.rounds}"
            os.mkdir(work, 0o700)
            try:
                return self._round(now, changed, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def _round(self, now: dict[str, tuple], changed: list[str], work: Path) -> list[str]:
        try:
            staged = snapshot_from_repository(
                self.repo, work / self.served.name, models_only=True, cancelled=self._stop.is_set
            )
        except NoRoom:  # the machine's, not the repository's: tried again each poll (_run says so, once)
            raise
        except TritongenError as error:  # a FIFO, a link at the top: not copied again until the repository changes
            self.attempted = now
            self._say(f"poll: not loaded, the change to {', '.join(changed)} in {self.repo}: {error.message}")
            return []
        # stopped, or a model changed while copied: the next round looks again (a log file written at the top of the
        # repository, or a build's hidden staging folder, is no model: it held every round back)
        if self._stop.is_set() or changed_models(now, fingerprint(self.repo)):
            return []
        try:
            self.check(staged)
        except TritongenError as error:
            self.attempted = now
            words = with_repository_words(error, staged, self.repo)
            self._say(f"poll: not loaded, the change to {', '.join(changed)} in {self.repo}: {words}")
            return []
        for model in changed:
            live, new = self.served / model, staged / model
            if os.path.lexists(live) and os.path.lexists(new):
                exchange(new, live)  # Triton's poll sees the old folder or the new one, never neither
            elif os.path.lexists(new):
                new.rename(live)
            elif os.path.lexists(live):
                live.rename(work / f"removed-{model}")
        self.applied = self.attempted = now
        self._say(f"poll: checked the change to {', '.join(changed)} in {self.repo}; Triton loads it at its next poll")
        return changed
