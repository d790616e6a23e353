"""How a server that is gone ended, read from its exit and its log (tritongen/server/readiness.py)."""

from __future__ import annotations

import os

import pytest

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


def test_a_port_nobody_listens_on_is_not_another_processs(tmp_path):
    # a server whose models hang in loading (measured: a stub killed by a space in its path) has not bound its
    # ports yet; the deadline's message named "another process answers on port ..." for ports nobody held
    import socket
    from types import SimpleNamespace

    from tritongen.server.readiness import _ports_of_another_process

    with socket.socket() as held, socket.socket() as free:
        held.bind(("127.0.0.1", 0))
        held.listen()
        free.bind(("127.0.0.1", 0))  # bound, not listening: nobody answers on it
        ports = {"http": held.getsockname()[1], "grpc": free.getsockname()[1]}
        server = SimpleNamespace(pid=os.getppid(), ports=ports)  # pytest's parent holds neither
        assert _ports_of_another_process(server) == [ports["http"]]
        server.pid = os.getpid()
        assert _ports_of_another_process(server) == []


def test_the_missing_backend_fix_names_what_applies_to_the_model(tmp_path):
    from tritongen.layout import ARTIFACT_DIR, MANIFEST_NAME
    from tritongen.server.readiness import _local_fix

    repo = tmp_path / "my repo"
    for version in ("2", "10"):  # the newest version by number, not by name
        (repo / "hand" / version).mkdir(parents=True)
        (repo / "hand" / version / "model.onnx").write_bytes(b"")
    fix = _local_fix(repo, ["hand"])
    assert f"tritongen build '{repo}/hand/10/model.onnx' --name hand --target local --repo '{repo}' --force" in fix
    (repo / "plan" / "1").mkdir(parents=True)
    assert "'plan' was not built by tritongen" in _local_fix(repo, ["plan"])
    (repo / "built" / "1" / ARTIFACT_DIR).mkdir(parents=True)
    (repo / "built" / "1" / ARTIFACT_DIR / MANIFEST_NAME).write_text("{}")
    assert _local_fix(repo, ["built"]) == "build with --target local"


def test_a_repository_path_a_shell_would_split_is_refused_before_triton_starts(tmp_path):
    import pytest

    from tritongen.errors import TritongenError
    from tritongen.server import ServeSpec, server_from_repository

    repo = tmp_path / "my repo"
    repo.mkdir()
    with pytest.raises(TritongenError) as caught:
        server_from_repository(ServeSpec(repo=repo))
    assert "holds ' '" in caught.value.problem and "tritongen serve" in caught.value.fix


def test_the_served_copy_has_a_name_a_shell_leaves_whole(tmp_path):
    from tritongen.names import shell_special_chars
    from tritongen.server.snapshot import served_copy

    assert shell_special_chars(str(served_copy(tmp_path, tmp_path / "my $(repo)"))) == []


def test_models_still_loading_at_the_deadline_name_the_option_that_waits_longer(tmp_path):
    """The fix named --ready-timeout, which no command takes (serve's is --timeout-s)."""
    from types import SimpleNamespace

    import pytest

    from tritongen.cli import cli
    from tritongen.errors import TritongenError
    from tritongen.server.readiness import _poll_ready

    server = SimpleNamespace(
        process=SimpleNamespace(poll=lambda: None),
        ports={},
        pid=0,
        spec=SimpleNamespace(ready_timeout_s=2.0),
        log_path=tmp_path / "server.log",
        log_tail=lambda: "",
    )
    triton = SimpleNamespace(repository_index=lambda: [{"name": "m", "state": "LOADING"}])
    with pytest.raises(TritongenError) as err:
        _poll_ready(server, triton, deadline=0.0)
    assert err.value.problem == "tritonserver did not get all models ready within 2 s"
    option = err.value.fix.split("raise serve's ")[1].split()[0]
    assert option == "--timeout-s"
    opts = {o for p in cli.commands["serve"].params for o in getattr(p, "opts", ())}
    assert option in opts


def test_a_stub_that_cannot_start_fails_the_wait_at_once_naming_the_model(tmp_path):
    """A version folder without model.py (served with verify off): the backend logged it and tritonserver waited,
    not answering, for the whole ready timeout (60 s in the newcomer's run)."""
    import time
    from types import SimpleNamespace

    import pytest

    from tritongen.errors import TritongenError
    from tritongen.server.readiness import _poll_ready

    log = tmp_path / "server.log"
    log.write_text(
        'I1207 06:26:08.476067 13531 model_lifecycle.cc:472] "loading: small:2"\n'
        'I1207 06:26:08.476080 13531 model_lifecycle.cc:472] "loading: other:1"\n'  # in parallel: not the one
        "I1207 06:26:08.582004 13547 pb_stub.cc:2105]  Failed to preinitialize Python stub: Python model file not "
        "found in '/r/small/2/model.py'\n"
    )
    server = SimpleNamespace(
        process=SimpleNamespace(poll=lambda: None),
        ports={},
        pid=0,
        spec=SimpleNamespace(ready_timeout_s=60.0, repo=tmp_path / "r"),
        log_path=log,
        log_tail=lambda: "",
    )
    triton = SimpleNamespace(repository_index=lambda: None)
    with pytest.raises(TritongenError) as err:
        _poll_ready(server, triton, deadline=time.monotonic() + 3)  # without the log's word: the timeout's error
    assert err.value.problem.startswith("model small:2 failed to start in tritonserver (Python model file not found")
    assert f"tritongen verify {tmp_path / 'r'}" in err.value.fix


@pytest.mark.server
def test_serving_a_version_folder_without_its_files_fails_in_seconds_not_at_the_timeout(tmp_path):
    import time

    import tritongen
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model
    from tritongen.errors import TritongenError

    write_model(tmp_path / "repo", "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    (tmp_path / "repo" / "double" / "2").mkdir()
    started = time.monotonic()
    with pytest.raises(TritongenError, match=r"model double:2 failed to start in tritonserver"):
        with tritongen.serve(tmp_path / "repo", verify=False, ready_timeout_s=600, http_port=0, grpc_port=0):
            pass
    assert time.monotonic() - started < 300  # the wait ends on the log's word, long before the 600 s timeout
