"""Dynamic dimensions as ranges (issue 16, item 3): samples, parity at MIN/OPT/MAX, warm-up and the TensorRT
profile from one ``--dim-range`` (or the documented default), through the real CLI and real exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests import factories
from tests.test_bad_input import _assert_one_clean_line, _run
from tritongen.dim_ranges import DEFAULT_DIM_MIN, DEFAULT_DIM_OPT, ranges_from_spec, shapes_at
from tritongen.errors import TritongenError
from tritongen.samples import sample_set_from_spec
from tritongen.spec import DEFAULT_MAX_DYNAMIC_DIM, build_spec_from_options

FCN = ["--input", "x:FP32:3,-1,-1", "--max-batch-size", "2"]


@pytest.fixture(scope="module")
def fcn(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fcn")
    return factories.save_model(factories.make_fully_conv(), root / "fcn.pt", "state_dict")


def _manifest(repo: Path, name: str) -> dict:
    return json.loads((repo / name / "1" / "tritongen" / "manifest.json").read_text())


def _cases(manifest: dict) -> dict[str, list[int]]:
    return {r["case"]: r["shape"] for r in manifest["parity"]["results"]}


def test_fully_convolutional_net_builds_with_the_default_sizes(fcn, tmp_path):
    """3,-1,-1 with a receptive field of 18: the old sizes (9 and 16) failed; the default range 32/64/128 works and
    the gate runs at each of them."""
    code, out, err = _run(
        [
            "build",
            str(fcn),
            "--name",
            "fcn",
            "--model-factory",
            "tests.factories:make_fully_conv",
            "--repo",
            str(tmp_path),
            *FCN,
        ]
    )
    assert code == 0, err
    manifest = _manifest(tmp_path, "fcn")
    lo, opt, hi = DEFAULT_DIM_MIN, DEFAULT_DIM_OPT, DEFAULT_MAX_DYNAMIC_DIM
    side = lambda n: ((n - 8) // 2) - 4  # noqa: E731 -- the net's output size for an input of n pixels
    assert _cases(manifest) == {
        "batch 1": [1, 4, side(opt), side(opt)],
        "batch 1, min dims": [1, 4, side(lo), side(lo)],
        "batch 1, max dims": [1, 4, side(hi), side(hi)],
        "batch 2": [2, 4, side(opt), side(opt)],
    }
    assert manifest["parity"]["ok"]
    assert (tmp_path / "fcn" / "warmup" / "x").stat().st_size == 3 * opt * opt * 4  # the warm-up request at OPT
    assert [t["dims"] for t in manifest["spec"]["outputs"]] == [[4, -1, -1]]


def test_ranges_drive_samples_parity_warmup_and_the_tensorrt_profile(fcn, tmp_path):
    code, out, err = _run(
        [
            "build",
            str(fcn),
            "--name",
            "fcn",
            "--model-factory",
            "tests.factories:make_fully_conv",
            "--repo",
            str(tmp_path),
            *FCN,
            "--dim-range",
            "x:1:24:40:72",
            "--dim-range",
            "x:2:20:36:60",
            "--target",
            "tensorrt",
        ]
    )
    assert code == 0, err
    manifest = _manifest(tmp_path, "fcn")
    side = lambda n: ((n - 8) // 2) - 4  # noqa: E731
    assert _cases(manifest) == {
        "batch 1": [1, 4, side(40), side(36)],
        "batch 1, min dims": [1, 4, side(24), side(20)],
        "batch 1, max dims": [1, 4, side(72), side(60)],
        "batch 2": [2, 4, side(40), side(36)],
    }
    assert (tmp_path / "fcn" / "warmup" / "x").stat().st_size == 3 * 40 * 36 * 4
    plan = json.loads((tmp_path / "fcn" / "1" / "tritongen" / "engine.json").read_text())
    assert plan["profiles"] == [{"x": {"min": [1, 3, 24, 20], "opt": [2, 3, 40, 36], "max": [2, 3, 72, 60]}}]
    assert manifest["tensorrt"]["lint"]["ok"]
    assert [r["explicit"] for r in manifest["spec"]["dim_ranges"]] == [True, True]


def test_a_default_size_below_the_receptive_field_says_to_pass_dim_range(fcn, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("inputs: [{name: x, dims: [3, -1, -1]}]\nmax_batch_size: 2\ndynamic_dim_size: 9\n")
    code, out, err = _run(
        [
            "build",
            str(fcn),
            "--model-factory",
            "tests.factories:make_fully_conv",
            "--spec",
            str(spec),
            "--repo",
            str(tmp_path / "repo"),
        ]
    )
    _assert_one_clean_line(
        "receptive field",
        code,
        out,
        err,
        ("the model failed on inputs x[2, 3, 9, 9]", "default sizes 9/9/128", "--dim-range x:1:MIN:OPT:MAX"),
    )
    assert not (tmp_path / "repo").exists() or not list((tmp_path / "repo").iterdir())


def test_parity_at_several_sizes_catches_a_size_the_export_fixed(tmp_path):
    """The TorchScript exporter traces ``sum / float(x.shape[-1])`` at the export's size (OPT) and keeps that size as
    a constant: right at OPT, wrong elsewhere. One size per dimension (the old gate) would have passed it."""
    path = factories.save_model(factories.MeanOverLast(), tmp_path / "mean.pt", "pickled_module")
    argv = ["build", str(path), "--input", "x:FP32:-1", "--allow-pickle", "--repo", str(tmp_path / "repo")]
    code, out, err = _run([*argv, "--exporter", "torchscript"])
    _assert_one_clean_line(
        "fixed size",
        code,
        out,
        err,
        (
            "at batch 1, max dims and batch 1, min dims but not at the export's size",
            "the export fixed a size that should vary",
        ),
    )
    lines = err.splitlines()
    assert any("warning: the trace turns a tensor into a Python float at factories.py:" in line for line in lines)
    assert any(line.startswith("batch 1, min dims") and "FAIL" in line for line in lines)
    assert any(line.startswith("batch 1 ") and line.rstrip().endswith("ok") for line in lines)
    assert not (tmp_path / "repo").exists() or not list((tmp_path / "repo").iterdir())
    code, out, err = _run(argv)  # the dynamo exporter keeps the size symbolic
    assert code == 0, err
    assert set(_cases(_manifest(tmp_path / "repo", "mean"))) == {
        "batch 1",
        "batch 1, min dims",
        "batch 1, max dims",
        "batch 8",
    }


def test_sample_inputs_keep_declared_dynamic_dims(tmp_path):
    path = factories.save_model(
        factories.make_dynamic_seq(), tmp_path / "seq.pt", "torchscript-trace", factories.dynamic_seq_inputs()
    )
    samples = tmp_path / "s.npz"
    np.savez(samples, x=np.random.default_rng(0).standard_normal((3, 5, factories.SEQ_FEATURES)).astype(np.float32))
    code, out, err = _run(
        [
            "build",
            str(path),
            "--input",
            "x:FP32:-1,8",
            "--sample-inputs",
            str(samples),
            "--repo",
            str(tmp_path / "repo"),
            "--dim-range",
            "x:0:2:5:12",
        ]
    )
    assert code == 0, err
    graph = onnx.load(str(tmp_path / "repo" / "seq" / "1" / "model.onnx"), load_external_data=False)
    assert not graph.graph.input[0].type.tensor_type.shape.dim[1].HasField("dim_value")
    assert "input  x                        FP32   [-1, 8]" in out
    cases = _cases(_manifest(tmp_path / "repo", "seq"))
    assert cases == {"batch 1": [1, 8], "batch 1, min dims": [1, 8], "batch 1, max dims": [1, 8], "batch 8": [8, 8]}
    assert "inputs inferred" not in err
    # the line says what the gate ran: the file's sizes (5), and the given range's MIN and MAX; no OPT case
    assert "variable dims checked at the sizes of the sample file and at MIN/MAX: x[0] 2/12" in err
    code, out, err = _run(
        ["build", str(path), "--input", "x:FP32:-1,8", "--sample-inputs", str(samples)]
        + ["--repo", str(tmp_path / "repo2")]
    )
    assert code == 0, err
    assert "variable dims checked at the sizes of the sample file\n" in err and "MIN/OPT/MAX" not in err
    assert set(_cases(_manifest(tmp_path / "repo2", "seq"))) == {"batch 1", "batch 8"}


def test_inputs_inferred_from_samples_say_which_dims_they_fixed(tmp_path):
    path = factories.save_model(
        factories.make_dynamic_seq(), tmp_path / "seq.pt", "torchscript-trace", factories.dynamic_seq_inputs()
    )
    samples = tmp_path / "s.npz"
    np.savez(samples, x=np.zeros((2, 5, factories.SEQ_FEATURES), np.float32))
    code, out, err = _run(["build", str(path), "--sample-inputs", str(samples), "--repo", str(tmp_path / "fixed")])
    assert code == 0, err
    assert "inputs inferred from s.npz: x[5, 8] (every dimension fixed at the samples' size" in err
    assert "input  x                        FP32   [5, 8]" in out
    code, out, err = _run(
        [
            "build",
            str(path),
            "--sample-inputs",
            str(samples),
            "--repo",
            str(tmp_path / "ranged"),
            "--dim-range",
            "x:0:3:5:9",
        ]
    )
    assert code == 0, err
    assert "inputs inferred from s.npz: x[-1, 8] (variable: x:0:3:5:9; every other dimension fixed" in err
    assert "input  x                        FP32   [-1, 8]" in out
    assert set(_cases(_manifest(tmp_path / "ranged", "seq"))) == {
        "batch 1",
        "batch 1, min dims",
        "batch 1, max dims",
        "batch 8",
    }


def test_sample_set_sizes_follow_the_ranges(tmp_path):
    path = factories.save_model(factories.make_dynamic_seq(), tmp_path / "seq.pt", "state_dict")
    spec = build_spec_from_options(
        path, inputs=["x:FP32:-1,8", "y:INT64:-1"], max_batch_size=0, dim_ranges=["x:0:2:3:7"], max_dynamic_dim=20
    )
    ranges = ranges_from_spec(spec)
    assert [(r.input, r.axis, r.min, r.opt, r.max, r.explicit) for r in ranges] == [
        ("x", 0, 2, 3, 7, True),
        ("y", 0, 20, 20, 20, False),
    ]  # the default 32/64/128, capped by --max-dim 20
    assert shapes_at(spec, "max") == {"x": (7, 8), "y": (20,)}
    samples = sample_set_from_spec(spec)
    assert [(label, {k: v.shape for k, v in arrays.items()}) for label, arrays in samples.parity] == [
        ("min dims", {"x": (2, 8), "y": (20,)}),
        ("max dims", {"x": (7, 8), "y": (20,)}),
        ("sample", {"x": (3, 8), "y": (20,)}),
    ]
    assert {k: v.shape for k, v in samples.warmup.items()} == {"x": (3, 8), "y": (20,)}


@pytest.mark.parametrize(
    "ranges, words",
    [
        (["x:1:2:3:4"], "no axis 1"),
        (["x:0:4:3:2"], "not 1 <= MIN <= OPT <= MAX"),
        (["x:0:0:3:4"], "not 1 <= MIN"),
        (["z:0:2:3:4"], "input 'z', which is not declared"),
        (["x:0:2:3"], "is not INPUT:AXIS:MIN:OPT:MAX"),
        (["x:a:2:3:4"], "not an integer"),
        (["x:0:2:3:4", "x:0:2:3:5"], "two ranges"),
        (["c:0:2:3:4"], "fixed at 3"),
    ],
)
def test_bad_ranges_are_refused(tmp_path, ranges, words):
    path = factories.save_model(factories.make_dynamic_seq(), tmp_path / "seq.pt", "state_dict")
    with pytest.raises(TritongenError, match=words.replace("(", "\\(")):
        build_spec_from_options(path, inputs=["x:FP32:-1", "c:FP32:3"], dim_ranges=ranges)


@pytest.mark.parametrize(
    "text, words",
    [
        ("dim_ranges: [{input: x, axis: 0, min: 2, opt: 3, max: 4}]\n", None),
        ("dim_ranges: [{input: x, axis: 0, min: 2, opt: 3}]\n", "a mapping of input, axis, min, opt, max"),
        ("dim_ranges: [{input: x, axis: '0', min: 2, opt: 3, max: 4}]\n", "axis is '0', not an integer"),
        ("dim_ranges: [{input: x, axis: 0, min: 2.5, opt: 3, max: 4}]\n", "min is 2.5, not an integer"),
        ("dim_ranges: [{input: x, axis: 0, min: true, opt: 3, max: 4}]\n", "min is True, not an integer"),
        ("dim_ranges: x:0:2:3:4\n", "is 'x:0:2:3:4', not a list"),
    ],
)
def test_yaml_dim_ranges_are_type_checked(tmp_path, text, words):
    path = factories.save_model(factories.make_dynamic_seq(), tmp_path / "seq.pt", "state_dict")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("inputs: [{name: x, dims: [-1, 8]}]\n" + text)
    if words is None:
        spec = build_spec_from_options(path, spec_file=spec_file)
        assert shapes_at(spec, "min") == {"x": (2, 8)} and shapes_at(spec, "max") == {"x": (4, 8)}
        return
    with pytest.raises(TritongenError, match=words):
        build_spec_from_options(path, spec_file=spec_file)


def test_a_text_ensembles_tensorrt_profile_takes_every_length_the_tokenizer_sends(tmp_path):
    """The tokenizer step truncates at max_length (256 for all-MiniLM-L6-v2) while the model step's TensorRT profile
    ended at --max-dim's default 128: on a GPU, texts of 129-256 tokens were refused by the engine."""
    import dataclasses

    from tritongen.dim_ranges import dim_range_from_arg
    from tritongen.engine import profiles_from_spec
    from tritongen.pre_post import model_spec_for_tokenizer

    model = factories.save_model(factories.make_dynamic_seq(), tmp_path / "seq.pt", "torchscript")
    spec = build_spec_from_options(model, inputs=["x:FP32:-1,8"], max_batch_size=4, repo=tmp_path, target="tensorrt")
    assert profiles_from_spec(spec)[0]["x"]["max"] == [4, DEFAULT_MAX_DYNAMIC_DIM, 8]  # what the build wrote
    assert profiles_from_spec(model_spec_for_tokenizer(spec, 256))[0]["x"]["max"] == [4, 256, 8]
    assert model_spec_for_tokenizer(spec, 64) == spec  # the default already covers it
    assert model_spec_for_tokenizer(spec, 100_000) == spec  # no real limit (no model_max_length): --max-dim stays
    assert model_spec_for_tokenizer(dataclasses.replace(spec, target="onnxruntime"), 256).max_dynamic_dim == 128
    wide = dataclasses.replace(spec, dim_ranges=(dim_range_from_arg("x:0:1:16:512"),))
    assert model_spec_for_tokenizer(wide, 256) == wide
    with pytest.raises(TritongenError) as err:
        model_spec_for_tokenizer(dataclasses.replace(spec, max_dynamic_dim=200), 256)
    assert "--max-dim 200 is below the 256 tokens" in err.value.problem and "--max-dim 256" in err.value.fix
    with pytest.raises(TritongenError) as err:
        model_spec_for_tokenizer(dataclasses.replace(spec, dim_ranges=(dim_range_from_arg("x:0:1:16:100"),)), 256)
    assert "--dim-range x:0:1:16:100 ends at 100 tokens" in err.value.problem
    assert "--dim-range x:0:1:16:256" in err.value.fix


