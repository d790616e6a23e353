"""Integer inputs that only index tables get generated ids across the table, not 0 and 1 alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from onnx import TensorProto, helper

from tritongen.index_inputs import index_bounds_from_graph


def _graph(nodes, initializers=(), inputs=("ids",), outputs=("y",)):
    return helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info(n, TensorProto.INT64, [None, 4]) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [_table(name, dims) for name, dims in initializers],
    )


def _table(name, dims):
    return helper.make_tensor(name, TensorProto.FLOAT, list(dims), np.zeros(dims, np.float32).ravel())


def test_an_input_gathered_from_an_initializer_through_casts_is_bounded_by_the_table_rows():
    graph = _graph(
        [
            helper.make_node("Cast", ["ids"], ["i32"], to=TensorProto.INT32),
            helper.make_node("Unsqueeze", ["i32", "axes"], ["u"]),
            helper.make_node("Gather", ["table", "u"], ["y"]),
        ],
        [("table", (1000, 3))],
    )
    graph.initializer.append(helper.make_tensor("axes", TensorProto.INT64, [1], [0]))
    assert index_bounds_from_graph(graph, ["ids"]) == {"ids": 1000}


def test_the_smallest_table_and_the_gathered_axis_bound_it():
    graph = _graph(
        [helper.make_node("Gather", ["big", "ids"], ["a"]), helper.make_node("Gather", ["wide", "ids"], ["y"], axis=1)],
        [("big", (500, 2)), ("wide", (3, 40))],
    )
    assert index_bounds_from_graph(graph, ["ids"]) == {"ids": 40}


def test_a_constant_node_is_a_table_too():
    table = helper.make_tensor("t", TensorProto.FLOAT, [7, 2], np.zeros(14, np.float32))
    graph = _graph(
        [helper.make_node("Constant", [], ["table"], value=table), helper.make_node("Gather", ["table", "ids"], ["y"])]
    )
    assert index_bounds_from_graph(graph, ["ids"]) == {"ids": 7}


@pytest.mark.parametrize(
    "nodes",
    [
        # a mask: arithmetic on its values
        [helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT), helper.make_node("Mul", ["f", "f"], ["y"])],
        # a gather on computed data, whose size the graph does not say
        [helper.make_node("Relu", ["x"], ["data"]), helper.make_node("Gather", ["data", "ids"], ["y"])],
        # the gathered table indexed, but the ids compared too
        [helper.make_node("Gather", ["table", "ids"], ["y"]), helper.make_node("Equal", ["ids", "ids"], ["e"])],
        # the ids as the data, not the indices
        [helper.make_node("Gather", ["ids", "table"], ["y"])],
    ],
    ids=["mask", "computed", "compared", "data"],
)
def test_any_other_use_leaves_the_input_unbounded(nodes):
    graph = _graph(nodes, [("table", (100, 2))], inputs=("ids", "x"))
    assert index_bounds_from_graph(graph, ["ids"]) == {}


@pytest.mark.parametrize("op", ["Equal", "Greater", "LessOrEqual"])
def test_ids_compared_with_a_constant_stay_bounded(op):
    """``ids != pad`` (an attention mask made from the ids) holds for any id: they were kept at 0 and 1."""
    pad = helper.make_tensor("pad", TensorProto.INT64, [], [1])
    graph = _graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"]), helper.make_node(op, ["ids", "pad"], ["mask"])],
        [("table", (100, 2))],
    )
    graph.initializer.append(pad)
    assert index_bounds_from_graph(graph, ["ids"]) == {"ids": 100}
    swapped = _graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"]), helper.make_node(op, ["pad", "ids"], ["mask"])],
        [("table", (100, 2))],
    )
    swapped.initializer.append(pad)
    assert index_bounds_from_graph(swapped, ["ids"]) == {"ids": 100}


def test_an_input_read_inside_a_subgraph_is_left_alone():
    body = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["z"])],
        "body",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
    )
    cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    branch = helper.make_node("If", ["cond"], ["y"], then_branch=body, else_branch=body)
    constant = helper.make_node("Constant", [], ["cond"], value=cond)
    graph = _graph([constant, branch, helper.make_node("Gather", ["table", "ids"], ["w"])], [("table", (100, 2))])
    assert index_bounds_from_graph(graph, ["ids"]) == {}


class _TokenModel(__import__("torch").nn.Module):
    """Token ids into a 1000-row embedding, averaged where the mask is 1: the ids index, the mask is arithmetic."""

    def __init__(self) -> None:
        import torch

        super().__init__()
        self.embed = torch.nn.Embedding(1000, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, ids, mask):
        m = mask.unsqueeze(-1).to(self.embed.weight.dtype)
        return self.head((self.embed(ids) * m).sum(1) / m.sum(1).clamp(min=1))


def test_a_build_draws_generated_token_ids_across_the_embedding_and_keeps_the_mask_0_or_1(tmp_path, capsys):
    import torch

    import tritongen
    from tritongen.layout import SAMPLES_NAME
    from tritongen.npz import arrays_from_npz

    path = tmp_path / "tokens.pt"
    torch.jit.save(torch.jit.script(_TokenModel().eval()), str(path))
    result = tritongen.build(
        path, inputs=["ids:INT64:12", "mask:INT64:12"], max_batch_size=8, repo=tmp_path / "repo", progress=print
    )
    assert result.parity.ok
    samples = arrays_from_npz(result.model_dir / "1" / "tritongen" / SAMPLES_NAME)
    assert samples["ids"].max() > 1 and 0 <= samples["ids"].min() and samples["ids"].max() < 1000
    assert set(np.unique(samples["mask"])) <= {0, 1}
    out = capsys.readouterr().out
    assert "ids drawn from 0..999 (the table it indexes has 1000 rows)" in out
    assert "samples: mask kept at 0 and 1 (the graph reads it otherwise than as a table's index" in out


def test_a_shape_read_of_the_ids_leaves_them_bounded():
    """Positions taken from the ids' length (Shape) read no id: Hugging Face graphs do it."""
    graph = _graph([helper.make_node("Shape", ["ids"], ["s"]), helper.make_node("Gather", ["table", "ids"], ["y"])])
    graph.initializer.append(_table("table", (50, 2)))
    assert index_bounds_from_graph(graph, ["ids"]) == {"ids": 50}


