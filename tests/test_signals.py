"""tritongen.signals: SIGTERM as Ctrl-C, and steps a signal must not cut in half."""

from __future__ import annotations

import os
import signal

import pytest

from tritongen.signals import Terminated, signals_deferred, sigterm_as_keyboard_interrupt


def test_a_ctrl_c_within_deferred_steps_arrives_after_the_last_one():
    """An ensemble's four models went in one by one: a Ctrl-C between two left a mixed repository."""
    done = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("first")
            done.append("second")  # still runs: the signal waits for the block's end
    assert done == ["first", "second"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_a_sigterm_within_deferred_steps_reaches_the_handler_it_was_meant_for():
    done = []
    with sigterm_as_keyboard_interrupt(), pytest.raises(Terminated):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("installed")
    assert done == ["installed"]


def test_no_signal_no_change():
    with signals_deferred():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_error_in_the_block_is_not_hidden_by_a_held_signal():
    """A held Ctrl-C replaced the install's own OSError with KeyboardInterrupt: the reason was lost."""
    with pytest.raises(OSError, match="disk full"):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            raise OSError("disk full")
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sighup_waits_too_and_an_ignored_signal_stays_ignored():
    seen = []
    previous = signal.signal(signal.SIGHUP, lambda *_: seen.append("hup"))
    ignored = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []  # held
        assert seen == ["hup"] and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
        signal.signal(signal.SIGTERM, ignored)


def test_a_held_ctrl_c_says_what_the_block_finished():
    """A Ctrl-C during an install was held until the install finished, then the CLI said "aborted" alone: the user
    could not tell the model had gone in."""
    from tritongen.cli import stopped_line

    with pytest.raises(KeyboardInterrupt) as caught:
        with signals_deferred("after the install it held back, which finished: repo/m"):
            os.kill(os.getpid(), signal.SIGINT)
    assert stopped_line("aborted", caught.value) == "aborted (after the install it held back, which finished: repo/m)"
    assert stopped_line("interrupted", KeyboardInterrupt()) == "interrupted"  # nothing held, nothing said
    assert stopped_line("aborted", None) == "aborted"
