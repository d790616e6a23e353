"""Issue 14, item 5: rolling out a new version of an ensemble's model step on a real Triton.

The ``pair`` ensemble (CSV text -> custom pre-processing -> model -> custom post-processing) is served with
explicit model control; a second build adds version 2 (its model's sum scaled by 1.001). Rolling out
``pair_model`` to version 2 judges it end to end through a candidate copy of the ensemble, while 8 clients keep
calling the ensemble: none fails, the pre/post steps keep serving version 1, and after the switch every answer
is version 2's.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.conftest import free_ports
from tests.test_ensemble import POST_PY, PRE_PY
from tritongen.testing.closed_loop import ClosedLoop

pytestmark = [pytest.mark.server, pytest.mark.slow]

torch = pytest.importorskip("torch")

STEPS = ("pair", "pair_preprocess", "pair_model", "pair_postprocess")
ROW = "1,2,3,4,5,6,7,8"  # a = 1..4, b = 5..8: TOTAL = k * 36


class Pair(torch.nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (a + b) * self.k, a * b


def _build(work, repo, k: float, new_version: bool) -> None:
    import tritongen

    example = (torch.randn(2, 4), torch.randn(2, 4))
    source = work / f"pair-{k}.pt"
    torch.jit.save(torch.jit.trace(Pair(k), example), str(source))
    tritongen.build(
        source,
        name="pair",
        inputs=["a:FP32:4", "b:FP32:4"],
        outputs=["sum", "product"],
        repo=repo,
        preprocess=str(work / "pre.py"),
        postprocess=str(work / "post.py"),
        max_batch_size=8,
        new_version=new_version,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory, server_install):
    from tritongen.server import ServeSpec, server_from_repository

    work = tmp_path_factory.mktemp("rollout_ensemble")
    repo = work / "repo"
    (work / "pre.py").write_text(PRE_PY)
    (work / "post.py").write_text(POST_PY)
    _build(work, repo, 1.0, new_version=False)
    http, grpc, metrics = free_ports(3)
    spec = ServeSpec(repo=repo, http_port=http, grpc_port=grpc, metrics_port=metrics, model_control="explicit")
    server = server_from_repository(spec)
    try:
        _build(work, repo, 1.001, new_version=True)  # version 2 of every step, beside the served version 1
        yield server, repo, work
    finally:
        server.stop(timeout_s=30)


def _ready(url: str) -> dict[str, list[int]]:
    from tritongen.client import Triton
    from tritongen.server.admin import admin_headers_at

    with Triton(url, "grpc", headers=admin_headers_at(url, "grpc")) as triton:  # the server's key, by its port
        return {name: triton.ready_versions(name) for name in STEPS}


def test_rolling_out_the_model_step_keeps_the_ensemble_serving(served):
    import tritongen
    from tritongen.errors import TritongenError

    server, repo, work = served
    with pytest.raises(TritongenError, match="has no version 3"):
        tritongen.rollout(repo, "pair_model", to_version=3, url=server.grpc_url)
    golden = work / "rows.txt"
    golden.write_text("\n".join([ROW, "0,0,0,0,1,1,1,1", "2.5,1,-3,4,0.5,0.25,8,9"]) + "\n")
    inputs = {"CSV": np.array([[ROW.encode()]], dtype=object)}
    with ClosedLoop(server.grpc_url, "pair", inputs, "TOTAL", concurrency=8) as loop:
        time.sleep(0.5)
        result = tritongen.rollout(
            repo,
            "pair_model",
            to_version=2,
            url=server.grpc_url,
            golden=golden,
            max_p99_ratio=20.0,
            out=work / "report",
        )
        done = time.monotonic()
        time.sleep(1.0)
    answers = loop.snapshot()

    assert result.promoted and result.gate is not None and result.gate.passed, result.summary()
    assert result.gate.latency_ms["candidate"]["server_mean"] > 0  # the candidate step answered the gate's requests
    assert result.gate.outputs["TOTAL"].min_cosine > 0.999 and result.gate.outputs["SUMMARY"].min_cosine == 1.0
    assert not [a for a in answers if a.output is None]
    totals = [round(float(a.output.reshape(-1)[0]), 3) for a in answers]
    assert set(totals) <= {36.0, 36.036}
    assert {t for a, t in zip(answers, totals) if a.sent_s > done} == {36.036}
    ready = _ready(server.grpc_url)
    assert ready["pair_preprocess"] == ready["pair_postprocess"] == [1] and ready["pair_model"] == [2]
    assert len(ready["pair"]) == 1  # Triton reloads the ensemble that calls the step (from its newest version folder)
    tritongen.verify(repo)
