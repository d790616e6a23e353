"""serve checks and loads one private copy of the repository (tritongen.server.snapshot)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

import tritongen
from tests.conftest import free_ports
from tritongen.errors import TritongenError
from tritongen.server.snapshot import snapshot_from_repository, with_repository_words


def test_the_copy_holds_every_file_keeps_links_as_links_and_is_private(tmp_path):
    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    (repo / "m" / "config.pbtxt").write_text('name: "m"')
    (repo / "m" / "1" / "model.py").write_bytes(b"x" * 3_000_000)  # more than one chunk
    (repo / ".tritongen-signature.sig").write_text("sig")
    (repo / "m" / "2").symlink_to(repo / "m" / "1")
    (repo / "m" / "link.txt").symlink_to("/etc/hostname")
    (repo / "m" / "relative").symlink_to("1/model.py")
    copy = snapshot_from_repository(repo, tmp_path / "copy")
    assert stat.S_IMODE(copy.stat().st_mode) == 0o700
    assert (copy / "m" / "1" / "model.py").read_bytes() == b"x" * 3_000_000
    assert (copy / ".tritongen-signature.sig").read_text() == "sig"
    assert os.readlink(copy / "m" / "2") == str(repo / "m" / "1")  # a link stays a link: the checks refuse it
    assert os.readlink(copy / "m" / "link.txt") == "/etc/hostname"
    assert os.readlink(copy / "m" / "relative") == f"{repo}/m/1/model.py"  # where it pointed, not into the copy
    with pytest.raises(TritongenError, match=r"could not be made in .* \(File exists\)"):
        snapshot_from_repository(repo, copy)


def test_a_special_file_is_refused(tmp_path):
    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    os.mkfifo(repo / "m" / "config.pbtxt")  # a plain open would hang on it
    with pytest.raises(TritongenError, match=r"m/config.pbtxt in .* is not a regular file"):
        snapshot_from_repository(repo, tmp_path / "copy")


def test_a_message_about_the_copy_names_the_repository(tmp_path):
    error = TritongenError(f"{tmp_path}/copy/m is wrong", f"fix {tmp_path}/copy/m", details=f"{tmp_path}/copy")
    with_repository_words(error, tmp_path / "copy", Path("/data/repo"))
    assert error.message == "/data/repo/m is wrong: fix /data/repo/m" and error.details == "/data/repo"


MARKER_MODEL_PY = 'open(__import__("os").environ["TRITONGEN_TEST_MARKER"], "a").write("loaded unchecked\\n")\n'


@pytest.mark.server
def test_a_file_changed_after_the_checks_is_not_what_triton_loads(tmp_path, server_install, monkeypatch):
    """serve checked the repository and then Triton read it again from disk: a file changed in between (here,
    the moment the server is started) was loaded unchecked. Triton now loads the copy the checks read."""
    torch = pytest.importorskip("torch")
    import tritongen.server as server_module

    repo = tmp_path / "repo"
    net = torch.nn.Linear(4, 3)
    tritongen.build(net, example_inputs=[torch.randn(2, 4)], name="lin", repo=repo)
    marker = tmp_path / "marker.txt"
    monkeypatch.setenv("TRITONGEN_TEST_MARKER", str(marker))
    real = server_module.server_from_repository

    def swapped_then_started(spec, **options):
        model_py = repo / "lin" / "1" / "model.py"
        model_py.write_text(MARKER_MODEL_PY + model_py.read_text())  # after every check, before the load
        return real(spec, **options)

    monkeypatch.setattr(server_module, "server_from_repository", swapped_then_started)
    http, grpc, metrics = free_ports(3)
    with tritongen.serve(repo, http_port=http, grpc_port=grpc, metrics_port=metrics) as server:
        assert server.spec.repo != repo.resolve() and server.spec.repo.name == "repo"
        snapshot = server.spec.repo
        x = np.ones((1, 4), np.float32)
        answer = tritongen.infer("lin", url=server.grpc_url, inputs={"input_0": x}).outputs
        want = net(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(next(iter(answer.values())), want, rtol=1e-4, atol=1e-5)
    assert not marker.exists()
    assert not snapshot.parent.exists()  # the copy is removed with the server
    with pytest.raises(TritongenError, match="lin/1/model.py does not match its manifest"):
        with tritongen.serve(repo, http_port=http, grpc_port=grpc, metrics_port=metrics):
            pass


def _poller(repo: Path, tmp_path: Path, check=None):
    """A CheckedPoll over ``repo`` serving a copy in ``tmp_path/tritongen-snapshot-t/copy``, recording its checks
    and lines."""
    from tritongen.server.snapshot import CheckedPoll, fingerprint

    root = tmp_path / "tritongen-snapshot-t"
    (root / "copy").mkdir(parents=True)
    seen = fingerprint(repo)
    served = snapshot_from_repository(repo, root / "copy" / repo.name)
    calls: dict[str, list] = {"checked": [], "said": []}

    def checking(copy: Path) -> None:
        calls["checked"].append(sorted(p.name for p in copy.iterdir()))
        if check is not None:
            check(copy)

    poll = CheckedPoll(repo, served, seen, checking, 3600, calls["said"].append)
    return poll, served, calls


def test_a_checked_change_is_swapped_into_the_served_copy(tmp_path):
    repo = tmp_path / "repo"
    for name in ("a", "b"):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(f'name: "{name}"')
    poll, served, calls = _poller(repo, tmp_path)
    assert poll.poll_once() == [] and calls["checked"] == []  # nothing changed: nothing copied or checked
    (repo / "a" / "tritongen-rollout.lock").write_text("pid")  # rollout's own files: no change to load
    (repo / ".tritongen-signature.sig").write_text("re-signed")  # not a model
    (repo / ".staging-build").mkdir()  # a build's hidden staging folder: never copied
    assert poll.poll_once() == [] and calls["checked"] == []
    (repo / "a" / "2").mkdir()
    (repo / "a" / "2" / "model.py").write_text("v2")
    inode_of_b = (served / "b").stat().st_ino
    assert poll.poll_once() == ["a"]
    assert (served / "a" / "2" / "model.py").read_text() == "v2"
    assert (served / "b").stat().st_ino == inode_of_b  # an unchanged model is left where it is
    assert calls["checked"] == [[".tritongen-signature.sig", "a", "b"]]
    shutil.rmtree(repo / "b")
    assert poll.poll_once() == ["b"] and not (served / "b").exists()
    assert sorted(p.name for p in served.parent.parent.iterdir()) == ["copy"]  # no staging copy left behind
    assert calls["said"][-1] == f"poll: checked the change to b in {repo}; Triton loads it at its next poll"


def test_a_change_that_fails_the_check_is_not_loaded_until_the_repository_changes_again(tmp_path):
    repo = tmp_path / "repo"
    (repo / "a" / "1").mkdir(parents=True)
    (repo / "a" / "1" / "model.py").write_text("v1")

    def check(copy: Path) -> None:
        if (copy / "a" / "1" / "model.py").read_text() == "evil":
            raise TritongenError(f"{copy}/a/1/model.py does not match its manifest", "rebuild it")

    poll, served, calls = _poller(repo, tmp_path, check)
    (repo / "a" / "1" / "model.py").write_text("evil")
    assert poll.poll_once() == []
    assert (served / "a" / "1" / "model.py").read_text() == "v1"  # the server keeps what it had
    (line,) = calls["said"]
    assert line == (
        f"poll: not loaded, the change to a in {repo}: {repo}/a/1/model.py does not match its manifest: rebuild it"
    )
    assert poll.poll_once() == [] and len(calls["checked"]) == 1  # unchanged since: not checked again
    (repo / "a" / "1" / "model.py").write_text("v2")
    assert poll.poll_once() == ["a"] and (served / "a" / "1" / "model.py").read_text() == "v2"


def test_a_poll_removing_a_hand_written_model_the_flag_names_is_loaded(tmp_path):
    """serve --allow-unverified a,b in poll mode, then b removed: the change is checked and loaded (the first check
    refuses a name that is no model folder; a poll's changes may remove one)."""
    from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, write_model
    from tritongen.api import _serve_check

    repo = tmp_path / "repo"
    for name in ("a", "b"):
        write_model(repo, name, DOUBLE_CONFIG.replace('name: "double"', f'name: "{name}"'), DOUBLE_MODEL)
    check = _serve_check(repo, ("a", "b"), None, tmp_path / "key", None)
    poll, served, calls = _poller(repo, tmp_path, check)
    check(served)  # what serve checks before Triton starts
    shutil.rmtree(repo / "b")
    assert poll.poll_once() == ["b"] and not (served / "b").exists(), calls["said"]
    with pytest.raises(TritongenError, match="allow_unverified names 'b', which is no model folder"):
        _serve_check(repo, ("a", "b"), None, tmp_path / "key", None)(served)  # a serve started now
    # in poll mode a hand-written model may come later: its name is allowed before its folder exists
    _serve_check(repo, ("a", "b"), None, tmp_path / "key", None, poll=True)(served)
    write_model(repo, "b", DOUBLE_CONFIG.replace('name: "double"', 'name: "b"'), DOUBLE_MODEL)
    assert poll.poll_once() == ["b"] and (served / "b").is_dir(), calls["said"]


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    from tritongen.server.snapshot import exchange

    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("new")
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "f").write_text("old")
    exchange(tmp_path / "new", tmp_path / "live")
    assert (tmp_path / "live" / "f").read_text() == "new" and (tmp_path / "new" / "f").read_text() == "old"


