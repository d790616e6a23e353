"""The typed manifest: what a build writes reads back as the same Manifest, and later steps keep what they do not
own."""

from __future__ import annotations

import json
import re

import pytest

from tritongen.errors import TritongenError
from tritongen.layout import manifest_path
from tritongen.manifest import (
    ENSEMBLE,
    MANIFEST_SCHEMA,
    Manifest,
    new_manifest,
    read_manifest,
    update_manifest,
    write_manifest,
)

DIGEST = "ab" * 32


def test_manifest_round_trip_keeps_every_field(tmp_path):
    model_dir = tmp_path / "m"
    written = new_manifest(3, {"1/model.onnx": DIGEST}, kind=ENSEMBLE, source={"path": "x.pt"}, spec={"atol": 1e-4})
    path = write_manifest(model_dir, 3, written)
    assert path == manifest_path(model_dir, 3)
    raw = json.loads(path.read_text())
    assert raw["manifest_schema"] == MANIFEST_SCHEMA and raw["kind"] == "ensemble" and raw["spec"] == {"atol": 1e-4}
    assert read_manifest(model_dir, 3) == written
    assert "python" in written.tools and written.tritongen_version


def test_update_adds_files_and_engines_and_keeps_details(tmp_path):
    model_dir = tmp_path / "m"
    path = write_manifest(model_dir, 1, new_manifest(1, {"config.pbtxt": DIGEST}, parity={"ok": True}))
    updated = update_manifest(
        path, {"1/model.plan": "cd" * 32}, engines={"8.9": {"plan": "model.plan"}}, tensorrt_version="10.5.0"
    )
    again = read_manifest(model_dir, 1)
    assert again == updated and again.details == {"parity": {"ok": True}}
    assert set(again.files) == {"config.pbtxt", "1/model.plan"} and again.engines["8.9"]["plan"] == "model.plan"


def test_a_manifest_without_kind_is_a_model_and_a_bad_one_is_refused(tmp_path):
    model_dir = tmp_path / "m"
    path = manifest_path(model_dir, 1)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"files": {"config.pbtxt": DIGEST}}))  # an older build: no schema, no kind
    assert read_manifest(model_dir, 1) == Manifest(files={"config.pbtxt": DIGEST}, schema=1)
    path.write_text(json.dumps({"manifest_schema": 2, "files": {}}))
    with pytest.raises(TritongenError, match="manifest_schema 2"):
        read_manifest(model_dir, 1)


@pytest.mark.parametrize(
    "field, value, problem",
    [
        ("created_unix_s", "abc", "created_unix_s 'abc'"),
        ("created_unix_s", 1e300, "not a Unix time"),
        ("tools", [1, 2], "'tools'"),
        ("tools", {"onnx": 1}, "'tools'"),
        ("kind", 7, "'kind' as a JSON int"),
    ],
)
def test_a_manifest_field_of_the_wrong_type_is_one_error_not_a_traceback(tmp_path, field, value, problem):
    model_dir = tmp_path / "m"
    path = manifest_path(model_dir, 1)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"files": {"config.pbtxt": DIGEST}, field: value}))
    with pytest.raises(TritongenError, match=re.escape(problem)):
        read_manifest(model_dir, 1)


@pytest.mark.parametrize(
    "details",
    [{}, {"spec": [1]}, {"spec": {"atol": "x", "rtol": 1e-3}}, {"spec": {"atol": True, "rtol": 1e-3}}],
    ids=["no spec", "a list", "a word", "a bool"],
)
def test_parity_tolerances_a_manifest_does_not_hold_as_numbers_are_one_error(details):
    """infer --check read details["spec"]["atol"] unchecked: a KeyError, a TypeError or a numpy ufunc error
    traceback from a hand-edited manifest (verify passes it: a manifest does not list itself)."""
    manifest = new_manifest(1, {}, **details)
    with pytest.raises(TritongenError, match="records no parity tolerances tritongen can use"):
        manifest.tolerances()
    assert new_manifest(1, {}, spec={"atol": 0.01, "rtol": 0}).tolerances() == (0.01, 0.0)
    nested = new_manifest(1, {}, kind=ENSEMBLE, model={"spec": {"atol": 1e-4, "rtol": 1e-3}})
    assert nested.tolerances("model") == (1e-4, 1e-3) and nested.spec_record("model")["atol"] == 1e-4


def test_a_variant_bar_that_is_not_a_number_is_one_error():
    from tritongen.infer import variant_bar

    record = {"precision": "int8", "accuracy": {"min_cosine": 0.99, "min_top1": "x"}}
    with pytest.raises(TritongenError, match="without the accuracy guard's bar"):
        variant_bar(record)
    assert variant_bar({**record, "accuracy": {"min_cosine": 0.99, "min_top1": 0.9}}).min_top1 == 0.9


@pytest.mark.parametrize(
    "record, precision, share",
    [
        ({"precision": "int8", "int8_weight_gemm_flops": {"share": 0.5}}, "int8", 0.5),
        ({"precision": "fp16"}, "fp16", None),
        ({"precision": "int4", "int8_weight_gemm_flops": {"share": float("inf")}}, "fp32", None),
        ({"precision": ["int8"], "int8_weight_gemm_flops": {"share": True}}, "fp32", None),
        ("int8", "fp32", None),
    ],
)
def test_the_precision_record_is_read_typed_whatever_a_hand_edit_wrote(record, precision, share):
    """A manifest vouches for the files, not for itself: its precision record is read as the build writes it or
    taken as absent (FP32, no INT8 figure)."""
    manifest = Manifest(files={}, schema=1, details={"precision": record})
    assert manifest.precision == precision and manifest.int8_flop_share == share
    assert manifest.precision_record == (record if isinstance(record, dict) else {})


@pytest.mark.parametrize("atol, rtol", [(1e-5, 0.0), (0, 1e-3)])
def test_recorded_tolerances_are_finite_numbers_of_zero_or_more(atol, rtol):
    spec = {"spec": {"atol": atol, "rtol": rtol}}
    assert Manifest(files={}, schema=1, details=spec).tolerances() == (float(atol), float(rtol))
    for bad in (-1e-5, float("nan"), float("inf"), True, "1e-5", None):
        with pytest.raises(TritongenError, match="records no parity tolerances tritongen can use"):
            Manifest(files={}, schema=1, details={"spec": {"atol": bad, "rtol": rtol}}).tolerances()