def test_redrawn_ids_stay_within_their_type_and_the_warm_up_stays_one_of_the_cases():
    from tritongen.samples import SampleSet, with_index_bounds

    ids = np.zeros((1, 5), np.int8)
    one = {"ids": ids}
    samples = SampleSet(export=one, parity=(("min", {"ids": ids[:, :2]}), ("sample", one)), warmup=one, from_file=False)
    redrawn = with_index_bounds(samples, {"ids": 1000})
    assert redrawn.warmup is redrawn.parity[1][1] and redrawn.export is one
    assert redrawn.parity[1][1]["ids"].dtype == np.int8 and redrawn.parity[1][1]["ids"].max() <= 127
    assert with_index_bounds(replace(samples, from_file=True), {"ids": 1000}).parity[1][1]["ids"] is ids


@pytest.mark.parametrize("bad_id", [1000, -7])
def test_calibration_ids_outside_the_embedding_are_one_error_line(tmp_path, capsys, bad_id):
    """An id past the table stopped the INT8 build with ONNX Runtime's traceback; a negative one built silently
    (ONNX Runtime's Gather counts it from the end, PyTorch refuses it)."""
    import torch

    from tests.conftest import run_cli

    path = tmp_path / "tokens.pt"
    torch.jit.save(torch.jit.script(_TokenModel().eval()), str(path))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 1000, (64, 12))
    ids[5, 3] = bad_id
    np.savez(tmp_path / "calib.npz", ids=ids, mask=np.ones((64, 12), np.int64))
    args = ["build", str(path), "--input", "ids:INT64:12", "--input", "mask:INT64:12", "--max-batch-size", "8"]
    code, _, err = run_cli(
        [*args, "--precision", "int8", "--calib-data", str(tmp_path / "calib.npz"), "--repo", str(tmp_path / "r")],
        capsys,
    )
    assert code == 1 and "Traceback" not in err, err[-800:]
    assert (
        f"\nerror: --calib-data {tmp_path / 'calib.npz'} holds the id {bad_id} in input 'ids', outside the 1000 rows"
        in err
    ), err
    assert not (tmp_path / "r").exists()


