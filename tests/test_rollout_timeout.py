"""A switch whose load outlasts --timeout: no answer is no refusal. Triton goes on loading and finishes the switch
after the command has given up; the record once went back to the old version while the server served the new one
(a restart then pinned the old one, and a plain rollback was refused)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import DOUBLE_CONFIG, DOUBLE_MODEL, free_ports, write_model
from tritongen.errors import TritongenError

pytestmark = [pytest.mark.server]

LOAD_S = 10  # version 2's initialize: far above the 1 s timeout, far above the time to ask again
SLOW_MODEL = (
    DOUBLE_MODEL.replace("import numpy as np\n", "import time\n\nimport numpy as np\n")
    + f"""
    def initialize(self, args):
        time.sleep({LOAD_S})
"""
)


@pytest.fixture()
def world(tmp_path, server_install):
    from tritongen.server import ServeSpec, server_from_repository

    repo = tmp_path / "repo"
    write_model(repo, "double", DOUBLE_CONFIG, DOUBLE_MODEL)
    (repo / "double" / "2").mkdir()
    (repo / "double" / "2" / "model.py").write_text(SLOW_MODEL)
    (repo / "double" / "config.pbtxt").write_text(DOUBLE_CONFIG + "version_policy: { specific: { versions: [1] } }\n")
    http, grpc, metrics = free_ports(3)
    spec = ServeSpec(
        repo=repo, http_port=http, grpc_port=grpc, metrics_port=metrics, model_control="explicit", ready_timeout_s=120
    )
    with server_from_repository(spec) as server:
        yield repo, server


def _ready(server) -> list[int]:
    from tritongen.client import Triton

    with Triton(server.grpc_url, "grpc", headers=server.admin_headers("grpc")) as triton:
        return triton.ready_versions("double")


def test_a_switch_that_times_out_stays_pending_and_the_next_run_waits_then_finishes_it(world):
    import tritongen
    from tritongen.deploy.rollout_record import read_record

    repo, server = world
    options = dict(url=server.grpc_url, allow_unverified=["double"])
    with pytest.raises(TritongenError) as caught:
        tritongen.rollback(repo, "double", to_version=2, timeout_s=1.0, **options)
    assert "timed out after 1 s" in caught.value.problem, caught.value  # the load's timeout, not the connection's
    assert "Triton may still finish loading version 2" in caught.value.problem
    assert read_record(repo / "double").pending.to_version == 2  # not put back: the server had not refused it
    with pytest.raises(TritongenError, match="the server is still loading 'double' version 2"):
        tritongen.rollback(repo, "double", to_version=2, **options)  # not dropped as stale while Triton loads it
    deadline = time.monotonic() + 6 * LOAD_S
    while _ready(server) != [2] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ready(server) == [2]  # Triton finished the switch on its own
    said: list[str] = []
    result = tritongen.rollback(repo, "double", to_version=2, progress=said.append, **options)
    assert result.resumed and "finished the interrupted rollback to version 2" in result.resumed, said
    record = read_record(repo / "double")
    assert (record.live, record.pending) == (2, None)


def test_the_index_shows_a_version_loading_while_triton_loads_it(world):
    from tritongen.client import Triton
    from tritongen.deploy.rollout import loading_version
    from tritongen.deploy.rollout_record import with_version_policy

    repo, server = world
    with Triton(server.grpc_url, "grpc", headers=server.admin_headers("grpc")) as triton:
        config = with_version_policy(triton.model_config("double"), [2])
        loader = threading.Thread(target=lambda: triton.load("double", config, timeout_s=6 * LOAD_S))
        loader.start()
        try:
            deadline = time.monotonic() + LOAD_S / 2
            while not loading_version(triton, "double", 2) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert loading_version(triton, "double", 2)
        finally:
            loader.join()
        assert not loading_version(triton, "double", 2) and triton.ready_versions("double") == [2]
