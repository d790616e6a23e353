"""The load stage: every form of model.pt, detected from content, and every way it can go wrong."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import warnings
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.factories import (  # noqa: E402
    DynamicSeq,
    SmallConvNet,
    make_dynamic_seq,
    make_small_conv,
    make_two_in_two_out,
    save_model,
    small_conv_inputs,
    two_in_two_out_inputs,
)
from tritongen.errors import TritongenError  # noqa: E402
from tritongen.load import LoadedModel, detect_format, factory_from_spec, module_from_file  # noqa: E402

FACTORY = "tests.factories:make_small_conv"
FORM_WORDS = ("TorchScript", "torch.export", "--model-factory", "--allow-pickle")


class Evil:
    """Unpickling this creates ``marker``: stands in for any code a malicious pickle could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """SmallConvNet saved once in every form, each under a name that hides its form."""
    folder = tmp_path_factory.mktemp("forms")
    model, x = make_small_conv(), small_conv_inputs()
    return {
        form: save_model(model, folder / f"{form}.model", form, x)
        for form in ("torchscript", "torchscript-trace", "torch.export", "state_dict", "pickled_module")
    }


def outputs_match(loaded: LoadedModel, reference: torch.nn.Module, inputs) -> bool:
    with torch.no_grad():
        got, want = loaded.module(*inputs), reference(*inputs)
    got = got if isinstance(got, (tuple, list)) else (got,)
    want = want if isinstance(want, (tuple, list)) else (want,)
    return len(got) == len(want) and all(torch.allclose(g, w, atol=1e-6) for g, w in zip(got, want))


def in_eval_mode(module) -> bool:
    return not any(m.training for m in module.modules())


def message(exc_info) -> str:
    return exc_info.value.message


# ------------------------------------------------------------------------------------------------ forms


@pytest.mark.parametrize(
    "saved_as, kwargs, form",
    [
        ("torchscript", {}, "torchscript"),
        ("torchscript-trace", {}, "torchscript"),
        ("torch.export", {}, "torch.export"),
        ("state_dict", {"model_factory": FACTORY}, "state_dict"),
        ("pickled_module", {"allow_pickle": True}, "pickled_module"),
    ],
)
def test_each_form_loads_and_matches_the_original(saved, saved_as, kwargs, form):
    loaded = module_from_file(saved[saved_as], **kwargs)
    assert loaded.form == form
    assert loaded.source == saved[saved_as]
    assert in_eval_mode(loaded.module)  # SmallConvNet has Dropout: training mode would not match below
    fresh = small_conv_inputs(batch=3, seed=7)
    assert outputs_match(loaded, make_small_conv(), fresh)
    assert (loaded.exported_program is not None) == (form == "torch.export")


def test_export_archive_keeps_the_exported_program(saved):
    loaded = module_from_file(saved["torch.export"])
    assert isinstance(loaded.exported_program, torch.export.ExportedProgram)
    assert isinstance(loaded.module, torch.fx.GraphModule)


@pytest.mark.parametrize("form", ["torchscript", "torch.export"])
def test_two_inputs_two_outputs(tmp_path, form):
    model, inputs = make_two_in_two_out(), two_in_two_out_inputs()
    loaded = module_from_file(save_model(model, tmp_path / "m.pt", form, inputs))
    assert outputs_match(loaded, model, inputs)


def test_dynamic_sequence_torchscript_handles_any_length(tmp_path):
    model = make_dynamic_seq()
    loaded = module_from_file(save_model(model, tmp_path / "seq.pt", "torchscript"))
    for length in (1, 5, 13):
        x = (torch.randn(2, length, 8),)
        assert outputs_match(loaded, model, x)
        assert loaded.module(*x).shape == (2, 8)


def test_dynamic_sequence_torch_export_with_dynamic_dim(tmp_path):
    model, seq = DynamicSeq().eval(), torch.export.Dim("seq", min=2, max=64)
    ep = torch.export.export(model, (torch.randn(2, 5, 8),), dynamic_shapes=({1: seq},))
    path = tmp_path / "seq.pt2"
    torch.export.save(ep, str(path))
    loaded = module_from_file(path)
    for length in (2, 9):
        assert outputs_match(loaded, model, (torch.randn(2, length, 8),))


