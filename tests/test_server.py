"""tritongen.server against a real tritonserver (the nvidia-pytriton wheel's 2.51 here), no mocks."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import BROKEN_MODEL, DOUBLE_CONFIG, DOUBLE_MODEL, ENV_CONFIG, ENV_MODEL, free_ports, write_model
from tritongen.client import infer_from_arrays
from tritongen.errors import TritongenError
from tritongen.server import (
    ServerInstall,
    ServeSpec,
    check_numpy,
    docker_command,
    find_server_binary,
    port_is_free,
    server_args,
    server_from_repository,
)


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket in LISTEN state on ``port`` (from /proc/net/tcp{,6})."""
    found = set()
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:
                continue
            raw = bytes.fromhex(addr_hex)
            if v6:
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, raw).removeprefix("::ffff:"))  # IPv4-mapped
            else:
                found.add(socket.inet_ntoa(raw[::-1]))
    return found


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return [p for p in pids if p != os.getpid()]


def wait_gone(pids_fn, timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := pids_fn()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


# --------------------------------------------------------------------------------------------- no server needed


def test_docker_command_serves_the_absolute_repository_on_loopback(tmp_path):
    command = docker_command(ServeSpec(repo=tmp_path / "repo"))
    assert command == (
        "docker run --gpus all --rm --shm-size=1g -e OPENBLAS_NUM_THREADS=1 "
        "-e LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so "
        "-p 127.0.0.1:8000:8000 -p 127.0.0.1:8001:8001 -p 127.0.0.1:8002:8002 "
        f"-v {tmp_path.resolve() / 'repo'}:/models:ro nvcr.io/nvidia/tritonserver:24.10-py3 "
        "tritonserver --model-repository=/models"
    )
    plain = docker_command(ServeSpec(repo=tmp_path / "repo", stub_blas_threads=0, allocator="system"))
    assert "OPENBLAS_NUM_THREADS" not in plain and "LD_PRELOAD" not in plain
    tc = shlex.split(docker_command(ServeSpec(repo=tmp_path / "repo", stub_blas_threads=4, allocator="tcmalloc")))
    assert "OPENBLAS_NUM_THREADS=4" in tc and "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4" in tc


def test_docker_command_off_loopback_publishes_all_and_restricts_admin_apis(tmp_path):
    spec = ServeSpec(repo=tmp_path, host="0.0.0.0", http_port=9000, model_control="explicit")
    words = shlex.split(docker_command(spec, image="my/triton:1", admin_token="s3cret"))
    assert words[:5] == ["docker", "run", "--gpus", "all", "--rm"]
    assert "9000:8000" in words and "8001:8001" in words
    assert words[words.index("my/triton:1") + 1] == "tritonserver"
    assert "--model-control-mode=explicit" in words and "--load-model=*" in words
    assert "--http-restricted-api=model-repository,shared-memory,trace,logging:tritongen-admin-token=s3cret" in words
    assert (
        "--grpc-restricted-protocol=model-repository,shared-memory,trace,logging:tritongen-admin-token=s3cret" in words
    )


def test_docker_command_keys_what_a_local_serve_keys_and_publishes_on_addresses_docker_takes(tmp_path):
    """serve --docker --model-control explicit on loopback printed a line with the model-control API open (a local
    serve keys it: any local process could load a model through it); --host localhost printed -p localhost:8000:...,
    which Docker refuses (an IP address only)."""
    explicit = shlex.split(docker_command(ServeSpec(repo=tmp_path, model_control="explicit"), admin_token="k"))
    assert "--http-restricted-api=model-repository,shared-memory,trace,logging:tritongen-admin-token=k" in explicit
    restricted = shlex.split(docker_command(ServeSpec(repo=tmp_path, restricted=True), admin_token="k"))
    assert any(w.startswith("--grpc-restricted-protocol=") for w in restricted)
    assert not any("restricted" in w for w in shlex.split(docker_command(ServeSpec(repo=tmp_path))))
    assert "127.0.0.1:8000:8000" in shlex.split(docker_command(ServeSpec(repo=tmp_path, host="localhost")))
    assert "[::1]:8001:8001" in shlex.split(docker_command(ServeSpec(repo=tmp_path, host="::1")))


def test_server_args_bind_every_endpoint_to_the_host(tmp_path):
    args = server_args(
        ServeSpec(repo=tmp_path, log_verbose=1, extra_args=("--exit-timeout-secs=5",)),
        {"http": 1, "grpc": 2, "metrics": 3},
    )
    for kind, port in (("http", 1), ("grpc", 2), ("metrics", 3)):
        assert f"--{kind}-address=127.0.0.1" in args and f"--{kind}-port={port}" in args
    assert not any("restricted" in a for a in args)  # loopback: nothing to restrict
    assert args[-2:] == ["--log-verbose=1", "--exit-timeout-secs=5"]


def test_bogus_server_bin_is_a_clean_error(tmp_path):
    with pytest.raises(TritongenError) as missing:
        find_server_binary(tmp_path / "nope" / "tritonserver")
    assert "does not exist" in str(missing.value) and "pip install 'tritongen[server]'" in str(missing.value)
    not_executable = tmp_path / "tritonserver"
    not_executable.write_text("#!/bin/sh\n")
    with pytest.raises(TritongenError, match="is not an executable file"):
        find_server_binary(not_executable)


def test_spec_rejects_unknown_model_control_and_bad_ports(tmp_path):
    with pytest.raises(TritongenError, match="model control mode 'sometimes'"):
        ServeSpec(repo=tmp_path, model_control="sometimes")
    with pytest.raises(TritongenError, match="--grpc-port 70000"):
        ServeSpec(repo=tmp_path, grpc_port=70000)
    # Triton booted, printed its --help and exited (the reason was the last line of a 19 KB log)
    with pytest.raises(TritongenError, match="--http-port and --grpc-port are both 18600") as err:
        ServeSpec(repo=tmp_path, http_port=18600, grpc_port=18600)
    assert err.value.fix.startswith("give --grpc-port another port")
    with pytest.raises(TritongenError, match="--grpc-port and --metrics-port are both 9"):
        ServeSpec(repo=tmp_path, grpc_port=9, metrics_port=9)
    assert ServeSpec(repo=tmp_path, http_port=0, grpc_port=0, metrics_port=0).http_port == 0  # any free ones


def test_missing_repository_is_a_clean_error(tmp_path):
    with pytest.raises(TritongenError, match="does not exist"):
        server_from_repository(ServeSpec(repo=tmp_path / "missing"))


def test_numpy_2_is_refused_for_python_backend_models(tmp_path):
    write_model(tmp_path, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    wheel = ServerInstall(binary=Path("/x/tritonserver"), source="wheel", version="2.51.0")
    with pytest.raises(TritongenError, match=r"numpy 2\.1\.0 .*pip install 'numpy<2'"):
        check_numpy(tmp_path, wheel, numpy_version="2.1.0")
    check_numpy(tmp_path, wheel, numpy_version="1.26.4")
    check_numpy(tmp_path, ServerInstall(binary=Path("/x"), source="path"), numpy_version="2.1.0")  # not our stub


def test_wheel_install_prepares_a_backend_dir_for_this_python(server_install):
    if server_install.source != "wheel":
        pytest.skip(f"tritonserver comes from {server_install.source}, not the nvidia-pytriton wheel")
    python_dir = server_install.backend_dir / "python"
    assert os.access(python_dir / "triton_python_backend_stub", os.X_OK)
    assert (python_dir / "libtriton_python.so").is_file()
    env = server_install.environ({"PATH": "/usr/bin"})
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).absolute().parent)
    assert "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"]
    assert f"--backend-directory={server_install.backend_dir}" in server_install.args()
    assert find_server_binary(server_install.binary).source == "wheel"  # --server-bin pointing at the wheel's binary


