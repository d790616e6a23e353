"""How a server that is gone ended, read from its exit and its log (tritongen/server/readiness.py)."""

from __future__ import annotations

from tritongen.server.readiness import crash_words

# The end of Triton 2.51's log when its Python backend aborted on its shared-memory lock (the stub-kill soak, a
# fresh-clone CI run): the C++ runtime's line, then Triton's own signal handler and its stack trace.
LOCK_ABORT_LOG = """I1202 10:00:00.000000 1234 python_be.cc:2000] "TRITONBACKEND_ModelInstanceExecute"
terminate called after throwing an instance of 'boost::interprocess::lock_exception'
  what():  boost::interprocess::lock_exception
Signal (6) received.
 0# 0x000055D3A1B2C3D4 in tritonserver
 1# 0x00007F0000000000 in /lib/x86_64-linux-gnu/libc.so.6
"""


def test_a_running_server_has_no_crash_words(tmp_path):
    log = tmp_path / "server.log"
    log.write_text(LOCK_ABORT_LOG)
    assert crash_words(None, log) == ""


def test_an_abort_names_the_signal_and_the_runtimes_own_line_over_the_handlers(tmp_path):
    log = tmp_path / "server.log"
    log.write_text(LOCK_ABORT_LOG)
    words = crash_words(-6, log)
    assert words == (
        "killed by signal 6 (SIGABRT); its log: "
        "terminate called after throwing an instance of 'boost::interprocess::lock_exception'"
    )


def test_without_a_terminate_line_the_signal_handlers_line_or_the_last_error_is_quoted(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("I1202 starting\nSignal (11) received.\n 0# 0x1 in tritonserver\n")
    assert crash_words(-11, log) == "killed by signal 11 (SIGSEGV); its log: Signal (11) received."
    log.write_text('I1202 starting\nE1202 10:00:00.000000 99 server.cc:300] "failed to load all models"\n')
    assert crash_words(1, log) == "exited with code 1; its log: failed to load all models"


def test_a_kill_without_a_word_in_the_log_or_no_log_at_all_still_names_the_signal(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("I1202 serving\n")
    assert crash_words(-9, log) == "killed by signal 9 (SIGKILL)"
    assert crash_words(-9, tmp_path / "gone.log") == "killed by signal 9 (SIGKILL)"
    assert crash_words(0, log) == "exited with code 0"
    assert crash_words(-200, log) == "killed by signal 200"