@pytest.mark.parametrize(
    "saved_as, name",
    [
        ("torchscript", "model.bin"),
        ("torchscript", "model"),
        ("torch.export", "model.pt"),
        ("torch.export", "model.onnx"),
        ("state_dict", "weights.pt2"),
        ("pickled_module", "model.pth"),
    ],
)
def test_detection_ignores_the_extension(saved, tmp_path, saved_as, name):
    path = shutil.copyfile(saved[saved_as], tmp_path / name)
    kwargs = {"state_dict": {"model_factory": FACTORY}, "pickled_module": {"allow_pickle": True}}.get(saved_as, {})
    loaded = module_from_file(Path(path), **kwargs)
    assert loaded.form == saved_as.replace("-trace", "")
    assert outputs_match(loaded, make_small_conv(), small_conv_inputs())


def test_detect_format_reads_content(saved):
    assert detect_format(saved["torchscript"]).kind == "torchscript"
    assert detect_format(saved["torchscript-trace"]).kind == "torchscript"
    assert detect_format(saved["torch.export"]).kind == "torch.export"
    assert detect_format(saved["state_dict"]).kind == "torch.save"
    assert detect_format(saved["pickled_module"]).kind == "torch.save"


def test_loading_is_quiet(saved, tmp_path, capfd):
    for name in ("torchscript", "torch.export"):  # .model names: torch.export warns about paths not ending in .pt2
        shutil.copyfile(saved[name], tmp_path / f"{name}.bin")
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module_from_file(tmp_path / "torchscript.bin")
        module_from_file(tmp_path / "torch.export.bin")
        module_from_file(saved["state_dict"], model_factory=FACTORY)
        module_from_file(saved["pickled_module"], allow_pickle=True)
    assert [str(w.message) for w in caught] == []
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# ------------------------------------------------------------------------------------------ state_dicts


def small_conv_state() -> dict:
    return make_small_conv().state_dict()


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd},
        lambda sd: {
            "model_state_dict": sd,
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 0.1}]},
            "loss": 0.5,
        },
        lambda sd: {"ema": sd, "step": 10},  # the only state_dict among the values
        lambda sd: {f"module.{k}": v for k, v in sd.items()},  # DataParallel / DDP
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},  # torch.compile
        lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}},  # Lightning
    ],
    ids=["state_dict", "model", "model_state_dict", "single-value", "module-prefix", "compile-prefix", "lightning"],
)
def test_checkpoint_wrappers(tmp_path, wrap):
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(small_conv_state()), path)
    loaded = module_from_file(path, model_factory=FACTORY)
    assert loaded.form == "state_dict"
    assert outputs_match(loaded, make_small_conv(), small_conv_inputs())


def test_legacy_torch_save_format(tmp_path):
    path = tmp_path / "old.pt"
    torch.save(small_conv_state(), path, _use_new_zipfile_serialization=False)
    assert detect_format(path).kind == "torch.save"
    assert outputs_match(module_from_file(path, model_factory=FACTORY), make_small_conv(), small_conv_inputs())