def test_a_text_ensembles_own_sentences_are_named_as_such_not_as_a_sample_file(tmp_path):
    """A Hugging Face build, given no sample file, said its dims were checked 'at the sizes of the sample file'."""
    from tritongen.build import _checked_sizes
    from tritongen.layout import TOKENIZED_SAMPLES_NAME

    (tmp_path / "m.pt").write_bytes(b"")
    for name, words in ((TOKENIZED_SAMPLES_NAME, "the tokenized sample sentences"), ("mine.npz", "the sample file")):
        np.savez(tmp_path / name, input_ids=np.ones((2, 7), np.int64))
        spec = build_spec_from_options(tmp_path / "m.pt", inputs=["input_ids:INT64:-1"], sample_inputs=tmp_path / name)
        assert _checked_sizes(spec) == f"variable dims checked at the sizes of {words}"


def test_inputs_inferred_from_example_inputs_are_said_in_the_apis_words(tmp_path):
    """tritongen.build(module, example_inputs=...) said "inputs inferred from example_inputs.npz" (a temporary file
    the user never made) and pointed at --input and --dim-range."""
    from tritongen.build import fixed_dims_note
    from tritongen.export import EXAMPLE_INPUTS_NPZ
    from tritongen.spec import build_spec_from_options

    model = factories.save_model(factories.make_dynamic_seq(), tmp_path / "seq.pt", "torchscript")
    np.savez(tmp_path / EXAMPLE_INPUTS_NPZ, x=np.zeros((2, 4), np.float32))
    spec = build_spec_from_options(model, sample_inputs=tmp_path / EXAMPLE_INPUTS_NPZ, repo=tmp_path / "r")
    note = fixed_dims_note(spec)
    assert note.startswith("inputs inferred from example_inputs: x[4]") and "pass dim_ranges=[" in note
    assert "--input" not in note and ".npz" not in note