def _wait_for(condition, timeout_s: float = 90.0):
    """Poll ``condition`` until it is truthy (a deadline far beyond the few seconds it needs, not a timing bound)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    return condition()


@pytest.mark.server
def test_serve_with_poll_loads_a_checked_new_version_and_refuses_an_unchecked_one(tmp_path, server_install):
    """Triton's own poll loaded whatever appeared in the repository after serve's checks; now Triton polls the
    checked copy, and tritongen copies and checks each change of the repository before swapping it in."""
    torch = pytest.importorskip("torch")
    from tritongen.client import Triton

    repo = tmp_path / "repo"
    example = {"x": torch.randn(2, 4)}
    tritongen.build(torch.nn.Linear(4, 3), example_inputs=example, name="lin", repo=repo)
    said: list[str] = []
    http, grpc, metrics = free_ports(3)
    with tritongen.serve(
        repo, http_port=http, grpc_port=grpc, metrics_port=metrics, model_control="poll", progress=said.append
    ) as server:
        assert server.checked_poll is not None and server.spec.model_control == "poll" and not server.admin_token

        def ready() -> list[int]:
            with Triton(server.grpc_url, "grpc") as triton:
                return triton.ready_versions("lin")

        tritongen.build(torch.nn.Linear(4, 3), example_inputs=example, name="lin", repo=repo, new_version=True)
        assert _wait_for(lambda: ready() == [2]), (ready(), said)
        hand_made = repo / "lin" / "3"
        hand_made.mkdir()
        for name in ("model.py", "model.onnx"):
            (hand_made / name).write_bytes((repo / "lin" / "2" / name).read_bytes())
        assert _wait_for(lambda: any("not loaded" in line for line in said)), said
        assert "the change to lin" in said[-1] and "lin/3 has no manifest" in said[-1], said
        assert ready() == [2] and not (server.spec.repo / "lin" / "3").exists()


def test_a_snapshot_whose_serve_is_gone_is_removed_at_the_next_start(tmp_path, monkeypatch):
    """A serve killed with SIGKILL left its copy of the repository (hundreds of MB for a text model) in the temp
    folder for good; the next snapshot removes it, and only it."""
    import os
    import subprocess
    import sys
    import tempfile

    from tritongen.server import snapshot

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    def made(name: str, owner: str | None) -> Path:
        root = tmp_path / f"{snapshot.SNAPSHOT_PREFIX}{name}"
        (root / "copy" / "repo").mkdir(parents=True)
        if owner is not None:
            (root / snapshot.OWNER_NAME).write_text(owner)
        return root

    running = made("running", snapshot._process_key(os.getpid()))
    dead = made("dead", f"{gone.pid} 12345.00")
    reused = made("reused", f"{os.getpid()} 12345.00")  # this pid, another process's start time
    old = made("old", None)  # an older tritongen's: no owner record
    orphaned = made("orphaned", f"{gone.pid} 12345.00")
    server = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", f"--model-repository={orphaned}/copy/repo"]
    )  # a tritonserver that outlived its serve still serves it
    try:
        removed = snapshot.remove_stale_snapshots()
    finally:
        server.kill()
        server.wait()
    assert sorted(removed) == sorted([dead, reused])
    assert running.is_dir() and old.is_dir() and orphaned.is_dir() and not dead.exists() and not reused.exists()
    root = snapshot.snapshot_root(tmp_path / "repo")  # a new one records its serve
    assert (root / snapshot.OWNER_NAME).read_text() == snapshot._process_key(os.getpid())


def test_a_file_written_at_the_top_while_a_round_copies_does_not_hold_the_change_back(tmp_path, monkeypatch):
    """Found by an attacker: a log file written into the repository's top folder changed the whole repository's
    fingerprint during every copy, and no change was ever loaded while it was written."""
    from tritongen.server import snapshot

    repo = tmp_path / "repo"
    (repo / "a" / "1").mkdir(parents=True)
    (repo / "a" / "1" / "model.py").write_text("v1")
    poll, served, calls = _poller(repo, tmp_path)
    real = snapshot.snapshot_from_repository

    def copied_while_logging(*args, **kwargs):
        done = real(*args, **kwargs)
        with open(repo / "app.log", "a") as log:  # what a process writing its log there does meanwhile
            log.write("a line\n")
        return done

    monkeypatch.setattr(snapshot, "snapshot_from_repository", copied_while_logging)
    (repo / "a" / "1" / "model.py").write_text("v2")
    assert poll.poll_once() == ["a"] and (served / "a" / "1" / "model.py").read_text() == "v2"


def test_a_copy_the_round_cannot_make_is_not_tried_again_until_the_repository_changes(tmp_path):
    """Found by an attacker: a FIFO in a model folder made every round copy the whole repository again, forever."""
    repo = tmp_path / "repo"
    (repo / "a" / "1").mkdir(parents=True)
    (repo / "a" / "1" / "model.py").write_text("v1")
    poll, served, calls = _poller(repo, tmp_path)
    os.mkfifo(repo / "a" / "1" / "pipe")
    assert poll.poll_once() == [] and poll.rounds == 1
    assert poll.poll_once() == [] and poll.rounds == 1  # unchanged since: not copied again
    (line,) = calls["said"]
    assert line.startswith(f"poll: not loaded, the change to a in {repo}: ") and "is not a regular file" in line
    (repo / "a" / "1" / "pipe").unlink()
    (repo / "a" / "1" / "model.py").write_text("v2")
    assert poll.poll_once() == ["a"] and poll.rounds == 2


def test_a_copy_the_machine_had_no_room_for_is_tried_again_each_poll(tmp_path, monkeypatch):
    """A reviewer's catch: remembered as tried like a FIFO, a copy refused for want of room was never made again
    once space was freed (the repository had not changed)."""
    from tritongen.errors import TritongenError
    from tritongen.server import snapshot

    repo = tmp_path / "repo"
    (repo / "a" / "1").mkdir(parents=True)
    (repo / "a" / "1" / "model.py").write_text("v1")
    poll, served, calls = _poller(repo, tmp_path)
    (repo / "a" / "1" / "model.py").write_text("v2")
    real = snapshot.shutil.disk_usage
    monkeypatch.setattr(snapshot.shutil, "disk_usage", lambda where: real(where)._replace(free=0))
    with pytest.raises(TritongenError, match="MiB free"):  # to the poll loop, which says it tries again each poll
        poll.poll_once()
    monkeypatch.setattr(snapshot.shutil, "disk_usage", real)
    assert poll.poll_once() == ["a"] and (served / "a" / "1" / "model.py").read_text() == "v2"
