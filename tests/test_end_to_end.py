"""Build -> real tritonserver -> requests: served outputs against PyTorch, and dynamic batching at work."""

import numpy as np
import pytest
import torch

from tests import factories
from tritongen.build import build
from tritongen.client import infer_concurrently, infer_from_arrays, model_statistics, statistics_after
from tritongen.infer import InferSpec, infer_model
from tritongen.server import ServeSpec, server_from_repository
from tritongen.spec import build_spec_from_options

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    repo = work / "repo"
    conv = factories.save_model(factories.make_small_conv(), work / "conv.pt", "state_dict")
    build(
        build_spec_from_options(
            conv,
            name="conv",
            inputs=["x:FP32:3,32,32"],
            outputs=["logits"],
            max_batch_size=8,
            model_factory="tests.factories:make_small_conv",
            repo=repo,
            max_queue_delay_us=20000,
        )
    )
    seq = factories.save_model(
        factories.make_dynamic_seq(), work / "seq.pt", "torchscript-trace", factories.dynamic_seq_inputs()
    )
    build(
        build_spec_from_options(
            seq, name="seq", inputs=["x:FP32:-1,8"], max_batch_size=8, repo=repo, max_queue_delay_us=20000
        )
    )
    pair = factories.save_model(
        factories.make_two_in_two_out(), work / "pair.pt2", "torch.export", factories.two_in_two_out_inputs()
    )
    build(
        build_spec_from_options(
            pair, name="pair", inputs=["a:FP32:4", "b:FP32:4"], outputs=["sum", "product"], max_batch_size=8, repo=repo
        )
    )
    with server_from_repository(ServeSpec(repo=repo)) as server:
        yield server, repo


def test_all_models_ready(served):
    server, _ = served
    assert set(server.models) >= {"conv", "seq", "pair"}


def test_batch_one_matches_pytorch_via_saved_reference(served):
    server, repo = served
    result = infer_model(InferSpec(name="conv", repo=repo, url=server.grpc_url, check=True))
    assert result.check is not None and result.check.ok, result.check.table()
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    got = infer_from_arrays(server.http_url, "conv", {"x": x}, protocol="http")["logits"]
    with torch.no_grad():
        want = factories.make_small_conv()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def test_concurrent_requests_are_batched_and_correct(served):
    server, _ = served
    model = factories.make_small_conv()
    rng = np.random.default_rng(7)
    requests = [{"x": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(48)]
    before = model_statistics(server.grpc_url, "conv")
    responses = infer_concurrently(server.grpc_url, "conv", requests, concurrency=16)
    after = statistics_after(server.grpc_url, "conv", before["inference_count"] + 48)
    with torch.no_grad():
        want = model(torch.from_numpy(np.concatenate([r["x"] for r in requests]))).numpy()
    got = np.concatenate([r["logits"] for r in responses])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 48
    assert executions < inferences, f"dynamic batching did not combine requests: {executions} executions"


def test_variable_length_sequences_concurrently(served):
    """Ragged batching: requests of different lengths reach the Python model together and are run per shape."""
    server, _ = served
    rng = np.random.default_rng(11)
    lengths = (1, 3, 3, 17, 64, 5, 5, 5) * 4
    requests = [{"x": rng.standard_normal((1, length, 8)).astype(np.float32)} for length in lengths]
    before = model_statistics(server.grpc_url, "seq")
    responses = infer_concurrently(server.grpc_url, "seq", requests, concurrency=16)
    after = statistics_after(server.grpc_url, "seq", before["inference_count"] + len(requests))
    for request, response in zip(requests, responses):
        np.testing.assert_allclose(response["output"], request["x"].mean(axis=1), atol=1e-5)
    assert after["execution_count"] - before["execution_count"] < len(requests), (
        "requests of mixed lengths were never batched"
    )


def test_two_inputs_two_outputs(served):
    server, _ = served
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 3, np.float32)
    out = infer_from_arrays(server.grpc_url, "pair", {"a": a, "b": b})
    np.testing.assert_allclose(out["sum"], a + b)
    np.testing.assert_allclose(out["product"], a * b)