def test_safetensors(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(small_conv_state(), str(path))
    assert detect_format(path).kind == "safetensors"
    loaded = module_from_file(path, model_factory=FACTORY)
    assert loaded.form == "state_dict"
    assert outputs_match(loaded, make_small_conv(), small_conv_inputs())
    with pytest.raises(TritongenError) as err:
        module_from_file(path)
    assert "safetensors" in message(err) and "--model-factory" in message(err)


def test_parameterless_state_dict(tmp_path):
    path = tmp_path / "empty.pt"
    torch.save(make_two_in_two_out().state_dict(), path)
    loaded = module_from_file(path, model_factory="tests.factories:make_two_in_two_out")
    assert outputs_match(loaded, make_two_in_two_out(), two_in_two_out_inputs())


def test_state_dict_without_factory_says_so(saved):
    with pytest.raises(TritongenError) as err:
        module_from_file(saved["state_dict"])
    assert "state_dict" in message(err) and "--model-factory module:callable" in message(err)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    state = small_conv_state()
    state.pop("head.weight")
    state["extra.bias"] = torch.zeros(3)
    path = tmp_path / "sd.pt"
    torch.save(state, path)
    with pytest.raises(TritongenError) as err:
        module_from_file(path, model_factory=FACTORY)
    text = message(err)
    assert "head.weight" in text and "extra.bias" in text and "missing" in text and "unexpected" in text
    assert "factory" in err.value.fix


def test_shape_mismatch(tmp_path):
    (tmp_path / "wide.py").write_text(
        "from tests.factories import SmallConvNet\ndef make():\n    return SmallConvNet(channels=4)\n"
    )
    path = tmp_path / "sd.pt"
    torch.save(small_conv_state(), path)
    with pytest.raises(TritongenError) as err:
        module_from_file(path, model_factory=f"{tmp_path / 'wide.py'}:make")
    assert "size mismatch" in message(err)


def test_factory_with_a_full_model_is_an_error(saved):
    with pytest.raises(TritongenError) as err:
        module_from_file(saved["torchscript"], model_factory=FACTORY)
    assert "--model-factory" in message(err)


def test_dict_without_weights(tmp_path):
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(TritongenError) as err:
        module_from_file(path, model_factory=FACTORY)
    assert "'epoch'" in message(err)


def test_single_tensor(tmp_path):
    path = tmp_path / "t.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(TritongenError) as err:
        module_from_file(path)
    assert "Tensor" in message(err)


# ----------------------------------------------------------------------------------------------- pickles


def test_pickled_module_refused_by_default(saved):
    with pytest.raises(TritongenError) as err:
        module_from_file(saved["pickled_module"])
    assert "--allow-pickle" in message(err) and "trust" in message(err)
    assert "SmallConvNet" in message(err)


@pytest.mark.parametrize("how", ["legacy", "plain-pickle"])
def test_allow_pickle_reads_older_pickles(tmp_path, how):
    path = tmp_path / "model.pkl"
    if how == "legacy":
        torch.save(make_small_conv(), path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(make_small_conv(), protocol=4))
    with pytest.raises(TritongenError) as err:
        module_from_file(path)
    assert "--allow-pickle" in message(err)
    loaded = module_from_file(path, allow_pickle=True)
    assert loaded.form == "pickled_module"
    assert outputs_match(loaded, make_small_conv(), small_conv_inputs())


def test_pickled_checkpoint_with_module_inside(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"model": make_small_conv(), "epoch": 2}, path)
    with pytest.raises(TritongenError):
        module_from_file(path)
    loaded = module_from_file(path, allow_pickle=True)
    assert loaded.form == "pickled_module"
    assert outputs_match(loaded, make_small_conv(), small_conv_inputs())


def test_pickled_module_whose_class_is_gone(tmp_path, monkeypatch):
    import sys
    import types

    mod = types.ModuleType("vanishing_models")
    mod.Net = type("Net", (SmallConvNet,), {"__module__": "vanishing_models"})
    monkeypatch.setitem(sys.modules, "vanishing_models", mod)
    path = tmp_path / "gone.pt"
    torch.save(mod.Net(), path)
    monkeypatch.delitem(sys.modules, "vanishing_models")
    with pytest.raises(TritongenError) as err:
        module_from_file(path, allow_pickle=True)
    assert "vanishing_models" in message(err) and "import" in message(err)


