"""What a rollout loads is what verify checked: the version's files are read once, each hashed against its
manifest, and the gate's candidate and the switch both load those bytes (sent with the load request), so a
file changed in the repository meanwhile is refused (changed before the read) or never served (changed after).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.conftest import free_ports
from tritongen.errors import TritongenError

torch = pytest.importorskip("torch")

NAME = "tiny"
# appended to a model.py: every output becomes 1234 (what a swapped file would serve)
SWAP = """

_verified_respond = TritonPythonModel._respond


def _swapped_respond(self, outputs):
    return _verified_respond(self, [o * 0 + 1234.0 for o in outputs])


TritonPythonModel._respond = _swapped_respond
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import tritongen

    repo = tmp_path_factory.mktemp("rollout_files") / "repo"
    example = {"x": torch.randn(2, 4, generator=torch.Generator().manual_seed(1))}
    for new_version in (False, True):  # versions 1 and 2, the same weights
        torch.manual_seed(0)
        tritongen.build(torch.nn.Linear(4, 3), example_inputs=example, name=NAME, repo=repo, new_version=new_version)
    return repo


@pytest.fixture
def repo(built, tmp_path):
    return shutil.copytree(built, tmp_path / "repo")


def _files(repo, version: int) -> dict[str, bytes]:
    from tritongen.deploy.rollout import _model_files
    from tritongen.verify import manifest_digests

    return _model_files(repo / NAME, version, manifest_digests(repo / NAME))


def test_the_files_sent_are_the_verified_ones(repo):
    files = _files(repo, 2)
    assert {"2/model.py", "2/model.onnx"} <= set(files)
    assert not any(rel.startswith(("1/", "2/tritongen/")) for rel in files)
    assert all(data == (repo / NAME / rel).read_bytes() for rel, data in files.items())


@pytest.mark.parametrize(
    "change, words",
    [
        ("swap", "tiny/2/model.py does not match its manifest (sha256 differs): it was changed or swapped after"),
        ("add", "tiny/2/extra.py is not listed in any manifest (it appeared after verify)"),
        ("delete", "tiny/2/model.onnx is missing (removed after verify)"),
    ],
)
def test_a_file_changed_after_verify_is_refused(repo, change, words):
    from tritongen.verify import check_verified

    check_verified(repo)  # what rollout checks first; the change comes after it
    version = repo / NAME / "2"
    if change == "swap":
        (version / "model.py").write_text((version / "model.py").read_text() + SWAP)
    elif change == "add":
        (version / "extra.py").write_text("print('not built by tritongen')\n")
    else:
        (version / "model.onnx").unlink()
    with pytest.raises(TritongenError) as err:
        _files(repo, 2)
    assert words in err.value.problem and "rebuild" in err.value.fix


@pytest.mark.server
@pytest.mark.slow
def test_a_file_swapped_at_the_switch_is_never_served(repo, server_install, tmp_path):
    """The progress callback rewrites the target's model.py when the switch starts: after the gate passed, before
    Triton loads the version. The bytes served must be the verified ones (the old code reloaded from disk)."""
    import tritongen
    from tritongen.client import Triton
    from tritongen.server import ServeSpec, server_from_repository

    http, grpc, metrics = free_ports(3)
    spec = ServeSpec(repo=repo, http_port=http, grpc_port=grpc, metrics_port=metrics, model_control="explicit")
    server = server_from_repository(spec)
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    try:
        with Triton(server.grpc_url, "grpc", headers=server.admin_headers("grpc")) as triton:
            assert triton.ready_versions(NAME) == [2]
            verified = list(triton.infer(NAME, {"x": x}).values())[0]
        assert not np.allclose(verified, 1234.0)

        for action, version in (("rollout", 1), ("rollback", 2)):
            model_py = repo / NAME / str(version) / "model.py"
            original = model_py.read_bytes()
            lines: list[str] = []

            def swap_at_switch(line: str, model_py=model_py, lines=lines) -> None:
                lines.append(line)
                if line.startswith("switch:"):
                    model_py.write_bytes(model_py.read_bytes() + SWAP.encode())

            options = {"max_p99_ratio": 1000.0, "out": tmp_path / "report"} if action == "rollout" else {}
            call = tritongen.rollout if action == "rollout" else tritongen.rollback
            result = call(repo, NAME, to_version=version, url=server.grpc_url, progress=swap_at_switch, **options)
            assert any(line.startswith("switch:") for line in lines) and SWAP.encode() in model_py.read_bytes()
            with Triton(server.grpc_url, "grpc", headers=server.admin_headers("grpc")) as triton:
                assert triton.ready_versions(NAME) == [version]
                served = list(triton.infer(NAME, {"x": x}).values())[0]
            assert result.promoted, result.summary()
            np.testing.assert_allclose(served, verified, atol=1e-6)  # not 1234: the swapped bytes never loaded
            model_py.write_bytes(original)  # the next step's verify needs the repository as built
    finally:
        server.stop(timeout_s=30)


def test_files_over_one_load_request_are_named_as_such(repo, monkeypatch):
    """Past the 2 GiB one load request carries, the error said the file "cannot be read (it is over N bytes)"."""
    from tritongen.deploy import rollout

    monkeypatch.setattr(rollout, "MAX_LOAD_BYTES", 1000)  # the real bound is 2 GiB; the model here is smaller
    with pytest.raises(TritongenError, match=r"version 2 of model 'tiny' holds more than .* one load request can"):
        _files(repo, 2)
