"""One rollout or rollback of a model at a time: an ``flock`` on ``<model>/tritongen-rollout.lock``.

The lock is the kernel's, held on the open file: it goes when the holder's process ends, however it ends
(a killed run leaves the file, never the lock). The file names its holder (pid, host, action, start time) so
that a second run can say who holds it. The holder removes the file when it finishes; a file left by a killed
run is taken over by the next one. ``tritongen verify`` tolerates the file in the form written here (it is
not listed in any manifest) and signing ignores it, like the rollout record.

On a network file system without ``flock`` across hosts, two hosts could both take it: run rollouts of one
repository from one host.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import TritongenError
from ..files import json_from_bytes
from ..layout import ROLLOUT_LOCK_MAX_BYTES, ROLLOUT_LOCK_NAME, ROLLOUT_LOCK_TOOL


def lock_path(model_dir: Path) -> Path:
    return Path(model_dir) / ROLLOUT_LOCK_NAME


@contextmanager
def rollout_lock(model_dir: Path, action: str) -> Iterator[dict[str, Any]]:
    """Hold the model's rollout lock for the ``with`` block; refuse at once when another run holds it."""
    model_dir = Path(model_dir)
    path = lock_path(model_dir)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(0, "not a regular file")
        except OSError as exc:
            raise TritongenError(
                f"cannot open the rollout lock {path} ({exc.strerror or exc})",
                "check that the model folder is writable and that the lock is a regular file (or remove it)",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held_by = _holder_text(fd)
            os.close(fd)
            raise TritongenError(
                f"model '{model_dir.name}' is being changed by another run ({held_by})",
                "wait for it to finish (the lock goes when that process ends), then run again",
            ) from None
        except OSError as exc:
            os.close(fd)
            raise TritongenError(f"cannot lock {path} ({exc.strerror or exc})", "run on a local file system") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its last holder removed after we opened it
            break
        os.close(fd)
    holder = {
        "tool": ROLLOUT_LOCK_TOOL,
        "model": model_dir.name,
        "action": action,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield holder
    finally:
        try:
            os.unlink(path)  # while still holding it: a run that opened it meanwhile sees the inode change
        except OSError:
            pass
        os.close(fd)


def _holder_text(fd: int) -> str:
    try:
        data = json_from_bytes(os.pread(fd, ROLLOUT_LOCK_MAX_BYTES, 0) or b"{}")
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict) or "pid" not in data:
        return "holder not yet written"
    action, host, since = data.get("action", "a run"), data.get("host", "?"), data.get("since", "?")
    return f"{action} by pid {data['pid']} on {host} since {since}"
