"""Outputs as models return them (issue 16, item 5): dicts, tuples, Hugging Face ModelOutput, optional (None)
outputs, and INT64/BOOL/FP16 inputs and outputs. Each builds (the parity gate compares every output with
PyTorch), gets sensible names (dict keys, ModelOutput field names, tuple positions), drops a None with a note,
and serves on the real server the values PyTorch returns."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests import factories
from tritongen.export import flatten_outputs, output_layout

X = {"x": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)}
CASES = {
    # name: (module, example inputs, expected outputs (name, dtype, dims))
    "dict_out": (factories.DictOut, X, [("logits", "FP32", (3,)), ("probs", "FP32", (3,))]),
    "tuple_none": (factories.TupleWithNone, X, [("output_0", "FP32", (3,)), ("output_2", "INT64", (1,))]),
    "hf_out": (
        factories.HFStyleOut,
        X,
        [("logits", "FP32", (3,)), ("hidden_states_0", "FP32", (4,)), ("hidden_states_1", "FP32", (3,))],
    ),
    "dtypes": (
        factories.MixedDtypes,
        factories.mixed_dtype_inputs(),
        [("ids2", "INT64", (4,)), ("kept", "BOOL", (4,)), ("half2", "FP16", (4,)), ("any_big", "BOOL", (1,))],
    ),
}
DROPPED = {"tuple_none": ["output_1"], "hf_out": ["loss", "attentions"]}


def test_layout_names_follow_the_structure_and_drop_nones():
    t = torch.zeros(1)
    layout = output_layout({"a": t, "b": (t, None, {"c": t}), "d-e": None, "2x": t})
    assert layout.names == ("a", "b_0", "b_2_c", "output_2x") and layout.dropped == ("b_1", "d-e")
    assert len(layout.names) == len(flatten_outputs({"a": t, "b": (t, None, {"c": t}), "d-e": None, "2x": t}))
    assert output_layout(t).names == ("output",) and output_layout((t, t)).names == ("output_0", "output_1")
    assert output_layout({"x y": t, "x_y": t}).names == ("x_y", "x_y_1")  # cleaned names stay distinct


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import tritongen

    repo = tmp_path_factory.mktemp("outputs") / "repo"
    results, notes = {}, {}
    for name, (make, inputs, _) in CASES.items():
        torch.manual_seed(0)
        lines: list[str] = []
        results[name] = tritongen.build(
            make().eval(), example_inputs=inputs, name=name, repo=repo, progress=lines.append
        )
        notes[name] = lines
    return repo, results, notes


@pytest.mark.parametrize("name", CASES)
def test_outputs_are_named_typed_and_pass_parity(built, name):
    _, results, notes = built
    result = results[name]
    assert [(t.name, t.dtype, t.dims) for t in result.spec.outputs] == CASES[name][2]
    assert result.parity.ok
    manifest = json.loads(result.manifest_path.read_text())
    dropped = DROPPED.get(name, [])
    assert manifest["export"].get("dropped_outputs", []) == dropped
    said = [line for line in notes[name] if "returned None" in line]
    assert bool(said) == bool(dropped) and all(d in said[0] for d in dropped), notes[name]


@pytest.mark.server
def test_served_outputs_are_what_pytorch_returns(built, server_install):
    from tritongen.client import infer_from_arrays
    from tritongen.server import ServeSpec, server_from_repository

    repo, results, _ = built
    with server_from_repository(ServeSpec(repo=repo)) as server:
        for name, (make, inputs, expected) in CASES.items():
            torch.manual_seed(0)
            module = make().eval()
            with torch.inference_mode():
                reference = flatten_outputs(module(*(torch.from_numpy(a) for a in inputs.values())))
            served = infer_from_arrays(server.grpc_url, name, inputs)
            assert sorted(served) == sorted(n for n, _, _ in expected), (name, sorted(served))
            for (out, _, _), ref in zip(expected, reference):
                want = ref.numpy()
                got = served[out]
                assert got.dtype == want.dtype, (name, out, got.dtype, want.dtype)
                np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-3, atol=1e-3, err_msg=f"{name} {out}")
