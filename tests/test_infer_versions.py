"""``infer --check`` checks the version the server answers with: after ``build --new-version`` into a served
repository (the server has not loaded it) or a rollback, the newest folder on disk is not what answers."""

from __future__ import annotations

import pytest

from tritongen.errors import TritongenError


@pytest.mark.server
@pytest.mark.slow
def test_the_check_uses_the_served_version_and_model_version_pins_one(tmp_path, server_install):
    torch = pytest.importorskip("torch")
    import tritongen
    from tritongen.server import ServeSpec, server_from_repository

    repo = tmp_path / "repo"
    torch.manual_seed(0)
    tritongen.build(torch.nn.Linear(4, 3), example_inputs={"x": torch.randn(2, 4)}, name="tiny", repo=repo)
    with server_from_repository(ServeSpec(repo=repo)) as server:
        torch.manual_seed(1)  # other weights: version 2 answers differently from version 1
        tritongen.build(
            torch.nn.Linear(4, 3), example_inputs={"x": torch.randn(2, 4)}, name="tiny", repo=repo, new_version=True
        )
        served = tritongen.infer("tiny", repo=repo, url=server.grpc_url, check=True)
        assert served.check is not None and served.check.ok  # version 1 against version 1's reference
        # the table's tolerance line names what it compared: the served answers with PyTorch's (not the ONNX graph)
        assert "(tolerance: |served - torch| <= " in served.text(), served.text()
        pinned = tritongen.infer("tiny", repo=repo, url=server.grpc_url, check=True, model_version=1)
        assert pinned.check is not None and pinned.check.ok
        with pytest.raises(TritongenError, match="version 2|unknown model|not.*ready"):
            tritongen.infer("tiny", repo=repo, url=server.grpc_url, check=True, model_version=2)  # not loaded
        with pytest.raises(TritongenError, match="build of version 7 of model 'tiny' is not in"):
            tritongen.infer("tiny", repo=repo, url=server.grpc_url, check=True, model_version=7)


def test_versions_the_server_names_that_are_no_int64_number_are_skipped(tmp_path, monkeypatch):
    """int() of a version from the server's metadata: 5000 digits were a ValueError traceback, and a 20-digit
    number past int64 was taken as the version answering."""
    import tritongen.client
    from tritongen.infer import InferSpec, served_version
    from tritongen.layout import MAX_VERSION, artifact_dir

    for version in (1, 2):
        artifact_dir(tmp_path / "m", version).mkdir(parents=True)
    odd = ["\u00b2", "9" * 5000, str(MAX_VERSION + 1), "1e3", "-3", " 4", ""]
    names = {"versions": ["1", *odd]}
    monkeypatch.setattr(tritongen.client, "model_metadata", lambda *a, **k: names)
    spec = InferSpec(name="m", repo=tmp_path)
    assert served_version(spec, "127.0.0.1:9") == 1
    names = {"versions": odd}  # none is a version: the newest build
    assert served_version(spec, "127.0.0.1:9") == 2
    names = {"versions": ["1", str(MAX_VERSION)]}
    assert served_version(spec, "127.0.0.1:9") == MAX_VERSION
