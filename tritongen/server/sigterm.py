"""SIGTERM (and SIGHUP) taken as Ctrl-C while a server boots or runs, or a command changes one
(:func:`stop_on_sigterm`); a SIGTERM or Ctrl-C whose exception Python dropped is delivered again."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

REDELIVER_AFTER_S = 0.05  # a dropped stop is sent again this soon: the main thread is back out of the finalizer


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by :func:`stop_on_sigterm` as Ctrl-C's KeyboardInterrupt is, so the same clean stop
    follows. 143 (128 + SIGTERM) is the exit code of a command it aborts, as 130 is Ctrl-C's."""

    signum = signal.SIGTERM
    exit_code = 128 + signal.SIGTERM


class HungUp(Terminated):
    """SIGHUP (the terminal closed, an ssh session dropped), taken as SIGTERM is: Python's default ended ``serve`` at
    once, leaving its checked copy of the repository (hundreds of MB for a text model) in the temp folder. Exit
    code 129."""

    signum = signal.SIGHUP
    exit_code = 128 + signal.SIGHUP


def _send_to_main_thread(signum: int) -> None:
    """``signum`` to the main thread, from a timer thread: it runs the handler once it is back in ordinary code
    (a blocking call it waits in is interrupted)."""
    main = threading.main_thread()
    if main.is_alive() and main.ident is not None:
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pthread_kill(main.ident, signum)


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM (``docker stop``, systemd, ``kill``) raises :class:`Terminated`, a
    KeyboardInterrupt: whatever stops the server on Ctrl-C (:meth:`RunningServer.wait`, the ``with`` block's
    exit, a boot cut short, a command's own clean-up) stops it on SIGTERM too. Python's default would end this
    process at once, leaving tritonserver to shut down alone (its ports held meanwhile) and its log behind.

    Only the first SIGTERM raises; later ones are ignored while the stop it began runs (another raise would cut
    that stop short). Python runs a signal handler between any two bytecodes of the main thread, a finalizer's
    (``__del__``, a weakref callback) too, where the exception is printed ("Exception ignored in ...") and dropped:
    the stop asked for would never come, and every later SIGTERM would be ignored. Such a dropped Terminated (or
    Ctrl-C's KeyboardInterrupt) is not printed but sent again, :data:`REDELIVER_AFTER_S` later, to be raised in
    ordinary code. The previous handler (and ``sys.unraisablehook``) is back after the block. Nothing changes off
    the main thread (Python runs signal handlers there only), nor where SIGTERM already had a handler or was
    ignored (as Python leaves SIGINT alone when it started ignored).
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    taken = False
    hangup = signal.getsignal(signal.SIGHUP) == signal.SIG_DFL  # not under nohup, which ignores it

    def on_sigterm(signum, frame) -> None:
        nonlocal taken
        if not taken:
            taken = True
            raise HungUp if signum == signal.SIGHUP else Terminated

    previous_hook = sys.unraisablehook

    def on_unraisable(unraisable) -> None:
        nonlocal taken
        lost = unraisable.exc_value
        if isinstance(lost, Terminated):
            taken = False  # not taken after all: the next one raises
            signum = lost.signum
        elif isinstance(lost, KeyboardInterrupt) and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signum = signal.SIGINT
        else:
            previous_hook(unraisable)
            return
        timer = threading.Timer(REDELIVER_AFTER_S, _send_to_main_thread, (signum,))
        timer.daemon = True
        timer.start()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    previous_hangup = signal.signal(signal.SIGHUP, on_sigterm) if hangup else None
    sys.unraisablehook = on_unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if hangup:
            signal.signal(signal.SIGHUP, previous_hangup)
        if sys.unraisablehook is on_unraisable:
            sys.unraisablehook = previous_hook
