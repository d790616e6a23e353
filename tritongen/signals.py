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
import signal
import threading
from collections.abc import Iterator
from typing import Any

from .server.sigterm import Terminated, stop_on_sigterm

__all__ = ["Terminated", "signals_deferred", "sigterm_as_keyboard_interrupt"]


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (a ``KeyboardInterrupt``, ``exit_code`` 143)."""
    with stop_on_sigterm():
        yield


@contextlib.contextmanager
def signals_deferred(finished: str = "") -> Iterator[None]:
    """Within the block, Ctrl-C, SIGTERM and SIGHUP wait: the block runs to its end, then the first one arrives as it
    would have (its handler raised again). For steps that must not stop half-way: an ensemble's models installed one
    by one, a Ctrl-C between two left a repository whose ensemble named a model of another build. An error the block
    raises is not hidden by a held signal. Off the main thread, nothing changes; a signal ignored stays ignored.

    ``finished`` says what the block did (e.g. "the model was installed whole in ..."): an exception the held signal
    raises carries it as a note (``__notes__``), and the CLI's "aborted" line says it, so a user who pressed Ctrl-C
    is not left thinking nothing happened."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        caught.append(signum)

    previous: dict[int, Any] = {}
    try:
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            handler = signal.getsignal(number)
            if handler is None or handler is signal.SIG_IGN:  # set outside Python (not restorable), or ignored
                continue
            signal.signal(number, hold)
            previous[number] = handler
        yield
    except BaseException:
        _restore(previous)
        raise
    _restore(previous)
    if caught:
        try:
            signal.raise_signal(caught[0])  # to the handler it was meant for: KeyboardInterrupt, Terminated, ...
        except BaseException as exc:
            if finished:  # add_note's attribute (Python 3.11), set by hand for 3.10
                exc.__notes__ = [*getattr(exc, "__notes__", ()), finished]  # type: ignore[attr-defined]
            raise


def _restore(previous: dict[int, Any]) -> None:
    for number, handler in previous.items():
        signal.signal(number, handler)
