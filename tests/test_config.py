"""tritongen.config: the one line a build prints on batching says what the generated config.pbtxt does."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from tritongen.config import batching_text, config_text_from_spec
from tritongen.sequence import StatePair
from tritongen.spec import BuildSpec, TensorSpec

X = TensorSpec("x", "FP32", (4,))


def _config_figures(text: str) -> tuple[list[int], int]:
    preferred = [int(b) for b in re.findall(r"preferred_batch_size:\s*\[([^\]]*)\]", text)[0].split(",")]
    delay = re.findall(r"max_queue_delay_microseconds:\s*(\d+)", text)
    return preferred, int(delay[0]) if delay else 0


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"max_batch_size": 16, "max_queue_delay_us": 2000, "instance_count": 2},
        {"preferred_batch_sizes": (2, 6), "max_queue_delay_us": 100},
        {
            "inputs": (X, TensorSpec("h", "FP32", (4,))),
            "outputs": (TensorSpec("y", "FP32", (4,)), TensorSpec("h_out", "FP32", (4,))),
            "output_names": ("y", "h_out"),
            "states": (StatePair("h", "h_out"),),
        },
    ],
)
def test_the_batching_line_names_the_configs_batch_sizes_and_queue_delay(tmp_path, changes):
    spec = replace(
        BuildSpec(model_path=tmp_path / "m.onnx", name="m", inputs=(X,), outputs=(TensorSpec("y", "FP32", (4,)),)),
        **changes,
    )
    preferred, delay_us = _config_figures(config_text_from_spec(spec, None))
    line = batching_text(spec)
    assert f"up to {spec.max_batch_size} per run (preferred {', '.join(map(str, preferred))})" in line, line
    assert f"waits up to {delay_us} us for others, which at low load is added to every answer" in line
    assert ("sequence batcher" in line) == bool(spec.states)
    # tune refuses sequence models: the line named it for them (a newcomer followed it into that refusal)
    assert ("tritongen tune measures what pays" in line) == (not spec.states)
    assert ("tritongen perf measures it" in line) == bool(spec.states)
    assert f"{spec.instance_count} instance" in line


def test_no_queue_delay_and_no_batching_say_so(tmp_path):
    spec = BuildSpec(model_path=tmp_path / "m.onnx", name="m", inputs=(X,), max_queue_delay_us=0)
    assert "no queue delay" in batching_text(spec) and "waits up to" not in batching_text(spec)
    assert batching_text(replace(spec, max_batch_size=0)).startswith("batching: none (max batch size 0)")
    assert "at each of the 3 steps" in batching_text(replace(spec, max_queue_delay_us=500), steps=3)


def test_build_prints_the_batching_line(tmp_path, capsys):
    import torch

    import tritongen
    from tritongen.cli import main

    net = torch.nn.Sequential(torch.nn.Linear(4, 3))
    first = tritongen.build(net, example_inputs=[torch.randn(2, 4)], name="net", repo=tmp_path / "a")
    assert "waits up to 500 us" in first.batching
    main(
        ["build", str(first.model_dir / "1" / "model.onnx"), "--name", "n2", "--repo", str(tmp_path / "b")]
        + ["--queue-delay-us", "250", "--max-batch-size", "6"]
    )
    out = capsys.readouterr().out
    assert "batching: dynamic batcher, up to 6 per run (preferred 3, 6), 1 instance;" in out
    assert "waits up to 250 us for others" in out
