"""The accuracy guard's error bars: --max-abs-error per output, or the row error bar (a share of the FP32 range)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import factories
from tritongen.build import build
from tritongen.errors import TritongenError
from tritongen.infer import _variant_check, variant_bar
from tritongen.precision.accuracy import ROW_ERROR_OF_RANGE, accuracy_from_outputs
from tritongen.spec import build_spec_from_options


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRITONGEN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tritongen-cache"))


def _offsets(rng: np.random.Generator) -> np.ndarray:
    """Box offsets: most rows clearly non-zero, a few near 0 (a well-centred crop), range about [-0.5, 0.5]."""
    ref = rng.uniform(-0.5, 0.5, (64, 4)).astype(np.float32)
    ref[:4] = rng.uniform(-0.005, 0.005, (4, 4))
    return ref


def test_a_near_zero_sample_passes_within_the_row_error_bar_and_fails_beyond_it():
    rng = np.random.default_rng(0)
    ref = _offsets(rng)
    span = float(ref.max() - ref.min())
    got = ref + rng.normal(0, 0.002, ref.shape).astype(np.float32)  # good everywhere, but turns the near-0 rows
    report = accuracy_from_outputs(["box"], [[got]], [[ref]], 0.99)
    box = report.outputs[0]
    assert box.cosine_min < 0.98 and box.cosine_mean > 0.99  # the old bar refused this for the near-0 rows
    assert report.ok and box.row_error_bar == pytest.approx(ROW_ERROR_OF_RANGE * span)
    assert box.cosine_min_gated is None and report.to_dict()["row_error_bars"] == {
        "box": pytest.approx(box.row_error_bar)
    }
    far = got.copy()
    far[0] = -ref[0] + box.row_error_bar  # a near-0 row off by more than the bar: the cosine judges it again
    report = accuracy_from_outputs(["box"], [[far]], [[ref]], 0.99)
    assert not report.ok and any("min cosine 0.3" in f and "10% of its FP32 range" in f for f in report.failures())


def test_a_given_bar_judges_by_error_alone_and_refuses_an_output_shifted_beyond_it():
    rng = np.random.default_rng(1)
    ref = _offsets(rng)
    turned = ref + rng.normal(0, 0.01, ref.shape).astype(np.float32)
    assert not accuracy_from_outputs(["box"], [[turned]], [[ref]], 0.999).ok  # by cosine: too far
    assert accuracy_from_outputs(["box"], [[turned]], [[ref]], 0.999, max_abs_error={"box": 0.06}).ok
    shifted = ref + np.float32(0.07)  # every value off by 0.07: the cosine of most rows is still high
    report = accuracy_from_outputs(["box"], [[shifted]], [[ref]], 0.9, max_abs_error={"box": 0.06})
    assert not report.ok and report.failures() == ["box: max abs error 0.07 > 0.06 (--max-abs-error)"]
    assert report.to_dict()["max_abs_error"] == {"box": 0.06} and "box <= 0.06" in report.table()


def test_infer_check_applies_the_recorded_bars():
    rng = np.random.default_rng(2)
    ref = _offsets(rng)
    guard = accuracy_from_outputs(["box"], [[ref]], [[ref]], 0.99, max_abs_error={"box": 0.05})
    bar = variant_bar({"precision": "int8", "accuracy": guard.to_dict()})
    assert bar is not None and bar.max_abs_error == (("box", 0.05),) and bar.row_error_bars == ()
    assert _variant_check(bar, {"box": ref + np.float32(0.04)}, {"box": ref}).ok
    assert not _variant_check(bar, {"box": ref + np.float32(0.06)}, {"box": ref}).ok
    # the row error bar is the guard's number, not recomputed from the served samples' range
    default = accuracy_from_outputs(["box"], [[ref]], [[ref]], 0.99)
    recorded = variant_bar({"precision": "int8", "accuracy": default.to_dict()})
    row_bar = default.outputs[0].row_error_bar
    assert recorded is not None and dict(recorded.row_error_bars) == {"box": pytest.approx(row_bar)}
    want = np.concatenate([ref[:1], ref[4:], ref[4:]])  # one near-0 row among 121
    served = want.copy()
    served[0] += np.float32(0.2 * row_bar) * np.sign(rng.standard_normal(4)).astype(np.float32)  # turns it
    assert _variant_check(recorded, {"box": served}, {"box": want}).ok
    tight = dataclasses.replace(recorded, row_error_bars=(("box", 1e-4),))
    assert not _variant_check(tight, {"box": served}, {"box": want}).ok  # the recorded number decides
    # a manifest from before these bars: the bar is computed from the reference
    old = variant_bar({"precision": "int8", "accuracy": {"min_cosine": 0.99, "min_top1": None}})
    assert old is not None and old.max_abs_error == () and old.row_error_bars == ()


def test_bad_max_abs_error_options(tmp_path):
    conv = factories.save_model(factories.make_small_conv(), tmp_path / "conv.pt", "state_dict")
    base = dict(
        inputs=["x:FP32:3,32,32"],
        outputs=["logits"],
        model_factory="tests.factories:make_small_conv",
        repo=tmp_path / "repo",
        name="conv",
        precision="fp16",
    )
    for given, problem in (
        ("logits", "not OUTPUT=VALUE"),
        ("logits=x", "not OUTPUT=VALUE"),
        ("logits=-1", "not a positive number"),
        ("box=0.1", "which is not an output"),
    ):
        with pytest.raises(TritongenError, match=problem):
            build_spec_from_options(conv, max_abs_error=[given], **base)
    spec = build_spec_from_options(conv, max_abs_error=["logits=0.5", "logits=0.25"], **base)
    assert spec.max_abs_error == (("logits", 0.25),)


def test_max_abs_error_from_the_spec_file(tmp_path):
    conv = factories.save_model(factories.make_small_conv(), tmp_path / "conv.pt", "state_dict")
    base = dict(
        inputs=["x:FP32:3,32,32"],
        outputs=["logits"],
        model_factory="tests.factories:make_small_conv",
        repo=tmp_path / "repo",
        name="conv",
        precision="fp16",
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("max_abs_error: {logits: 0.25}\n")
    assert build_spec_from_options(conv, spec_file=spec_file, **base).max_abs_error == (("logits", 0.25),)
    # a flag wins over the file, as every other key
    given = build_spec_from_options(conv, spec_file=spec_file, max_abs_error=["logits=0.5"], **base)
    assert given.max_abs_error == (("logits", 0.5),)
    for text, words in (
        ("max_abs_error: [logits]", "not a mapping of output names"),
        ("max_abs_error: {logits: -1}", "not a positive finite number"),
        ("max_abs_error: {logits: .nan}", "not a positive finite number"),
        ("max_abs_error: {logits: '0.1'}", "not a positive finite number"),
        ("max_abs_error: {box: 0.1}", "which is not an output"),
    ):
        spec_file.write_text(text + "\n")
        with pytest.raises(TritongenError, match=words):
            build_spec_from_options(conv, spec_file=spec_file, **base)


def test_the_guard_refuses_a_variant_beyond_a_given_bar_and_records_a_bar_it_meets(tmp_path):
    from tests.test_precision import OutlierMLP

    path = factories.save_model(OutlierMLP().eval(), tmp_path / "mlp.pt", "torchscript-trace", (torch.randn(2, 16),))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32))
    options = dict(
        inputs=["x:FP32:16"],
        outputs=["y"],
        max_batch_size=8,
        repo=tmp_path / "repo",
        name="mlp",
        target="onnxruntime",
        precision="fp16",
        calib_data=calib,
    )
    with pytest.raises(TritongenError) as err:  # FP16 cannot be within 1e-9 of FP32 everywhere
        build(build_spec_from_options(path, max_abs_error=["y=1e-9"], **options))
    assert "below the accuracy bar" in err.value.problem and "(--max-abs-error)" in err.value.details
    assert "--calib-method" not in err.value.fix  # FP16 is not calibrated: no INT8 option offered
    assert not (tmp_path / "repo" / "mlp").exists()
    result = build(build_spec_from_options(path, max_abs_error=["y=1e3"], **options))
    accuracy = json.loads(Path(result.manifest_path).read_text())["precision"]["accuracy"]
    assert (
        accuracy["ok"]
        and accuracy["max_abs_error"] == {"y": 1e3}
        and accuracy["outputs"][0]["max_abs_error_bar"] == 1e3
    )


def test_a_bar_for_an_output_the_model_does_not_have_is_refused_once_the_outputs_are_known(tmp_path):
    """Without --output the names come from the export: a bar for 'nope' was dropped silently and the output judged
    by cosine instead of the bar asked for."""
    path = factories.save_model(factories.make_tiny_linear(), tmp_path / "lin.pt", "torchscript")
    spec = build_spec_from_options(
        path, inputs=["x:FP32:4"], repo=tmp_path / "repo", name="lin", precision="fp16", max_abs_error=["nope=0.1"]
    )
    with pytest.raises(TritongenError, match=r"--max-abs-error names 'nope', which is not an output of the model \("):
        build(spec)
    assert not (tmp_path / "repo" / "lin").exists()


def _shown(failure: str, what: str) -> tuple[str, str, str]:
    """(value, sign, bar) as a failure line prints them after ``what``."""
    found = re.search(re.escape(what) + r" (\S+) ([<>]) (\S+)", failure)
    assert found, failure
    return found.group(1), found.group(2), found.group(3)


def test_failures_print_enough_digits_for_the_comparison_to_read_true():
    """A measured 0.99988 against 0.99999 reads 0.99988 < 0.99999 (not 0.9999 < 0.99999), a top-1 of 0.99995
    against 0.99999 does not read 1.0000, an error of 1.00004e-09 against 1e-09 does not read 1e-09 > 1e-09, and a
    bar of 0.99999999 is not printed as 1."""
    angle = np.arccos(0.99988)
    want = np.tile(np.array([[1.0, 0.0]]), (8, 1))
    got = np.tile(np.array([[np.cos(angle), np.sin(angle)]]), (8, 1))
    for bar in (0.99999, 0.99999999):
        report = accuracy_from_outputs(["y"], [[got]], [[want]], bar)
        value, sign, shown_bar = _shown(next(f for f in report.failures() if "mean cosine" in f), "mean cosine")
        assert float(value) < float(shown_bar) and sign == "<" and float(shown_bar) == pytest.approx(bar, abs=1e-12)
        decimals = len(shown_bar.split(".")[1])
        assert abs(float(value) - report.outputs[0].cosine_mean) <= 0.5 * 10.0**-decimals, (value, shown_bar)
        assert f"mean cosine >= {shown_bar}," in report.table()
    classes = np.zeros((20000, 2))
    classes[:, 0] = 1.0
    flipped = classes.copy()
    flipped[0] = [0.0, 1.0]  # one of 20000 disagrees: top-1 0.99995
    report = accuracy_from_outputs(["y"], [[flipped]], [[classes]], 0.5, 0.99999)
    value, _, shown_bar = _shown(next(f for f in report.failures() if "top-1" in f), "top-1 agreement")
    assert float(value) < float(shown_bar) and float(value) == pytest.approx(0.99995)
    zeros = np.zeros((4, 3))
    report = accuracy_from_outputs(["y"], [[zeros + 1.00004e-9]], [[zeros]], 0.5, max_abs_error={"y": 1e-9})
    value, sign, shown_bar = _shown(report.failures()[0], "max abs error")
    assert sign == ">" and float(value) > float(shown_bar) == 1e-9


def test_rows_of_no_values_do_not_lift_the_mean_cosine():
    """Suspected by an attacker and so: held-out rows of a 0-length dimension scored cosine 1.0 each, lifting the
    mean over rows that do hold values."""
    want = [[np.ones((2, 4))], [np.ones((6, 0))]]
    got = [[np.array([[1.0, 1.0, 1.0, -1.0], [1.0, 1.0, 1.0, -1.0]])], [np.ones((6, 0))]]
    report = accuracy_from_outputs(["y"], got, want, 0.99)
    (output,) = report.outputs
    assert output.samples == 8 and output.cosine_mean == pytest.approx(0.5)  # the two rows that hold values
    assert not report.ok
