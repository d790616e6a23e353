"""``--const NAME=VALUE`` (issue 16, item 2): an int/float/bool argument of ``forward()`` fixed at export, recorded
in the manifest; real exports (both exporters) and ONNX Runtime on the built model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests import factories
from tests.test_bad_input import _assert_one_clean_line, _run
from tritongen.consts import const_from_arg
from tritongen.errors import TritongenError
from tritongen.parity import onnx_session


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("consts")
    return {
        "pickled": factories.save_model(factories.WithRate(), root / "rate.pt", "pickled_module"),
        "scripted": factories.save_model(factories.WithRate(), root / "rate_ts.pt", "torchscript"),
    }


@pytest.mark.parametrize("form, exporter", [("pickled", "dynamo"), ("scripted", "torchscript")])
def test_consts_are_fixed_in_the_graph_and_recorded(models, tmp_path, form, exporter):
    code, out, err = _run(
        [
            "build",
            str(models[form]),
            "--name",
            "rate",
            "--input",
            "x:FP32:4",
            "--allow-pickle",
            "--const",
            "sr=16000",
            "--const",
            "negate=true",
            "--const",
            "gain=2",
            "--repo",
            str(tmp_path),
        ]
    )
    assert code == 0, err
    assert f"{exporter} exporter" in out
    assert "forward() arguments fixed at export: sr=16000, negate=True, gain=2" in err
    manifest = json.loads((tmp_path / "rate" / "1" / "tritongen" / "manifest.json").read_text())
    assert manifest["export"]["consts"] == {"sr": 16000, "negate": True, "gain": 2}
    assert manifest["spec"]["consts"] == [["sr", 16000], ["negate", True], ["gain", 2]]
    session = onnx_session(tmp_path / "rate" / "1" / "model.onnx")
    assert [i.name for i in session.get_inputs()] == ["x"]  # the consts are not inputs
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], -x * 16.0 * 2.0, rtol=1e-6)


def test_a_scripted_forwards_defaults_are_fixed_at_export(models, tmp_path):
    """TorchScript's exporter passes every argument of the scripted method: one with a default and no --const
    failed inside torch (an INTERNAL ASSERT, "please report a bug to PyTorch"). Its default is used, and said."""
    code, out, err = _run(
        ["build", str(models["scripted"]), "--name", "rate", "--input", "x:FP32:4", "--const", "sr=8000"]
        + ["--repo", str(tmp_path)]
    )
    assert code == 0, err
    assert "a TorchScript forward() takes every argument" in err
    assert "forward() arguments fixed at export: sr=8000, gain=1.0, negate=False" in err
    manifest = json.loads((tmp_path / "rate" / "1" / "tritongen" / "manifest.json").read_text())
    assert manifest["export"]["consts"] == {"sr": 8000, "gain": 1.0, "negate": False}
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = onnx_session(tmp_path / "rate" / "1" / "model.onnx").run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x * 8.0, rtol=1e-6)


def test_a_scripted_forwards_tensor_and_string_defaults_are_left_to_the_module(tmp_path):
    """forward(x, mask: Optional[Tensor] = None, mode: str = "sum") as TorchScript failed inside torch's exporter
    (INTERNAL ASSERT "input_values.size() == param_count_list.size()"): the module is called without them."""
    model = factories.save_model(factories.WithOptionalMask(), tmp_path / "masked.pt", "torchscript")
    code, _, err = _run(["build", str(model), "--name", "masked", "--input", "x:FP32:4", "--repo", str(tmp_path)])
    assert code == 0, err
    assert "forward() arguments left at their defaults at export: mask=None, mode='sum'" in err
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = onnx_session(tmp_path / "masked" / "1" / "model.onnx").run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x * 2.0, rtol=1e-6)


def test_consts_from_the_spec_file(models, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("inputs: [{name: x, dims: [4]}]\nconsts: {sr: 8000, gain: 0.5}\n")
    code, out, err = _run(
        [
            "build",
            str(models["pickled"]),
            "--name",
            "rate",
            "--spec",
            str(spec),
            "--allow-pickle",
            "--repo",
            str(tmp_path / "repo"),
        ]
    )
    assert code == 0, err
    session = onnx_session(tmp_path / "repo" / "rate" / "1" / "model.onnx")
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], x * 8.0 * 0.5, rtol=1e-6)


@pytest.mark.parametrize(
    "text, value",
    [
        ("sr=16000", 16000),
        ("gain=0.25", 0.25),
        ("negate=True", True),
        ("negate=false", False),
        ("gain=-3", -3),
        ("gain=1e-3", 1e-3),
    ],
)
def test_values_are_typed(text, value):
    name, parsed = const_from_arg(text)
    assert name == text.split("=")[0] and parsed == value and type(parsed) is type(value)


CASES = [
    ("required int argument without --const", [], ("needs the argument 'sr: int'", "--const sr=VALUE")),
    (
        "argument forward() does not have",
        ["--const", "sr=1", "--const", "rate=1"],
        ("no argument 'rate'", "x, sr, gain"),
    ),
    (
        "argument name with a typo",
        ["--const", "sr=1", "--const", "gian=1"],
        ("no argument 'gian'", "did you mean 'gain'? use one of its arguments: x, sr, gain"),
    ),
    ("float for an int argument", ["--const", "sr=0.5"], ("declares 'sr: int'", "give an int value")),
    ("int for a bool argument", ["--const", "sr=1", "--const", "negate=1"], ("declares 'negate: bool'",)),
    ("const that is a declared input", ["--const", "sr=1", "--const", "x=1"], ("--const x names a declared input",)),
    ("value that is not a number", ["--const", "sr=fast"], ("'fast' is not an int, a float or a bool",)),
    ("not NAME=VALUE", ["--const", "sr"], ("is not NAME=VALUE",)),
    ("infinite value", ["--const", "sr=1", "--const", "gain=inf"], ("not a finite number",)),
    ("same name twice", ["--const", "sr=1", "--const", "sr=2"], ("--const sr is given twice",)),
]


@pytest.mark.parametrize("case, extra, words", CASES, ids=[c[0] for c in CASES])
def test_bad_consts_get_one_line(models, tmp_path, monkeypatch, case, extra, words):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["build", str(models["pickled"]), "--input", "x:FP32:4", "--allow-pickle", *extra])
    _assert_one_clean_line(case, code, out, err, words)
    assert code == 1 and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "text, words",
    [
        ("consts: {sr: '16000'}\n", "consts sr is '16000', not an int"),
        ("consts: [sr, 16000]\n", "'consts' is \\['sr', 16000\\], not a mapping"),
        ("consts: {sr: .nan}\n", "consts sr is nan"),
    ],
)
def test_spec_file_consts_are_type_checked(models, tmp_path, text, words):
    from tritongen.spec import build_spec_from_options

    spec = tmp_path / "spec.yaml"
    spec.write_text("inputs: [{name: x, dims: [4]}]\n" + text)
    with pytest.raises(TritongenError, match=words):
        build_spec_from_options(models["pickled"], spec_file=spec, allow_pickle=True)


class _Sub:
    """forward(a, b) = a - 2 b: which tensor is which shows in the answer."""

    @staticmethod
    def module():
        import torch

        class Sub(torch.nn.Module):
            def forward(self, a, b):
                return a - 2 * b

        return Sub()


def _served(path: Path, a, b):
    return onnx_session(path).run(None, {"a": a, "b": b})[0]


@pytest.mark.parametrize("form", ["--input", "npz keys", "example_inputs"])
def test_inputs_named_after_forwards_arguments_reach_them_whatever_their_order(tmp_path, form):
    """A newcomer's build: --input attention_mask ... --input input_ids for forward(input_ids, attention_mask)
    exported each tensor under the other's name (cosine 0.05 to PyTorch), and the parity gate compared the same
    mix-up, so it passed; an .npz's keys or example_inputs in another order did the same."""
    import torch

    import tritongen

    a, b = np.zeros((1, 4), np.float32), np.ones((1, 4), np.float32)
    if form == "example_inputs":
        tritongen.build(
            _Sub.module(),
            example_inputs={"b": torch.from_numpy(b), "a": torch.from_numpy(a)},
            repo=tmp_path,
            name="sub",
        )
    else:
        model = tmp_path / "sub.pt"
        torch.jit.script(_Sub.module()).save(str(model))
        if form == "npz keys":
            np.savez(tmp_path / "samples.npz", b=b, a=a)
            extra = ["--sample-inputs", str(tmp_path / "samples.npz")]
        else:
            extra = ["--input", "b:FP32:4", "--input", "a:FP32:4"]
        code, _, err = _run(["build", str(model), "--name", "sub", "--repo", str(tmp_path), *extra])
        assert code == 0, err
        assert "inputs passed to forward() by name (b, a: not its argument order)" in err
    np.testing.assert_allclose(_served(tmp_path / "sub" / "1" / "model.onnx", a, b), a - 2 * b)


def test_inputs_naming_some_of_forwards_arguments_out_of_place_are_refused():
    from tritongen.consts import inputs_by_name

    module = _Sub.module()
    assert inputs_by_name(module, ["a", "b"]) is None  # in order: passed in order
    assert inputs_by_name(module, ["x", "y"]) is None  # names of the user's own: passed in order
    assert inputs_by_name(module, ["a", "y"]) is None  # the one named is in its place
    with pytest.raises(TritongenError, match=r"input 'b' is forward\(\)'s argument 2 but is declared 1st"):
        inputs_by_name(module, ["b", "y"])
    # a review: names of some of forward()'s arguments, one left without a tensor, built before (the tensor went
    # to the first argument) and would fail inside the wrapper ("missing 1 required positional argument")
    with pytest.raises(TritongenError, match=r"leaves forward\(\)'s argument 'a' without a tensor"):
        inputs_by_name(module, ["b"])

    class PositionalOnly(type(module)):
        def forward(self, a, b, /):
            return a - 2 * b

    with pytest.raises(TritongenError, match=r"names arguments forward\(\) takes by position only"):
        inputs_by_name(PositionalOnly(), ["b", "a"])
