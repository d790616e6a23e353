"""SIGTERM taken as Ctrl-C, for commands that change a server and must undo or finish that change when stopped.

``docker stop``, systemd, ``kill`` and a CI job's timeout send SIGTERM, whose Python default ends the process at
once: no ``finally``, no "aborted" line, and whatever the command had loaded into a server stays there. Within
:func:`sigterm_as_keyboard_interrupt`, SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``, so the
command's Ctrl-C clean-up runs for it too, and ``tritongen``'s ``main()`` prints "aborted" and exits 143
(128 + SIGTERM) as it exits 130 on Ctrl-C.

Only the first SIGTERM raises; later ones are ignored while the clean-up it began runs. The previous handler is
back after the block. Off the main thread, or where SIGTERM already has a handler (or is ignored), nothing changes.

``serve`` uses the same mechanism (:func:`tritongen.server.stop_on_sigterm`, which this wraps).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .server.sigterm import Terminated, stop_on_sigterm

__all__ = ["Terminated", "sigterm_as_keyboard_interrupt"]


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``, ``exit_code`` 143)."""
    with stop_on_sigterm():
        yield