# --------------------------------------------------------------------------------------------- real server


@pytest.mark.server
def test_boots_on_loopback_with_every_model_ready(tiny_server):
    assert tiny_server.models == ("double", "env_probe")
    assert tiny_server.is_running() and tiny_server.boot_s < 60
    print(f"\ntritonserver ready in {tiny_server.boot_s:.2f} s")
    for kind in ("http", "grpc", "metrics"):
        port = tiny_server.ports[kind]
        assert getattr(tiny_server, f"{kind}_url") == f"127.0.0.1:{port}"
        assert listening_addresses(port) == {"127.0.0.1"}, f"{kind} port {port} is not bound to loopback only"
    log = tiny_server.log_path.read_text()
    assert f"Started GRPCInferenceService at 127.0.0.1:{tiny_server.ports['grpc']}" in log
    assert tiny_server.admin_headers() == {}


@pytest.mark.server
def test_python_backend_models_run_in_this_environment(tiny_server):
    out = infer_from_arrays(tiny_server.http_url, "env_probe", {"TEXT": np.array(["ok"])}, protocol="http")
    stub_python, numpy_file, ort_version, ort_file = (v.decode() for v in out["INFO"])
    assert stub_python == sys.version  # the same interpreter build, libpython included
    assert numpy_file.startswith(sys.prefix) and ort_file.startswith(sys.prefix)
    assert ort_version == version("onnxruntime")


