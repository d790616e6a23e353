"""Build -> real tritonserver -> requests: served outputs against PyTorch, and dynamic batching at work; and the
reader of an ensemble's end-to-end reference file (tritongen/end_to_end.py), without a server."""

import json

import numpy as np
import pytest
import torch

from tests import factories
from tritongen.build import build
from tritongen.client import infer_concurrently, infer_from_arrays, model_statistics, statistics_after
from tritongen.infer import InferSpec, infer_model
from tritongen.server import ServeSpec, server_from_repository
from tritongen.spec import build_spec_from_options


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


@pytest.mark.server
def test_all_models_ready(served):
    server, _ = served
    assert set(server.models) >= {"conv", "seq", "pair"}


@pytest.mark.server
def test_batch_one_matches_pytorch_via_saved_reference(served):
    server, repo = served
    result = infer_model(InferSpec(name="conv", repo=repo, url=server.grpc_url, check=True))
    assert result.check is not None and result.check.ok, result.check.table()
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    got = infer_from_arrays(server.http_url, "conv", {"x": x}, protocol="http")["logits"]
    with torch.no_grad():
        want = factories.make_small_conv()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


@pytest.mark.server
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


@pytest.mark.server
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


@pytest.mark.server
def test_two_inputs_two_outputs(served):
    server, _ = served
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.full((2, 4), 3, np.float32)
    out = infer_from_arrays(server.grpc_url, "pair", {"a": a, "b": b})
    np.testing.assert_allclose(out["sum"], a + b)
    np.testing.assert_allclose(out["product"], a * b)


@pytest.mark.parametrize(
    "shape, data",
    [
        ([4294967296, 4294967296], []),  # 2**64 elements: np.prod in int64 wrapped to 0, the length check passed
        ([0, 2**31, 2**31], []),  # no element, yet no array numpy can shape
        ([10**30], []),  # past int64: np.prod raised OverflowError
        ([1] * 70, [1.0]),  # more dimensions than numpy allows
        ([True], [1.0]),  # a bool is no dimension
        ([-1], []),
        ([1], [10**400]),  # an integer no float64 holds
        ([2], [1.0]),  # fewer values than the shape holds
    ],
)
def test_a_crafted_end_to_end_reference_is_damaged_not_a_traceback(tmp_path, shape, data):
    from tritongen.end_to_end import FORMAT, read_reference
    from tritongen.errors import TritongenError
    from tritongen.pre_post import TEXT_INPUT

    path = tmp_path / "end_to_end.json"
    entry = {"dtype": "FP64", "shape": shape, "data": data}
    path.write_text(json.dumps({"format": FORMAT, "inputs": {TEXT_INPUT: ["a"]}, "outputs": {"scores": entry}}))
    with pytest.raises(TritongenError, match="end-to-end reference .* is damaged"):
        read_reference(path)
    entry.update(shape=[2, 0], data=[])  # the same file with a shape its data fills reads back (a row per text)
    path.write_text(json.dumps({"format": FORMAT, "inputs": {TEXT_INPUT: ["a", "b"]}, "outputs": {"scores": entry}}))
    assert read_reference(path)[1]["scores"].shape == (2, 0)


def _labels_and_scores(labels_shape, labels, scores_dtype="FP64", scores_shape=(1, 2), scores=(0.6, 0.4)):
    return {
        "LABELS": {"dtype": "STRING", "shape": list(labels_shape), "data": list(labels)},
        "SCORES": {"dtype": scores_dtype, "shape": list(scores_shape), "data": list(scores)},
    }


@pytest.mark.parametrize(
    "texts, outputs",
    [
        (["a"], {}),  # nothing to compare: --check printed MATCH having compared nothing
        (["   "], _labels_and_scores((1, 2), ("x", "y"))),  # a blank text: was "--text is empty", a flag never given
        (["a"], _labels_and_scores((2,), ("x", "y"))),  # labels not [texts, k]: "not enough values to unpack"
        (["a"], _labels_and_scores((1, 2), ("x", "y"), "STRING", (1, 2), ("0.6", "0.4"))),  # scores as text
        (["a"], _labels_and_scores((1, 2), ("x", "y"), scores_shape=(1, 1), scores=(0.6,))),  # an IndexError
        (["a", "b"], _labels_and_scores((1, 2), ("x", "y"))),  # fewer rows than texts
    ],
)
def test_a_crafted_reference_that_check_cannot_compare_with_is_damaged(tmp_path, texts, outputs):
    """Found by an attacker: each ended infer --check in a traceback, or said MATCH for nothing compared."""
    from tritongen.end_to_end import FORMAT, read_reference
    from tritongen.errors import TritongenError
    from tritongen.pre_post import TEXT_INPUT

    path = tmp_path / "end_to_end.json"
    path.write_text(json.dumps({"format": FORMAT, "inputs": {TEXT_INPUT: texts}, "outputs": outputs}))
    with pytest.raises(TritongenError, match="end-to-end reference .* is damaged"):
        read_reference(path)
    good = _labels_and_scores((1, 2), ("x", "y"))
    path.write_text(json.dumps({"format": FORMAT, "inputs": {TEXT_INPUT: ["a"]}, "outputs": good}))
    assert read_reference(path)[1]["LABELS"].shape == (1, 2)
