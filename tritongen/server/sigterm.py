"""SIGTERM taken as Ctrl-C while a server boots or runs (:func:`stop_on_sigterm`), and a SIGTERM or Ctrl-C that
Python dropped raised again where the command next waits (:func:`raise_lost_interrupt`)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

# A SIGTERM's Terminated (or Ctrl-C's KeyboardInterrupt) raised inside a finalizer (an object's __del__, a weakref
# callback), where Python prints it as "Exception ignored in ..." and goes on: the stop asked for would never happen.
_LOST: list[type[KeyboardInterrupt]] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by :func:`stop_on_sigterm` as Ctrl-C's KeyboardInterrupt is, so the same clean stop
    follows. 143 (128 + SIGTERM) is the exit code of a command it aborts, as 130 is Ctrl-C's."""

    exit_code = 128 + signal.SIGTERM


def raise_lost_interrupt() -> None:
    """Raise again the :class:`Terminated` (or Ctrl-C's KeyboardInterrupt) that a finalizer dropped within
    :func:`stop_on_sigterm`; nothing otherwise. Called where commands wait: the boot's readiness poll,
    :meth:`RunningServer.wait`."""
    if _LOST:
        lost = _LOST[0]
        _LOST.clear()
        raise lost


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM (``docker stop``, systemd, ``kill``) raises :class:`Terminated`, a
    KeyboardInterrupt: whatever stops the server on Ctrl-C (:meth:`RunningServer.wait`, the ``with`` block's
    exit, a boot cut short) stops it on SIGTERM too. Python's default would end this process at once, leaving
    tritonserver to shut down alone (its ports held meanwhile) and its log behind.

    Only the first SIGTERM raises; later ones are ignored while the stop it began runs (another raise would cut
    that stop short). Python runs the handler between any two bytecodes of the main thread, a finalizer's too,
    where the exception is printed and dropped: such a lost Terminated (or Ctrl-C's KeyboardInterrupt, dropped
    the same way) is not printed but kept, and raised again by :func:`raise_lost_interrupt` where the command next
    waits. The previous handler (and ``sys.unraisablehook``)
    is back after the block. Nothing changes off the main thread (Python runs signal handlers there only), nor
    where SIGTERM already had a handler or was ignored (as Python leaves SIGINT alone when it started ignored).
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    taken = False

    def on_sigterm(signum, frame) -> None:
        nonlocal taken
        if not taken:
            taken = True
            raise Terminated

    previous_hook = sys.unraisablehook

    def on_unraisable(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _LOST.append(type(unraisable.exc_value))
            return
        previous_hook(unraisable)

    _LOST.clear()
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    sys.unraisablehook = on_unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if sys.unraisablehook is on_unraisable:
            sys.unraisablehook = previous_hook
        _LOST.clear()