@pytest.mark.server
def test_explicit_port_in_use_is_refused_before_starting(tmp_path, server_install):
    write_model(tmp_path, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TritongenError, match=f"http port {port} on 127.0.0.1 is already in use"):
            server_from_repository(ServeSpec(repo=tmp_path, http_port=port))
    assert processes_mentioning(str(tmp_path)) == []


@pytest.mark.server
def test_broken_model_is_named_with_the_server_error_and_the_server_stopped(tmp_path, server_install):
    repo = tmp_path / "repo"
    write_model(repo, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    write_model(repo, "broken", DOUBLE_CONFIG.replace('"double"', '"broken"'), BROKEN_MODEL)
    ports = free_ports(3)
    spec = ServeSpec(
        repo=repo, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2], log_path=tmp_path / "server.log"
    )
    with pytest.raises(TritongenError) as failed:
        server_from_repository(spec)
    message = str(failed.value)
    assert "model 'broken' failed to load" in message
    assert "No module named 'tritongen_no_such_module'" in message  # the server's own words
    assert "model.py" in failed.value.details and str(spec.log_path) in message
    # stopped by SIGINT alone: no connection of ours held it open until SIGTERM (15 s of waiting, seen before)
    assert "Signal (2) received" in spec.log_path.read_text() and "Signal (15)" not in spec.log_path.read_text()
    assert wait_gone(lambda: processes_mentioning(str(repo))) == []  # server and the good model's stub
    assert all(port_is_free("127.0.0.1", p) and not listening_addresses(p) for p in ports)