def test_sample_ids_past_the_embedding_are_named_as_such_not_as_a_size(tmp_path, capsys):
    import torch

    from tests.conftest import run_cli

    path = tmp_path / "tokens.pt"
    torch.jit.save(torch.jit.script(_TokenModel().eval()), str(path))
    np.savez(tmp_path / "s.npz", ids=np.full((2, 12), 5000), mask=np.ones((2, 12), np.int64))
    code, _, err = run_cli(
        ["build", str(path), "--input", "ids:INT64:-1", "--input", "mask:INT64:-1", "--sample-inputs",
         str(tmp_path / "s.npz"), "--repo", str(tmp_path / "r")],
        capsys,
    )  # fmt: skip
    assert code == 1 and "index out of range" in err and "--dim-range" not in err, err
    said = "an integer input holds an index the model has no row for (an id past an embedding's table): check the ids"
    assert f"{said} in {tmp_path / 's.npz'}" in err


def test_calibration_data_the_model_answers_with_one_constant_is_refused(tmp_path, capsys):
    """Every attention mask 0: each held-out reference was the head's bias alone, the guard passed at cosine 1.0,
    and the served INT8 model was 0.32 off FP32 on real inputs."""
    import torch

    from tests.conftest import run_cli

    path = tmp_path / "tokens.pt"
    torch.jit.save(torch.jit.script(_TokenModel().eval()), str(path))
    ids = np.random.default_rng(0).integers(0, 1000, (64, 12))
    np.savez(tmp_path / "calib.npz", ids=ids, mask=np.zeros((64, 12), np.int64))
    code, _, err = run_cli(
        ["build", str(path), "--input", "ids:INT64:12", "--input", "mask:INT64:12", "--max-batch-size", "8",
         "--precision", "int8", "--calib-data", str(tmp_path / "calib.npz"), "--repo", str(tmp_path / "r")],
        capsys,
    )  # fmt: skip
    assert code == 1 and "Traceback" not in err
    assert (
        f"error: the FP32 model answers every held-out sample of --calib-data {tmp_path / 'calib.npz'} with the same"
        in err
    )
    assert not (tmp_path / "r").exists()


def test_calibration_inputs_of_lengths_the_model_cannot_pair_name_the_file_not_dim_range(tmp_path, capsys):
    """ids of 16 tokens and a mask of 12 failed with --dim-range as the fix, and no word of --calib-data."""
    import torch

    from tests.conftest import run_cli

    path = tmp_path / "tokens.pt"
    torch.jit.save(torch.jit.script(_TokenModel().eval()), str(path))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", ids=rng.integers(0, 1000, (64, 16)), mask=np.ones((64, 12), np.int64))
    args = ["build", str(path), "--input", "ids:INT64:-1", "--input", "mask:INT64:-1", "--max-batch-size", "8"]
    code, _, err = run_cli(
        [*args, "--precision", "int8", "--calib-data", str(tmp_path / "calib.npz"), "--repo", str(tmp_path / "r")],
        capsys,
    )
    assert code == 1 and "Traceback" not in err, err[-800:]
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: --calib-data {tmp_path / 'calib.npz'}: the model failed on inputs"), line
    assert "the inputs of one sample the same length" in line and "--dim-range" not in line
    assert not (tmp_path / "r").exists()
