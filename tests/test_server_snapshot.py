"""serve checks and loads one private copy of the repository (tritongen.server.snapshot)."""

from __future__ import annotations

import os
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
    copy = snapshot_from_repository(repo, tmp_path / "copy")
    assert stat.S_IMODE(copy.stat().st_mode) == 0o700
    assert (copy / "m" / "1" / "model.py").read_bytes() == b"x" * 3_000_000
    assert (copy / ".tritongen-signature.sig").read_text() == "sig"
    assert os.readlink(copy / "m" / "2") == str(repo / "m" / "1")  # a link stays a link: the checks refuse it
    assert os.readlink(copy / "m" / "link.txt") == "/etc/hostname"
    with pytest.raises(FileExistsError):
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
    assert str(error) == "/data/repo/m is wrong: fix /data/repo/m" and error.details == "/data/repo"


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

    def swapped_then_started(spec):
        model_py = repo / "lin" / "1" / "model.py"
        model_py.write_text(MARKER_MODEL_PY + model_py.read_text())  # after every check, before the load
        return real(spec)

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
    """A CheckedPoll over ``repo`` serving a copy in ``tmp_path/root``, recording its checks, reloads and lines."""
    from tritongen.server.snapshot import CheckedPoll, fingerprint

    root = tmp_path / "root"
    root.mkdir()
    seen = fingerprint(repo)
    served = snapshot_from_repository(repo, root / repo.name)
    calls: dict[str, list] = {"checked": [], "reloaded": [], "said": []}

    def checking(copy: Path) -> None:
        calls["checked"].append(sorted(p.name for p in copy.iterdir()))
        if check is not None:
            check(copy)

    def reload(model: str, present: bool) -> None:
        calls["reloaded"].append((model, present))

    poll = CheckedPoll(repo, served, seen, checking, reload, 3600, calls["said"].append)
    return poll, served, calls


def test_a_checked_change_is_moved_into_the_served_copy_and_loaded(tmp_path):
    repo = tmp_path / "repo"
    for name in ("a", "b"):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "config.pbtxt").write_text(f'name: "{name}"')
    poll, served, calls = _poller(repo, tmp_path)
    assert poll.poll_once() == [] and calls["checked"] == []  # nothing changed: nothing copied or checked
    (repo / "a" / "2").mkdir()
    (repo / "a" / "2" / "model.py").write_text("v2")
    (repo / "a" / "tritongen-rollout.json").write_text("{}")  # rollout's own record: no change to load
    assert poll.poll_once() == ["a"]
    assert (served / "a" / "2" / "model.py").read_text() == "v2"
    assert calls["checked"] == [["a", "b"]] and calls["reloaded"] == [("a", True)]
    shutil_rmtree = __import__("shutil").rmtree
    shutil_rmtree(repo / "b")
    assert poll.poll_once() == ["b"] and calls["reloaded"][-1] == ("b", False)
    assert not (served / "b").exists()
    assert sorted(p.name for p in served.parent.iterdir()) == ["repo"]  # no staging copy left behind


def test_a_change_that_fails_the_check_is_not_loaded_until_the_repository_changes_again(tmp_path):
    repo = tmp_path / "repo"
    (repo / "a" / "1").mkdir(parents=True)
    (repo / "a" / "1" / "model.py").write_text("v1")

    def check(copy: Path) -> None:
        if (copy / "a" / "1" / "model.py").read_text() == "evil":
            raise TritongenError(f"{copy}/a/1/model.py does not match its manifest", "rebuild it")

    poll, served, calls = _poller(repo, tmp_path, check)
    (repo / "a" / "1" / "model.py").write_text("evil")
    assert poll.poll_once() == [] and calls["reloaded"] == []
    assert (served / "a" / "1" / "model.py").read_text() == "v1"  # the server keeps what it had
    (line,) = calls["said"]
    assert (
        line
        == f"poll: not loaded, the change to a in {repo}: {repo}/a/1/model.py does not match its manifest: rebuild it"
    )
    assert poll.poll_once() == [] and len(calls["checked"]) == 1  # unchanged since: not checked again
    (repo / "a" / "1" / "model.py").write_text("v2")
    assert poll.poll_once() == ["a"] and (served / "a" / "1" / "model.py").read_text() == "v2"


@pytest.mark.server
def test_serve_with_poll_loads_a_checked_new_version_and_refuses_an_unchecked_one(tmp_path, server_install):
    """Triton's own poll loaded whatever appeared in the repository after serve's checks; tritongen now polls,
    copies and checks each change before Triton loads it (explicit model control underneath)."""
    torch = pytest.importorskip("torch")
    from tritongen.client import Triton

    repo = tmp_path / "repo"
    example = {"x": torch.randn(2, 4)}
    tritongen.build(torch.nn.Linear(4, 3), example_inputs=example, name="lin", repo=repo)
    said: list[str] = []
    http, grpc, metrics = free_ports(3)
    with tritongen.serve(
        repo,
        http_port=http,
        grpc_port=grpc,
        metrics_port=metrics,
        model_control="poll",
        poll_interval_s=3600,  # this test polls by hand: nothing depends on timing
        progress=said.append,
    ) as server:
        poll = server.checked_poll
        assert poll is not None and server.spec.model_control == "explicit" and server.admin_token
        tritongen.build(torch.nn.Linear(4, 3), example_inputs=example, name="lin", repo=repo, new_version=True)
        assert poll.poll_once() == ["lin"]
        with Triton(server.grpc_url, "grpc", headers=server.admin_headers("grpc")) as triton:
            assert triton.ready_versions("lin") == [2]
        hand_made = repo / "lin" / "3"
        hand_made.mkdir()
        for name in ("model.py", "model.onnx"):
            (hand_made / name).write_bytes((repo / "lin" / "2" / name).read_bytes())
        assert poll.poll_once() == []
        assert "poll: not loaded, the change to lin" in said[-1] and "lin/3 has no manifest" in said[-1], said
        with Triton(server.grpc_url, "grpc", headers=server.admin_headers("grpc")) as triton:
            assert triton.ready_versions("lin") == [2]
        assert not (server.spec.repo / "lin" / "3").exists()