@pytest.mark.server
def test_stop_after_the_server_was_killed_leaves_no_stub_behind(tmp_path, server_install):
    """A tritonserver SIGKILLed under load leaves its busy Python-backend stub running (an orphan that lives on
    indefinitely, seen here); stop() must end it."""
    from tritongen.client import infer_concurrently
    from tritongen.testing.procs import group_members, stubs_from_server

    write_model(tmp_path, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    server = server_from_repository(ServeSpec(repo=tmp_path))
    try:
        stubs = list(stubs_from_server(server.pid))
        assert stubs, "no Python-backend stub found"
        x = np.ones((1, 4), np.float32)
        load = threading.Thread(
            target=lambda: _ignore_errors(
                lambda: infer_concurrently(server.grpc_url, "double", [{"X": x}] * 20000, concurrency=16, timeout_s=5)
            ),
            daemon=True,
        )
        load.start()
        time.sleep(1.5)
        assert server.crash() == ""  # running
        server.process.kill()
        server.process.wait(timeout=10)
        assert server.crash().startswith("killed by signal 9 (SIGKILL)"), server.crash()
        time.sleep(1.0)
        orphans = group_members(server.pid)
        print(f"left after the kill: {orphans} (stubs {stubs})")
        load.join(timeout=30)
    finally:
        server.stop(timeout_s=5)
    assert wait_gone(lambda: group_members(server.pid)) == []


def _ignore_errors(fn) -> None:
    try:
        fn()
    except TritongenError:
        pass


@pytest.mark.server
def test_explicit_mode_on_default_or_free_ports_then_stop_and_wait(tmp_path, server_install):
    write_model(tmp_path, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    with server_from_repository(ServeSpec(repo=tmp_path, model_control="explicit")) as server:
        assert server.models == ("double",)
        assert "--model-control-mode=explicit" in server.command and "--load-model=*" in server.command
        x = np.ones((3, 4), np.float32)
        np.testing.assert_array_equal(infer_from_arrays(server.grpc_url, "double", {"X": x})["Y"], x * 2 + 1)
        exit_codes = []
        waiter = threading.Thread(target=lambda: exit_codes.append(server.wait()))
        waiter.start()
        started = time.monotonic()
        assert server.stop(timeout_s=30) == 0
        waiter.join(timeout=10)
        print(f"\ntritonserver stopped in {time.monotonic() - started:.2f} s")
    assert exit_codes == [0]
    assert not server.is_running()
    assert server.temporary_log and not server.log_path.exists(), "a clean stop leaves no temp log behind"
    assert wait_gone(lambda: processes_mentioning(str(tmp_path))) == []
    assert all(port_is_free("127.0.0.1", p) and not listening_addresses(p) for p in server.ports.values())
    with pytest.raises(TritongenError, match="no Triton server answers"):
        infer_from_arrays(server.grpc_url, "double", {"X": x})


def test_listens_on_tells_this_process_from_another(tmp_path):
    from tritongen.server.ports import listens_on

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert listens_on(os.getpid(), port) is True
        assert listens_on(os.getppid(), port) is False  # pytest's parent holds no socket on it
    assert listens_on(os.getpid(), port) is False  # closed


@pytest.mark.server
def test_a_server_that_loses_the_port_race_does_not_take_the_winners_answers(tmp_path, server_install, monkeypatch):
    """Two servers picking the same free default ports at once: the loser's readiness poll reaches the winner
    (it answers with its own models, all READY). The loser must see that the ports are not its own and start
    again on other ports, not report the winner's models as its own."""
    import tritongen.server.process as process

    winner_repo, loser_repo = tmp_path / "a", tmp_path / "b"
    write_model(winner_repo, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    write_model(loser_repo, "env_probe", ENV_CONFIG, ENV_MODEL)
    http, grpc, metrics = free_ports(3)
    with server_from_repository(ServeSpec(repo=winner_repo, http_port=http, grpc_port=grpc, metrics_port=metrics)):
        real = process.choose_ports
        calls = []

        def race_once(spec):
            calls.append(spec)
            return {"http": http, "grpc": grpc, "metrics": metrics} if len(calls) == 1 else real(spec)

        monkeypatch.setattr(process, "choose_ports", race_once)
        logs = tmp_path / "tmp"
        logs.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(logs))  # where the loser's logs go
        with server_from_repository(ServeSpec(repo=loser_repo)) as loser:
            assert loser.models == ("env_probe",)
            assert len(calls) == 2 and http not in loser.ports.values()
            # the lost attempt's log is gone (another start followed); the running server's is the only one
            assert [p.name for p in logs.glob("tritonserver-*.log")] == [loser.log_path.name]
        assert not list(logs.glob("tritonserver-*.log"))  # and a clean stop removes that one


@pytest.mark.server
@pytest.mark.slow
def test_a_model_for_a_backend_this_server_lacks_gets_a_fix_that_helps(tmp_path, server_install):
    torch = pytest.importorskip("torch")
    import tritongen
    from tritongen.errors import TritongenError
    from tritongen.server import ServeSpec, server_from_repository

    repo = tmp_path / "repo"
    tritongen.build(
        torch.nn.Linear(4, 3), example_inputs={"x": torch.randn(2, 4)}, name="ort", repo=repo, target="onnxruntime"
    )
    with pytest.raises(TritongenError) as caught:
        with server_from_repository(ServeSpec(repo=repo)):
            pass
    assert "model 'ort' failed to load" in caught.value.problem
    assert "no 'onnxruntime' backend" in caught.value.fix and "build with --target local" in caught.value.fix

    # a model tritongen did not write (no manifest): an ONNX file and an empty config.pbtxt, which Triton completes
    # as onnxruntime; "build with --target local" cannot apply, the fix names the build from its ONNX file instead,
    # and that command, typed as written, gives a model this server loads
    hand = tmp_path / "hand"
    (hand / "hand" / "1").mkdir(parents=True)
    shutil.copy(repo / "ort" / "1" / "model.onnx", hand / "hand" / "1" / "model.onnx")
    (hand / "hand" / "config.pbtxt").write_text("")
    with pytest.raises(TritongenError) as caught:
        with server_from_repository(ServeSpec(repo=hand)):
            pass
    command = re.search(r"\((tritongen build .+?)\) to serve it here", caught.value.fix)
    assert command, caught.value.fix
    root = Path(__file__).resolve().parent.parent
    argv = [sys.executable, "-m", *shlex.split(command.group(1))]
    subprocess.run(argv, check=True, capture_output=True, env=dict(os.environ, PYTHONPATH=str(root)), timeout=600)
    with server_from_repository(ServeSpec(repo=hand)) as server:
        assert server.models == ("hand",)


def _serve_in_a_process(tmp_path: Path, model_py: str):
    """`tritongen serve` of one Python model, in a process of its own with a temp directory of its own (the server's
    log goes there, to be looked at alone): (repo, that directory, the process)."""
    import subprocess

    repo = tmp_path / "repo"
    write_model(repo, "double", DOUBLE_CONFIG, model_py)
    ports = [str(p) for p in free_ports(3)]
    argv = [sys.executable, "-m", "tritongen", "serve", str(repo), "--allow-unverified", "double"]
    argv += ["--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]]
    root = Path(__file__).resolve().parent.parent
    logs = tmp_path / "tmp"
    logs.mkdir()
    env = dict(os.environ, PYTHONPATH=str(root), TMPDIR=str(logs))
    # Ctrl-C's default: a suite started in the background by a shell without job control inherits SIGINT ignored,
    # and Python then installs no handler for it (serve would never see the Ctrl-C these tests send)
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=root,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return repo, logs, proc


@contextlib.contextmanager
def _ended(proc):
    """``proc`` (a serve process) for the block, and ended on the way out whatever happened in it: SIGTERM (serve
    stops its server), then SIGKILL; a failed assertion must not leave the test waiting on a serve that runs on."""
    with proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.mark.server
@pytest.mark.parametrize("at", ["ready:", "press Ctrl-C"])  # while the banner prints, and once it has
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])  # Ctrl-C; docker stop, systemd, kill
def test_serve_stopped_by_ctrl_c_or_sigterm_says_so_and_leaves_nothing_running(
    tmp_path, server_install, at, signal_name
):
    import signal

    repo, logs, proc = _serve_in_a_process(tmp_path, DOUBLE_MODEL)
    with _ended(proc):
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # up to the line `at`; ends early if serve fails
            lines.append(line)
            if line.startswith(at):
                break
        assert lines and lines[-1].startswith(at), "".join(lines) + proc.stderr.read()
        (log,) = logs.glob("tritonserver-*.log")  # the running server's log
        proc.send_signal(getattr(signal, signal_name))  # at once, as Ctrl-C (or docker stop) would
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err  # a stop that was asked for and done
    assert "stopped: tritonserver unloaded its models and exited (code 0)" in err
    assert "Traceback" not in err
    assert wait_gone(lambda: processes_mentioning(str(logs)), timeout_s=60) == []  # it serves a copy kept there
    assert not log.exists() and not list(logs.glob("tritonserver-*.log"))  # removed after the clean stop
    assert not list(logs.glob("tritongen-*"))  # the checked copy and the server's folder too


@pytest.mark.server
def test_serve_whose_server_crashes_says_how_in_one_line_and_keeps_the_log(tmp_path, server_install):
    """tritonserver aborting under serve (as Triton's Python backend does on its shared-memory lock, server#8882):
    serve exits non-zero with one line naming the signal and quoting the log's own last word, and the log stays."""
    import signal

    repo, logs, proc = _serve_in_a_process(tmp_path, DOUBLE_MODEL)
    with _ended(proc):
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("press Ctrl-C"):
                break
        assert lines and lines[-1].startswith("press Ctrl-C"), "".join(lines) + proc.stderr.read()
        (log,) = logs.glob("tritonserver-*.log")
        (server,) = [
            p for p in processes_mentioning(str(logs)) if Path(f"/proc/{p}/comm").read_text().strip() == "tritonserver"
        ]
        os.kill(server, signal.SIGABRT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: tritonserver ended on its own: killed by signal 6 (SIGABRT)"), err
    assert f"read its log {log}" in line and log.exists()  # kept: the message names it
    said = crash_said(log)
    assert said is None or f"its log: {said.rstrip('.')}" in line  # an error line's problem drops its final stop


def crash_said(log: Path) -> str | None:
    """The line of the log serve should quote, found here independently of tritongen: None where the log has none."""
    import re

    found = re.findall(r"^(terminate called .*|Signal \(\d+\) received.*)$", log.read_text(errors="replace"), re.M)
    terminate = [f for f in found if f.startswith("terminate called")]
    return (terminate or found or [None])[-1]


SLOW_LOAD_MODEL = DOUBLE_MODEL.replace(
    "class TritonPythonModel:\n",
    "import time\n\n\nclass TritonPythonModel:\n    def initialize(self, args):\n        time.sleep(600)\n\n",
)


@pytest.mark.server
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_serve_stopped_while_it_boots_exits_and_leaves_no_log(tmp_path, server_install, signal_name):
    """Ctrl-C (or SIGTERM) while the models load: the stop was asked for, so no log is kept that no message names."""
    import signal

    repo, logs, proc = _serve_in_a_process(tmp_path, SLOW_LOAD_MODEL)
    with _ended(proc):
        # tritonserver's own command line: it runs, loading the checked copy of the repository (in its TMPDIR)
        booting = f"--model-repository={logs.resolve()}/tritongen-snapshot-"
        assert wait_gone(lambda: [] if processes_mentioning(booting) else ["no server yet"], timeout_s=60) == []
        assert list(logs.glob("tritonserver-*.log"))
        proc.send_signal(getattr(signal, signal_name))
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143}[signal_name], err
    assert "aborted" in err and "Traceback" not in err
    assert wait_gone(lambda: processes_mentioning(str(logs)), timeout_s=60) == []
    assert not list(logs.glob("tritonserver-*.log")) and not list(logs.glob("tritongen-*"))


# A module in the folder serve is started from, named as one the Python backend imports: the stub would import it
# first from its working directory, running code no check of the repository covers.
SHADOW_JSON = """\
import importlib, os, sys
open(os.environ["TRITONGEN_TEST_MARKER"], "a").write(f"imported by {os.getpid()}\\n")
del sys.modules["json"]
sys.path = [p for p in sys.path if p not in ("", ".", os.getcwd())]
sys.modules["json"] = importlib.import_module("json")
"""


@pytest.mark.server
def test_the_server_runs_in_an_empty_folder_of_its_own(tmp_path, server_install, monkeypatch):
    repo = tmp_path / "repo"
    write_model(
        repo, "double", DOUBLE_CONFIG, DOUBLE_MODEL.replace("import numpy as np", "import json\nimport numpy as np")
    )
    started_from = tmp_path / "cwd"
    started_from.mkdir()
    (started_from / "json.py").write_text(SHADOW_JSON)
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("TRITONGEN_TEST_MARKER", str(marker))
    monkeypatch.chdir(started_from)
    http, grpc, metrics = free_ports(3)
    server = server_from_repository(ServeSpec(repo=repo, http_port=http, grpc_port=grpc, metrics_port=metrics))
    try:
        assert server.workdir is not None and list(server.workdir.iterdir()) == []
        assert os.readlink(f"/proc/{server.pid}/cwd") == str(server.workdir)
        out = infer_from_arrays(server.grpc_url, "double", {"X": np.ones((1, 4), np.float32)})
        np.testing.assert_array_equal(out["Y"], np.full((1, 4), 3, np.float32))
    finally:
        server.stop()
    assert not marker.exists(), marker.read_text()
    assert not server.workdir.exists()


@pytest.mark.server
def test_explicit_model_control_on_loopback_needs_the_key_that_only_its_user_can_read(tmp_path, server_install):
    """Triton's load request carries a model's files (model.py included): with explicit model control open on
    loopback, any process of any user on the machine could run code in the server. It has a key now; tritongen's
    own clients find it beside the server's folder (mode 0700, the key file 0600)."""
    import tritonclient.grpc as grpcclient

    from tritongen.client import Triton
    from tritongen.server.admin import admin_headers_at

    write_model(tmp_path, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    http, grpc, metrics = free_ports(3)
    spec = ServeSpec(repo=tmp_path, http_port=http, grpc_port=grpc, metrics_port=metrics, model_control="explicit")
    with server_from_repository(spec) as server:
        assert server.admin_token
        home = server.workdir.parent
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        assert stat.S_IMODE((home / "admin-key").stat().st_mode) == 0o600
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            with pytest.raises(Exception, match="restricted"):  # anyone without the key: refused
                client.load_model("double")
        finally:
            client.close()
        found = admin_headers_at(server.grpc_url, "grpc")  # as tritongen's commands on this machine find it
        assert found == server.admin_headers("grpc")
        with Triton(server.grpc_url, "grpc", headers=found) as triton:
            triton.load("double")
            assert triton.ready_versions("double") == [1]
    assert not home.exists()


@pytest.mark.server
@pytest.mark.slow
def test_a_stop_held_by_an_open_client_connection_says_so(tmp_path, server_install):
    """Triton 2.51 waits its exit timeout (30 s) for an idle keep-alive HTTP connection to close, then exits at
    once without unloading its models (code 1): serve said "unloaded its models" all the same."""
    import signal
    import socket

    repo, logs, proc = _serve_in_a_process(tmp_path, DOUBLE_MODEL)
    with _ended(proc):
        assert proc.stdout is not None
        http_url = ""
        for line in proc.stdout:
            if line.strip().startswith("HTTP "):
                http_url = line.split()[-1]
            if line.startswith("press Ctrl-C"):
                break
        host, port = http_url.rsplit(":", 1)
        client = socket.create_connection((host, int(port)))  # a client that keeps its connection open
        client.sendall(f"GET /v2/health/ready HTTP/1.1\r\nHost: {http_url}\r\n\r\n".encode())
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        try:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
        finally:
            client.close()
    assert proc.returncode == 0, err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("stopped:")]
    assert "open HTTP connection to close" in line and "without unloading its models (code 1)" in line, line
    assert "unloaded its models and exited" not in line and "Traceback" not in err


def test_stop_words_read_triton_251s_exit_timeout_lines(tmp_path):
    from tritongen.server.readiness import stop_words

    log = tmp_path / "server.log"
    log.write_text(
        'I1206 10:08:57.202746 21918 http_server.cc:248] "Timeout 2: Found 2 HTTP service connections"\n'
        'I1206 10:08:58.202900 21918 http_server.cc:248] "Timeout 1: Found 1 HTTP service connections"\n'
        "Signal (15) received.\n"
        'E1206 10:08:59.204102 21918 main.cc:535] "failed to stop server: Internal - Exit timeout expired. '
        'Exiting immediately."\n'
    )
    assert stop_words(1, log).startswith("tritonserver waited 2 s for 2 open HTTP connections to close")
    assert stop_words(0, log) == "tritonserver unloaded its models and exited (code 0)"
    log.write_text("Signal (15) received.\n")
    assert stop_words(1, log) == "tritonserver unloaded its models and exited (code 1)"


def test_port_0_asks_for_any_free_port_never_the_default(tmp_path):
    """A newcomer's serve took 8000-8002 because they were free; --http-port 0 was refused as no port number."""
    import socket

    from tritongen.server.ports import choose_ports

    spec = ServeSpec(repo=tmp_path, http_port=0, grpc_port=0, metrics_port=0)
    chosen = choose_ports(spec)
    assert len(set(chosen.values())) == 3 and not set(chosen.values()) & {8000, 8001, 8002}
    for port in chosen.values():
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free


def test_a_port_given_for_one_protocol_is_never_anothers_default(tmp_path):
    """--grpc-port 8000 with 8000-8002 free chose 8000 for HTTP too: tritonserver printed its help and exited."""
    from tritongen.server.ports import DEFAULT_PORTS, choose_ports, port_is_free

    if not all(port_is_free("127.0.0.1", p) for p in DEFAULT_PORTS.values()):
        pytest.skip("the default ports are taken on this machine")  # the clash needs the defaults free
    for given in ({"grpc_port": 8000}, {"metrics_port": 8001}, {"http_port": 8002, "grpc_port": 8000}):
        chosen = choose_ports(ServeSpec(repo=tmp_path, **given))
        assert len(set(chosen.values())) == 3, (given, chosen)
        for key, port in given.items():
            assert chosen[key.removesuffix("_port")] == port


def test_a_ctrl_c_while_the_server_unloads_kills_it_and_cleans_up(tmp_path, caplog):
    """Ctrl-C pressed again while stop() waited for the unload: serve exited with tritonserver still running (only
    the parent-death signal ended it later), its private folder and log left in /tmp, and the exit-time hook no
    longer knew of it."""
    from tritongen.server import process as process_module
    from tritongen.server.process import RunningServer

    ignores_sigint = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(120)"
    child = subprocess.Popen([sys.executable, "-c", ignores_sigint], start_new_session=True)
    time.sleep(0.5)  # its handler set
    log = tmp_path / "server.log"
    log.write_text("")
    server = RunningServer(ServeSpec(repo=tmp_path), None, child, [], {"http": 1, "grpc": 2, "metrics": 3}, log, None)
    private = tmp_path / "private"
    (private / "cwd").mkdir(parents=True)
    server.workdir = private / "cwd"
    cleaned = []
    server.cleanups.append(lambda: cleaned.append(True))

    real_wait = child.wait
    presses = iter([KeyboardInterrupt])

    def wait(timeout=None):
        if timeout is not None and next(presses, None) is KeyboardInterrupt:
            raise KeyboardInterrupt  # the second Ctrl-C, while it waits for the unload
        return real_wait(timeout)

    child.wait = wait  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        server.stop(timeout_s=60)
    assert child.poll() is not None and not private.exists() and cleaned == [True]
    assert server not in process_module._RUNNING
    # killed (not a clean exit): the temporary log is kept, and named (the Python API printed nothing of it)
    assert log.exists() and f"its log is kept: {log}" in caplog.text


@pytest.mark.server
def test_a_server_log_that_cannot_be_written_is_one_error_and_nothing_is_left(
    server_install, tiny_repository, tmp_path
):
    """serve(verify=False, log_path=<a folder>) raised a raw IsADirectoryError from the Python API."""
    from tritongen.server import server_from_repository

    before = set(Path(tempfile.gettempdir()).glob("tritongen-serve-*"))
    with pytest.raises(TritongenError, match=f"cannot write the server log {tmp_path}: Is a directory"):
        server_from_repository(ServeSpec(repo=tiny_repository, log_path=tmp_path))
    assert set(Path(tempfile.gettempdir()).glob("tritongen-serve-*")) == before
