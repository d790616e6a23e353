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