@pytest.mark.parametrize("how", ["torch.save", "torch.save-legacy", "pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    if how == "pickle":
        path.write_bytes(pickle.dumps(Evil(marker), protocol=4))
    else:
        torch.save(Evil(marker), path, _use_new_zipfile_serialization=how == "torch.save")
    with pytest.raises(TritongenError) as err:
        module_from_file(path)
    assert "--allow-pickle" in message(err)
    with pytest.raises(TritongenError):
        module_from_file(path, model_factory=FACTORY)
    assert not marker.exists()


def _rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes], add: dict[str, bytes] | None = None) -> Path:
    """Copy a zip, replacing members whose names end with a key of ``replace``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for name in zin.namelist():
            data = next((v for k, v in replace.items() if name.endswith(k)), None)
            zout.writestr(name, zin.read(name) if data is None else data)
        for rel, data in (add or {}).items():
            zout.writestr(f"{root}/{rel}", data)
    return dst


def test_malicious_pickle_inside_export_archive_is_refused(saved, tmp_path):
    # torch.export.load unpickles sample inputs with weights_only=False when weights_only=True fails.
    marker = tmp_path / "pwned"
    evil = io.BytesIO()
    torch.save(Evil(marker), evil)
    path = _rewrite_zip(saved["torch.export"], tmp_path / "evil.pt2", {"data/sample_inputs/model.pt": evil.getvalue()})
    with pytest.raises(TritongenError) as err:
        module_from_file(path)
    assert "--allow-pickle" in message(err) and "sample_inputs" in message(err)
    assert not marker.exists()


class _TensorStateTheWeightsOnlyReaderRefuses:
    """A tensor whose pickled state is a 3-tuple: torch's weights-only unpickler refuses it with a TypeError (not an
    UnpicklingError), where the full unpickler accepts it and goes on to the next object."""

    def __reduce__(self):
        import collections
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage is deprecated
            storage = torch.zeros(3).storage()
        rebuild = (storage, 0, (3,), (1,), False, collections.OrderedDict())
        return (torch._utils._rebuild_tensor_v2, rebuild, (False, None, None))


@pytest.mark.parametrize("where", ["sample inputs", "a weight marked use_pickle"])
def test_a_pickle_the_weights_only_reader_refuses_for_any_reason_is_refused(saved, tmp_path, where):
    """torch.export.load loads a record again with weights_only=False when the weights-only load fails for any
    reason (and loads use_pickle weights so from the start): a TypeError from a crafted tensor state let a
    code-running pickle through the check, which counted only UnpicklingError."""
    marker = tmp_path / "pwned"
    evil = io.BytesIO()
    torch.save((_TensorStateTheWeightsOnlyReaderRefuses(), Evil(marker)), evil)
    if where == "sample inputs":
        replace = {"data/sample_inputs/model.pt": evil.getvalue()}
    else:
        with zipfile.ZipFile(saved["torch.export"]) as zf:
            name = next(n for n in zf.namelist() if n.endswith("data/weights/model_weights_config.json"))
            config = json.loads(zf.read(name))
        fqn, meta = next(iter(config["config"].items()))
        config["config"][fqn] = {**meta, "use_pickle": True}
        replace = {
            "data/weights/model_weights_config.json": json.dumps(config).encode(),
            f"data/weights/{meta['path_name']}": evil.getvalue(),
        }
    path = _rewrite_zip(saved["torch.export"], tmp_path / "evil.pt2", replace)
    with pytest.raises(TritongenError) as err:
        module_from_file(path)
    assert "--allow-pickle" in message(err)
    assert not marker.exists()


def test_opaque_constants_in_export_archive_are_refused(saved, tmp_path):
    config = json.dumps({"config": {"obj": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False}}})
    path = _rewrite_zip(
        saved["torch.export"], tmp_path / "opaque.pt2", {"data/constants/model_constants_config.json": config.encode()}
    )
    with pytest.raises(TritongenError) as err:
        module_from_file(path)
    assert "opaque" in message(err) and "--allow-pickle" in message(err)


def test_export_archive_with_compiled_code_is_refused(saved, tmp_path):
    path = _rewrite_zip(
        saved["torch.export"], tmp_path / "aoti.pt2", {}, add={"data/aotinductor/model/model.so": b"\x7fELF"}
    )
    with pytest.raises(TritongenError) as err:
        module_from_file(path)
    assert "compiled code" in message(err)


def test_forged_torchscript_pickle_does_not_run(saved, tmp_path):
    marker = tmp_path / "pwned"
    path = _rewrite_zip(
        saved["torchscript"], tmp_path / "evil.pt", {"/data.pkl": pickle.dumps(Evil(marker), protocol=2)}
    )
    assert detect_format(path).kind == "torchscript"
    with pytest.raises(TritongenError):
        module_from_file(path, allow_pickle=True)
    assert not marker.exists()


def test_export_in_training_mode_is_refused(tmp_path):
    model = make_small_conv().train()
    path = tmp_path / "train.pt2"
    torch.export.save(torch.export.export(model, small_conv_inputs()), str(path))
    with pytest.raises(TritongenError) as err:
        module_from_file(path)
    assert "training mode" in message(err) and "model.eval()" in message(err)


# --------------------------------------------------------------------------------------- not a model file


def _make_bad(kind: str, folder: Path, saved: dict[str, Path]) -> Path:
    path = folder / "model.pt"
    if kind == "random":
        path.write_bytes(bytes(range(7, 256)) * 4)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated-zip":
        data = saved["torchscript"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-torch-save":
        data = saved["state_dict"].read_bytes()
        path.write_bytes(data[: len(data) - 200])
    elif kind == "damaged-torch-save":  # the zip's index is intact, its pickle is not
        with zipfile.ZipFile(saved["state_dict"]) as zin, zipfile.ZipFile(path, "w") as zout:
            for name in zin.namelist():
                zout.writestr(name, b"\xff" * 64 if name.endswith("/data.pkl") else zin.read(name))
    elif kind == "legacy-export-forged":  # torch <= 2.7 layout: no root folder, JSON program at the top
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("serialized_exported_program.json", "{}")
            z.writestr("version", "1.0")
    elif kind == "foreign-zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("hello.txt", "hi")
            z.writestr("weights/w.npy", b"\x93NUMPY")
    elif kind == "text":
        path.write_text("def forward(x):\n    return x\n")
    elif kind == "directory":
        path.mkdir()
    elif kind == "missing":
        pass
    return path


@pytest.mark.parametrize(
    "kind, words",
    [
        ("random", "not a model file"),
        ("empty", "empty"),
        ("truncated-zip", "truncated"),
        ("truncated-torch-save", "truncated"),
        ("damaged-torch-save", "cannot be read"),
        ("legacy-export-forged", "loading torch.export archive"),
        ("foreign-zip", "not a PyTorch one"),
        ("text", "text file"),
        ("directory", "directory"),
        ("missing", "does not exist"),
    ],
)
def test_unrecognized_files(saved, tmp_path, kind, words):
    path = _make_bad(kind, tmp_path, saved)
    for kwargs in ({}, {"allow_pickle": True, "model_factory": FACTORY}):
        with pytest.raises(TritongenError) as err:
            module_from_file(path, **kwargs)
        assert words in message(err)
        assert all(w in message(err) for w in FORM_WORDS), message(err)


# ----------------------------------------------------------------------------------------------- factories


@pytest.fixture
def factories_file(tmp_path) -> Path:
    path = tmp_path / "user_models.py"
    path.write_text(
        "from tests.factories import SmallConvNet\n"
        "CONSTANT = 3\n"
        "def good():\n    return SmallConvNet()\n"
        "def boom():\n    raise ValueError('no config found')\n"
        "def not_a_module():\n    return {'weights': 1}\n"
        "class Builder:\n    @staticmethod\n    def create():\n        return SmallConvNet()\n"
    )
    return path


def test_factory_from_module_and_file(factories_file):
    assert factory_from_spec(FACTORY) is make_small_conv
    assert isinstance(factory_from_spec(f"{factories_file}:good")(), SmallConvNet)
    assert isinstance(factory_from_spec(f"{factories_file}:Builder.create")(), SmallConvNet)
    assert isinstance(factory_from_spec("tests/factories.py:make_small_conv")(), torch.nn.Module)


def test_file_factory_loads_state_dict(saved, factories_file):
    loaded = module_from_file(saved["state_dict"], model_factory=f"{factories_file}:good")
    assert loaded.form == "state_dict"


@pytest.mark.parametrize(
    "spec, words",
    [
        ("tests.factories", "module:callable"),
        (":make", "module:callable"),
        ("no_such_package_xyz.models:make", "no module named"),
        ("tests.factories:make_large_conv", "no attribute"),
        ("tests.factories:SMALL_CONV_INPUT", "not callable"),
        ("{file}:missing", "no attribute"),
        ("{file}:CONSTANT", "not callable"),
        ("/nonexistent/dir/models.py:make", "does not exist"),
    ],
)
def test_factory_spec_errors(factories_file, spec, words):
    with pytest.raises(TritongenError) as err:
        factory_from_spec(spec.format(file=factories_file))
    assert words in message(err)


def test_a_factory_that_exits_is_one_error_not_a_quiet_exit_0(tmp_path):
    """A training script's sys.exit(main()) at import, or sys:exit as the factory: the build ended with status 0,
    nothing built and nothing said."""
    from tritongen.load.state_dict import from_state_dict

    (tmp_path / "train.py").write_text("import sys\ndef make():\n    pass\nprint('training...')\nsys.exit(0)\n")
    with pytest.raises(TritongenError, match=r"importing .*train.py exited \(SystemExit 0\) instead of returning"):
        factory_from_spec(f"{tmp_path / 'train.py'}:make")
    with pytest.raises(TritongenError, match=r"model factory sys:exit exited \(SystemExit None\)") as err:
        from_state_dict(tmp_path / "w.pt", {"w": torch.zeros(1)}, "sys:exit", "a state_dict")
    assert "if __name__ == '__main__'" in err.value.fix


def test_factory_import_error_inside_module(tmp_path):
    (tmp_path / "broken.py").write_text("import no_such_dependency_xyz\ndef make():\n    pass\n")
    with pytest.raises(TritongenError) as err:
        factory_from_spec(f"{tmp_path / 'broken.py'}:make")
    assert "no_such_dependency_xyz" in message(err)


@pytest.mark.parametrize(
    "name, words",
    [
        ("boom", "raised ValueError: no config found"),
        ("not_a_module", "not a torch.nn.Module"),
    ],
)
def test_factory_call_errors(saved, factories_file, name, words):
    with pytest.raises(TritongenError) as err:
        module_from_file(saved["state_dict"], model_factory=f"{factories_file}:{name}")
    assert words in message(err)


def test_factory_needing_arguments(saved):
    with pytest.raises(TritongenError) as err:
        module_from_file(saved["state_dict"], model_factory="torch.nn:Linear")
    assert "TypeError" in message(err) and "no arguments" in err.value.fix


def test_a_pickled_module_defined_in_a_script_gets_a_fix_that_can_work(tmp_path):
    """`torch.save(model)` from a script pickles the class as __main__.Net: no import brings it back."""
    import subprocess
    import sys

    script = tmp_path / "train.py"
    script.write_text(
        "import torch\n\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n\n"
        f"torch.save(Net(), {str(tmp_path / 'net.pt')!r})\n"
    )
    subprocess.run([sys.executable, str(script)], check=True, cwd=tmp_path, timeout=120)
    with pytest.raises(TritongenError) as err:
        module_from_file(tmp_path / "net.pt", allow_pickle=True)
    assert "__main__" in err.value.message and "importable" not in err.value.fix
    assert "torch.export.save" in err.value.fix and "--model-factory" in err.value.fix


def test_a_pickle_of_a_class_defined_in_the_saving_script_names_main_and_a_fix_that_works(tmp_path):
    """The class lives in the script that saved the model (``__main__``): "make it importable" cannot help, so the
    fix names the self-contained forms instead."""
    import subprocess
    import sys

    from tests.test_bad_input import _run

    saved = tmp_path / "scripted.pt"
    script = (
        "import sys, torch\n"
        "class Net(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * 2\n"
        "torch.save(Net(), sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(saved)], check=True, cwd=tmp_path)
    repo = tmp_path / "repo"
    code, out, err = _run(["build", str(saved), "--input", "x:FP32:4", "--allow-pickle", "--repo", str(repo)])
    assert code != 0 and "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]  # the rest is stage progress
    assert "(__main__)" in line
    assert "torch.export.save" in line and "--model-factory" in line
    assert "importable" not in line  # the generic advice does not apply
    assert not repo.exists() or not any(repo.iterdir())  # nothing half-written


def test_a_pickled_module_from_a_module_not_importable_here_names_it_and_pythonpath(tmp_path, monkeypatch):
    """The fix said "run from its directory", which does not help (the working folder is not on the unpickler's
    path): it names the module and PYTHONPATH."""
    import importlib
    import sys

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "gone_module_x.py").write_text(
        "import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x * 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    net = importlib.import_module("gone_module_x").Net()
    torch.save(net, tmp_path / "net.pt")
    monkeypatch.delitem(sys.modules, "gone_module_x")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path / "code")])
    with pytest.raises(TritongenError) as err:
        module_from_file(tmp_path / "net.pt", allow_pickle=True)
    assert "No module named 'gone_module_x'" in err.value.problem
    assert "make the model's module 'gone_module_x' importable" in err.value.fix and "PYTHONPATH" in err.value.fix
