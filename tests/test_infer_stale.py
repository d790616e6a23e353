"""``infer --check`` against a local server that started before the checked build (``build --force`` into the
repository it serves, model control none): the failure says so, with the fix, instead of only "see the table"."""

from __future__ import annotations

import importlib
import os
import sys
import time

import pytest

# tritongen.infer and tritongen.perf, the attributes, are the API's functions: the modules by name
infer_module = importlib.import_module("tritongen.infer")
ports = importlib.import_module("tritongen.server.ports")


def _model(tmp_path, built_s: float):
    """A model folder without a manifest (its files' mtime is the build time), built at ``built_s``."""
    folder = tmp_path / "repo" / "m"
    (folder / "1").mkdir(parents=True)
    for path in (folder / "config.pbtxt", folder / "1" / "model.onnx"):
        path.write_text("x")
        os.utime(path, (built_s, built_s))
    return tmp_path / "repo"


def test_a_server_started_before_the_build_is_named_with_its_fix(tmp_path, monkeypatch):
    """This process stands in for the server: it started before the files below were written."""
    import psutil

    started = psutil.Process().create_time()
    repo = _model(tmp_path, started + 5)
    monkeypatch.setattr(ports, "server_pid_at", lambda url: os.getpid())
    stale = infer_module.stale_server("127.0.0.1:8001", repo, "m", 1)
    assert stale is not None
    assert stale.cause == (
        f"model m was rebuilt at {infer_module._clock(started + 5)} after the server started at "
        f"{infer_module._clock(started)} and still serves the files it loaded then"
    )
    assert stale.fix == "restart serve (or serve with --model-control poll, or build with --new-version)"
    assert infer_module.stale_server("http://127.0.0.1:8000", repo, "m", 1) is not None  # a URL with its scheme


def test_no_cause_is_claimed_for_a_build_older_than_the_server_or_no_local_server(tmp_path, monkeypatch):
    import psutil

    repo = _model(tmp_path, psutil.Process().create_time() - 5)
    monkeypatch.setattr(ports, "server_pid_at", lambda url: os.getpid())
    assert infer_module.stale_server("127.0.0.1:8001", repo, "m", 1) is None
    monkeypatch.setattr(ports, "server_pid_at", lambda url: None)
    assert infer_module.stale_server("127.0.0.1:8001", _model(tmp_path / "b", time.time() + 5), "m", 1) is None


@pytest.mark.server
@pytest.mark.slow
def test_check_after_a_forced_rebuild_of_a_served_model_says_to_restart(tmp_path, server_install):
    import subprocess

    torch = pytest.importorskip("torch")
    import tritongen
    from tests.conftest import free_ports

    repo = tmp_path / "repo"
    example = {"x": torch.randn(2, 4)}
    torch.manual_seed(0)
    tritongen.build(torch.nn.Linear(4, 3), example_inputs=example, name="tiny", repo=repo)
    http, grpc, metrics = free_ports(3)
    with tritongen.serve(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, ready_timeout_s=120) as server:
        first = tritongen.infer("tiny", repo=repo, url=server.grpc_url, check=True)
        assert first.check is not None and first.check.ok and first.stale is None
        torch.manual_seed(1)  # other weights, same version: the server (model control none) keeps the old ones
        tritongen.build(torch.nn.Linear(4, 3), example_inputs=example, name="tiny", repo=repo, force=True)
        again = tritongen.infer("tiny", repo=repo, url=server.grpc_url, check=True)
        assert again.check is not None and not again.check.ok and again.stale is not None
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tritongen",
                "infer",
                "tiny",
                "--repo",
                str(repo),
                "--url",
                server.grpc_url,
                "--check",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(
        "error: served outputs differ from the PyTorch reference beyond tolerance (model tiny was rebuilt at "
    )
    assert line.endswith(  # tritongen serve serves a checked copy of the repository, made at its start
        "and still serves the copy of the repository it checked at its start): restart serve (or serve with "
        "--model-control poll, or build with --new-version and tritongen rollout)"
    )
    assert " after the server started at " in line


