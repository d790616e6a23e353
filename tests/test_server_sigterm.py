"""SIGTERM within stop_on_sigterm: a Ctrl-C once, and one that a finalizer dropped raised again where serve waits."""

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tritongen.server import RunningServer, ServerInstall, ServeSpec, Terminated, stop_on_sigterm


class TakesSigtermWhenFreed:
    """Freed, it sends this process SIGTERM and runs on: Python runs the handler inside this __del__, where the
    raise is printed as "Exception ignored in ..." and dropped (how a serve under load once booted on, stop unheard)."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGTERM)
        self.after = [0]  # bytecode after the call: the handler has run by now


def _drop_a_sigterm_in_a_finalizer() -> None:
    TakesSigtermWhenFreed()  # freed at once


def test_sigterm_within_stop_on_sigterm_is_a_ctrl_c_once_then_the_old_handler_is_back():
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # else the block would change nothing
    with stop_on_sigterm():
        assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL  # never send SIGTERM to the test run unhandled
        with pytest.raises(KeyboardInterrupt) as caught:
            signal.raise_signal(signal.SIGTERM)
            time.sleep(30)  # the handler raises as soon as Python checks for signals, long before this ends
        assert isinstance(caught.value, Terminated) and caught.value.exit_code == 143
        signal.raise_signal(signal.SIGTERM)  # a second one, while the stop the first began runs: ignored
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_stop_on_sigterm_leaves_a_handler_someone_else_set():
    def mine(signum, frame) -> None:
        pass

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with stop_on_sigterm():
            assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_sigterm_a_finalizer_dropped_is_delivered_again_and_not_printed(capfd):
    with stop_on_sigterm():
        with pytest.raises(Terminated):
            _drop_a_sigterm_in_a_finalizer()  # no exception here: Python dropped it
            time.sleep(30)  # sent again within a fraction of a second, raised here
        signal.raise_signal(signal.SIGTERM)  # taken now: ignored, as every later one
    assert "Traceback" not in capfd.readouterr().err


def test_a_sigterm_a_finalizer_dropped_stops_a_loop_that_never_waits_on_a_server():
    """perf, tune and rollout run in stop_on_sigterm blocks without a server wait to raise it: it arrives anyway."""
    import time as clock

    started = clock.monotonic()
    with stop_on_sigterm(), pytest.raises(Terminated):
        _drop_a_sigterm_in_a_finalizer()
        while clock.monotonic() - started < 30:
            sum(range(1000))  # busy: bytecode after bytecode
    assert clock.monotonic() - started < 10


def test_a_server_waited_on_stops_for_a_sigterm_a_finalizer_dropped(tmp_path):
    process = subprocess.Popen(["sleep", "120"], start_new_session=True)
    log = tmp_path / "server.log"
    log.write_text("")
    server = RunningServer(
        ServeSpec(repo=tmp_path, log_path=log), ServerInstall(binary=Path("sleep"), source="path"), process,
        ["sleep", "120"], {"http": 1, "grpc": 2, "metrics": 3}, log, None,
    )  # fmt: skip
    try:
        with stop_on_sigterm():
            _drop_a_sigterm_in_a_finalizer()
            started = time.monotonic()
            server.wait()
        assert server.interrupted and process.poll() is not None
        assert time.monotonic() - started < 60  # the sleep would run 120 s unheard
    finally:
        process.kill()
        process.wait()


def test_other_unraisable_exceptions_still_reach_the_previous_hook(monkeypatch):
    import sys

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)

    class Fails:
        def __del__(self) -> None:
            raise ValueError("in a finalizer")

    with stop_on_sigterm():
        Fails()
    assert [type(u.exc_value) for u in seen] == [ValueError]
    assert sys.unraisablehook == seen.append


class TakesCtrlCWhenFreed:
    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)
        self.after = [0]


def test_a_ctrl_c_a_finalizer_dropped_is_delivered_again_too():
    with stop_on_sigterm(), pytest.raises(KeyboardInterrupt) as caught:
        TakesCtrlCWhenFreed()
        time.sleep(30)
    assert not isinstance(caught.value, Terminated)


def test_a_hangup_within_stop_on_sigterm_is_taken_as_sigterm_is():
    """A closed terminal (an ssh session dropped) sends SIGHUP, whose default ended serve at once and left its
    checked copy of the repository in the temp folder."""
    from tritongen.server.sigterm import HungUp

    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # the suite may run under nohup (SIGHUP ignored)
    try:
        with stop_on_sigterm():
            assert signal.getsignal(signal.SIGHUP) != signal.SIG_DFL
            with pytest.raises(KeyboardInterrupt) as caught:
                signal.raise_signal(signal.SIGHUP)
                time.sleep(30)
            assert isinstance(caught.value, HungUp) and caught.value.exit_code == 129
            signal.raise_signal(signal.SIGTERM)  # the stop the hangup began runs: ignored
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_under_nohup_a_hangup_stays_ignored():
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_on_sigterm():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.mark.server
def test_serve_hung_up_on_stops_its_server_and_removes_its_checked_copy(tmp_path):
    import os
    import sys

    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model

    repo = write_model(tmp_path / "repo", "double", DOUBLE_CONFIG, DOUBLE_MODEL).parent
    temp = tmp_path / "tmp"
    temp.mkdir()
    command = [sys.executable, "-m", "tritongen", "serve", str(repo), "--allow-unverified", "double"]
    command += ["--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    process = subprocess.Popen(
        command,
        env={**os.environ, "TMPDIR": str(temp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),  # as from a terminal, even under nohup
    )
    try:
        for line in process.stdout:  # type: ignore[union-attr]
            if "ready" in line.lower() and "serving" in line.lower() or "Ctrl-C" in line:
                break
        assert any(p.name.startswith("tritongen-snapshot-") for p in temp.iterdir()), list(temp.iterdir())
        process.send_signal(signal.SIGHUP)
        assert process.wait(timeout=120) == 0  # a stop asked for, as Ctrl-C and SIGTERM are
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not [p for p in temp.iterdir() if p.name.startswith("tritongen-snapshot-")], list(temp.iterdir())