@pytest.mark.parametrize("spelling", ["--model-repository={}", "--model-repository {}"])
def test_check_from_another_folder_reads_the_repository_the_local_server_serves(tmp_path, monkeypatch, spelling):
    """`infer voice --check` from a folder without model_repository said "no build of model 'voice' in
    model_repository" while the server on this machine served it from another folder (which serve records). A
    server started by hand names it either way (the space form was not read: one reader now, server_options)."""
    import subprocess
    from pathlib import Path

    repo = _model(tmp_path, time.time())
    stand_in = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", *spelling.format(repo).split(" ")]
    )  # what tritonserver's command line names
    try:
        deadline = time.monotonic() + 10
        while b"sleep(60)" not in Path(f"/proc/{stand_in.pid}/cmdline").read_bytes():  # empty until its exec
            assert time.monotonic() < deadline
            time.sleep(0.01)
        monkeypatch.setattr(ports, "server_pid_at", lambda url: stand_in.pid)
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        spec = infer_module.InferSpec(name="m", check=True)
        assert infer_module.with_served_repository(spec, "127.0.0.1:8001").repo == repo
        assert infer_module.with_served_repository(infer_module.InferSpec(name="other"), "127.0.0.1:8001").repo == Path(
            "model_repository"
        )  # not a model it serves: as given
        given = infer_module.InferSpec(name="m", repo=tmp_path / "mine")
        assert infer_module.with_served_repository(given, "127.0.0.1:8001").repo == tmp_path / "mine"
    finally:
        stand_in.kill()
        stand_in.wait()


def test_a_server_serving_several_repositories_is_found_serving_each(tmp_path, monkeypatch):
    """Triton takes --model-repository several times: the build in the first of two is what it serves (the last
    value alone hid the stale-server cause), and a repository it does not name is not."""
    import subprocess
    from pathlib import Path

    other = tmp_path / "other"
    other.mkdir()
    stand_in = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(60)",
            "--model-repository",
            "repo",
            "--model-repository",
            str(other),
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while b"sleep(60)" not in Path(f"/proc/{stand_in.pid}/cmdline").read_bytes():  # empty until its exec
            assert time.monotonic() < deadline
            time.sleep(0.01)
        import psutil

        repo = _model(tmp_path / "cwd", psutil.Process(stand_in.pid).create_time() + 5)  # built after its start
        monkeypatch.setattr(ports, "server_pid_at", lambda url: stand_in.pid)
        monkeypatch.setattr(psutil.Process, "cwd", lambda self: str(tmp_path / "cwd"))  # "repo" is relative to it
        stale = infer_module.stale_server("127.0.0.1:8001", repo, "m", 1)
        assert stale is not None and stale.cause.startswith("model m was rebuilt at ")
        assert infer_module.stale_server("127.0.0.1:8001", _model(tmp_path / "third", time.time() + 5), "m", 1) is None
    finally:
        stand_in.kill()
        stand_in.wait()


@pytest.mark.server
def test_a_typo_in_the_name_is_named_from_the_models_the_server_serves(tiny_server, tmp_path, monkeypatch, capsys):
    """`infer doubel` from a folder without the build said "no build of model 'doubel' in model_repository": no
    did-you-mean, though the server serves 'double'."""
    from tests.conftest import run_cli

    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["infer", "doubel", "--url", tiny_server.grpc_url], capsys)
    assert code == 1 and err.strip() == (
        f"error: no build of model 'doubel' in model_repository, and the server at {tiny_server.grpc_url} serves no "
        "model 'doubel': did you mean 'double'? check the model's name"
    ), err
    code, out, err = run_cli(["infer", "zzzzzz", "--url", tiny_server.grpc_url], capsys)
    assert code == 1 and err.startswith("error: no build of model 'zzzzzz' in model_repository: "), err  # no near name
