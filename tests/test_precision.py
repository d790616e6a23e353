"""FP16 / INT8 variants with calibration and the accuracy guard, on real models (library and build)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests import factories
from tritongen.build import build
from tritongen.errors import TritongenError
from tritongen.precision.calibration import calibration_data_from_path
from tritongen.precision.int8 import int8_onnx_from_onnx
from tritongen.spec import TensorSpec, build_spec_from_options
from tritongen.validate import check_repository

X = (TensorSpec("x", "FP32", (3, 32, 32)),)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TRITONGEN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "tritongen-cache"))


@pytest.fixture(scope="module")
def conv(tmp_path_factory) -> Path:
    return factories.save_model(factories.make_small_conv(), tmp_path_factory.mktemp("m") / "conv.pt", "state_dict")


@pytest.fixture(scope="module")
def conv_calib(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "images.npz"
    np.savez(path, x=np.random.default_rng(0).standard_normal((480, 3, 32, 32)).astype(np.float32))
    return path


def _conv_spec(model: Path, repo: Path, **options):
    defaults = dict(
        inputs=["x:FP32:3,32,32"],
        outputs=["logits"],
        model_factory="tests.factories:make_small_conv",
        max_batch_size=16,
        repo=repo,
        name="conv",
        target="onnxruntime",
    )
    defaults.update(options)
    return build_spec_from_options(model, **defaults)


def test_conv_int8_top1_agrees_with_fp32(tmp_path, conv, conv_calib):
    result = build(_conv_spec(conv, tmp_path / "repo", precision="int8", calib_data=conv_calib, min_top1=0.99))
    record = json.loads(result.manifest_path.read_text())["precision"]
    assert result.precision == record
    assert record["precision"] == "int8" and record["ok"]
    assert record["calibration"]["samples"] == 360 and record["calibration"]["eval_samples"] == 120
    assert record["accuracy"]["top1"] >= 0.99 and record["accuracy"]["cosine_mean"] >= 0.99
    import onnx

    model = onnx.load(str(result.model_dir / "1" / "model.onnx"), load_external_data=False)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    zero_points = [i for i in model.graph.initializer if i.name.endswith("zero_point")]
    assert zero_points and all(not onnx.numpy_helper.to_array(z).any() for z in zero_points)  # symmetric
    assert all(z.data_type == onnx.TensorProto.INT8 for z in zero_points)
    config = result.config_path.read_text()
    assert 'name: "tensorrt"' in config and 'value: "INT8"' in config
    check_repository(tmp_path / "repo")


def test_conv_fp16_passes_its_gate_and_keeps_io_types(tmp_path, conv):
    result = build(_conv_spec(conv, tmp_path / "repo", precision="fp16"))
    record = json.loads(result.manifest_path.read_text())["precision"]
    assert record["ok"] and record["accuracy"]["cosine_min"] >= 0.999
    from tritongen.manifest import read_manifest

    assert read_manifest(result.model_dir, 1).int8_flop_share is None  # FP16 (and older manifests): no figure
    import onnx

    model = onnx.load(str(result.model_dir / "1" / "model.onnx"), load_external_data=False)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert 'value: "FP16"' in result.config_path.read_text()
    check_repository(tmp_path / "repo")


class OutlierMLP(nn.Module):
    """fc2 sees one activation channel 300x larger than the rest: per-tensor INT8 on fc2's input ruins it."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 64), nn.Linear(64, 32), nn.Linear(32, 8)
        for layer in (self.fc1, self.fc2, self.fc3):
            layer.weight.data = torch.randn(layer.weight.shape, generator=g) / layer.weight.shape[1] ** 0.5
        self.fc1.weight.data[0] *= 300.0
        self.fc2.weight.data[:, 0] /= 300.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def test_guard_kicks_in_and_keeps_the_sensitive_layer(tmp_path):
    model = OutlierMLP().eval()
    path = factories.save_model(model, tmp_path / "mlp.pt", "torchscript-trace", (torch.randn(2, 16),))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((200, 16)).astype(np.float32))
    lines: list[str] = []
    spec = build_spec_from_options(
        path,
        inputs=["x:FP32:16"],
        outputs=["y"],
        max_batch_size=8,
        repo=tmp_path / "repo",
        name="mlp",
        target="tensorrt",
        precision="int8",
        calib_data=calib,
        min_cosine=0.999,
    )
    result = build(spec, progress=lines.append)
    record = json.loads(result.manifest_path.read_text())["precision"]
    first, last = record["attempts"][0]["accuracy"], record["attempts"][-1]["accuracy"]
    assert not first["ok"] and last["ok"] and len(record["attempts"]) >= 2
    assert record["kept_layers"] == ["/fc2/Gemm"]  # the layer reading the outlier channel, and only it
    # FLOPs per row by hand: fc1 2*16*64 = 2048, fc2 2*64*32 = 4096, fc3 2*32*8 = 512; fc2 kept in FP32
    share = record["int8_weight_gemm_flops"]
    assert (share["int8_nodes"], share["total_nodes"]) == (2, 3) and share["share"] == pytest.approx(2560 / 6656)
    assert any("INT8 share of weight-GEMM FLOPs 38.5% (2/3 weighted ops in INT8)" in line for line in lines)
    from tritongen.manifest import read_manifest

    assert read_manifest(result.model_dir, 1).int8_flop_share == pytest.approx(2560 / 6656)
    assert (
        record["sensitivity"][0]["layer"] == "/fc2/Gemm"
        and record["sensitivity"][0]["loss"] > 100 * record["sensitivity"][1]["loss"]
    )
    assert any("below the bar" in line for line in lines) and any(
        "TensorRT is not installed here" in line for line in lines
    )
    # --target tensorrt: prepared ONNX + profiles, no plan yet; the config still validates
    version_dir = result.model_dir / "1"
    plan = json.loads((version_dir / "tritongen" / "engine.json").read_text())
    assert plan["profiles"] == [{"x": {"min": [1, 16], "opt": [8, 16], "max": [8, 16]}}]
    assert (version_dir / "tritongen" / "model.onnx").is_file() and not (version_dir / "model.plan").exists()
    config = result.config_path.read_text()
    assert 'platform: "tensorrt_plan"' in config and "max_batch_size: 8" in config and "KIND_GPU" in config
    check_repository(tmp_path / "repo")


def test_guard_fails_with_a_report_when_the_bar_is_out_of_reach(tmp_path):
    model = OutlierMLP().eval()
    path = factories.save_model(model, tmp_path / "mlp.pt", "torchscript-trace", (torch.randn(2, 16),))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32))
    spec = build_spec_from_options(
        path,
        inputs=["x:FP32:16"],
        max_batch_size=8,
        repo=tmp_path / "repo",
        name="mlp",
        target="onnxruntime",
        precision="int8",
        calib_data=calib,
        min_cosine=1.0,
    )
    with pytest.raises(TritongenError) as err:
        build(spec)
    assert "below the accuracy bar" in err.value.problem and "attempt 1" in err.value.details
    assert "most sensitive layers" in err.value.details and "INT8 share of weight-GEMM FLOPs" in err.value.details
    assert not (tmp_path / "repo" / "mlp").exists()


def test_calibration_cache_is_reused_while_model_and_data_are_unchanged(tmp_path, conv, conv_calib):
    result = build(_conv_spec(conv, tmp_path / "repo"))  # FP32 export to quantize
    src = result.model_dir / "1" / "model.onnx"
    import onnx

    extents = [
        {e.key: int(e.value) for e in i.external_data if e.key != "location"}
        for i in onnx.load(str(src), load_external_data=False).graph.initializer
        if i.external_data
    ]
    # the export writes the weights once (a second save appends a copy and points past the first)
    assert min(e.get("offset", 0) for e in extents) == 0
    assert src.with_name("model.onnx.data").stat().st_size == max(e.get("offset", 0) + e["length"] for e in extents)
    data = calibration_data_from_path(conv_calib, X, True, 16)
    first = int8_onnx_from_onnx(src, tmp_path / "a", data, "percentile")
    again = int8_onnx_from_onnx(src, tmp_path / "b", data, "percentile")
    assert again.cache_path == first.cache_path and again.cache_hit
    changed = np.load(conv_calib)["x"].copy()
    changed[0, 0, 0, 0] += 1.0
    np.savez(tmp_path / "changed.npz", x=changed)
    new = int8_onnx_from_onnx(
        src, tmp_path / "c", calibration_data_from_path(tmp_path / "changed.npz", X, True, 16), "percentile"
    )
    assert new.cache_path != first.cache_path and not new.cache_hit
    # a damaged entry (a truncated write, found by an attacker) failed every rebuild, naming the calibration samples:
    # it is calibrated again and rewritten
    first.cache_path.write_text(first.cache_path.read_text()[:100])
    mended = int8_onnx_from_onnx(src, tmp_path / "d", data, "percentile")
    assert mended.cache_path == first.cache_path and not mended.cache_hit
    assert int8_onnx_from_onnx(src, tmp_path / "e", data, "percentile").cache_hit
    assert (
        data.calib_samples == 360 and first.calib_samples == 352
    )  # histogram methods need one batch shape: tail dropped


# --- bad input: a clear error and nothing written -------------------------------------------------------


def _bad(tmp_path: Path, conv: Path, **options) -> TritongenError:
    with pytest.raises(TritongenError) as err:
        build(_conv_spec(conv, tmp_path / "repo", **options))
    assert not (tmp_path / "repo" / "conv").exists()
    return err.value


def test_bad_calibration_data(tmp_path, conv):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "shape.npz", x=rng.standard_normal((64, 3, 16, 16)).astype(np.float32))
    assert "shape" in _bad(tmp_path, conv, precision="int8", calib_data=tmp_path / "shape.npz").problem
    np.savez(tmp_path / "dtype.npz", x=rng.standard_normal((64, 3, 32, 32)))
    assert "float64" in _bad(tmp_path, conv, precision="int8", calib_data=tmp_path / "dtype.npz").problem
    np.savez(tmp_path / "few.npz", x=rng.standard_normal((5, 3, 32, 32)).astype(np.float32))
    assert "too few" in _bad(tmp_path, conv, precision="int8", calib_data=tmp_path / "few.npz").problem
    (tmp_path / "empty").mkdir()
    assert "no .npz files or images" in _bad(tmp_path, conv, precision="int8", calib_data=tmp_path / "empty").problem
    nan = rng.standard_normal((64, 3, 32, 32)).astype(np.float32)
    nan[7, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan)
    assert "NaN" in _bad(tmp_path, conv, precision="int8", calib_data=tmp_path / "nan.npz").problem
    (tmp_path / "lines.txt").write_text("a sentence\n" * 40)
    lines = _bad(tmp_path, conv, precision="int8", calib_data=tmp_path / "lines.txt")
    assert "is text, but the model takes an image (x FP32 [3, 32, 32])" in lines.problem
    assert "folder of images" in lines.fix


def test_precision_the_target_cannot_do(tmp_path, conv, conv_calib):
    assert (
        _conv_spec(conv, tmp_path / "repo", target="local", precision="fp16").precision == "fp16"
    )  # served on the CPU
    with pytest.raises(TritongenError, match="needs calibration data"):
        _conv_spec(conv, tmp_path / "repo", precision="int8")
    with pytest.raises(TritongenError, match="unknown precision"):
        _conv_spec(conv, tmp_path / "repo", precision="int4")
    with pytest.raises(TritongenError, match="min-cosine"):
        _conv_spec(conv, tmp_path / "repo", precision="fp16", min_cosine=1.5)


def test_guard_options_without_a_precision_are_refused(tmp_path, conv, conv_calib):
    """An FP32 build has no variant and no guard: calibration data and guard bars given to it would be ignored."""
    for options, flags in (
        ({"calib_data": conv_calib}, "--calib-data"),
        ({"min_cosine": 0.95}, "--min-cosine"),
        ({"min_top1": 0.9}, "--min-top1"),
        ({"calib_method": "minmax"}, "--calib-method"),
        ({"max_abs_error": ["logits=0.1"]}, "--max-abs-error"),
        ({"calib_data": conv_calib, "min_top1": 0.9}, "--calib-data/--min-top1"),
    ):
        with pytest.raises(TritongenError) as err:
            _conv_spec(conv, tmp_path / "repo", **options)
        verb = "set" if "/" in flags else "sets"
        assert err.value.problem.startswith(f"{flags} {verb} the --precision fp16/int8 variant's"), options
        assert "this build is fp32" in err.value.problem and "add --precision int8 (or fp16)" in err.value.fix
    # a spec file holding a variant's settings, overridden to fp32 on the command line: its settings are not flags
    spec_file = tmp_path / "int8.yaml"
    spec_file.write_text(f"precision: int8\ncalib_data: {conv_calib}\nmin_cosine: 0.98\n")
    assert _conv_spec(conv, tmp_path / "repo", spec_file=spec_file, precision="fp32").precision == "fp32"
    with pytest.raises(TritongenError, match="an fp16 variant is not calibrated"):
        _conv_spec(conv, tmp_path / "repo", precision="fp16", calib_method="entropy")
    assert _conv_spec(conv, tmp_path / "repo", precision="fp16", calib_data=conv_calib, min_top1=0.9).min_top1 == 0.9


def test_a_failed_abs_error_bar_says_to_raise_it_to_the_measured_error_and_why_retries_were_skipped(tmp_path):
    """A --max-abs-error bar out of reach: every layer alone already costs more than the bar allows, so the guard
    stops after one build and says so; the fix gives the measured error as the bar to raise to, and that bar builds."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    path = factories.save_model(model, tmp_path / "mlp.pt", "torchscript-trace", (torch.randn(2, 16),))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32))

    def spec(bar: str, name: str):
        return build_spec_from_options(
            path,
            inputs=["x:FP32:16"],
            outputs=["y"],
            max_batch_size=8,
            repo=tmp_path / "repo",
            name=name,
            target="onnxruntime",
            precision="int8",
            calib_data=calib,
            max_abs_error=[f"y={bar}"],
        )

    with pytest.raises(TritongenError) as err:
        build(spec("1e-9", "tight"))
    problem, fix, details = err.value.problem, err.value.fix, err.value.details
    assert "after 1 attempt(s) of up to 4 (retries skipped: all 2 layer(s) would have to stay in FP32" in problem
    assert "retries skipped: all 2 layer(s)" in details and "by the measured sensitivities" in details
    assert "raise --max-abs-error for y to its measured max abs error" in fix and "--min-cosine" not in fix
    measured = float(re.search(r"measured max abs error (\S+):", fix).group(1))
    suggested = re.search(r"--max-abs-error y=(\S+);", fix).group(1)
    assert float(suggested) >= measured > 1e-9
    assert json.loads(build(spec(suggested, "met")).manifest_path.read_text())["precision"]["ok"]


def test_image_folder_calibration(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    data = calibration_data_from_path(folder, X, True, 8)
    assert data.source == "images" and (data.calib_samples, data.eval_samples) == (18, 6)
    batch = data.calib[0]["x"]
    assert batch.shape == (8, 3, 32, 32) and batch.dtype == np.float32 and 0.0 <= batch.min() and batch.max() <= 1.0
    with pytest.raises(TritongenError, match="one image"):
        calibration_data_from_path(folder, (TensorSpec("ids", "INT64", (-1,)),), True, 8)


def test_cli_build_fp16_prints_the_guard_and_errors_in_one_line(tmp_path, conv, capsys):
    from tritongen.cli import main

    base = [
        "build",
        str(conv),
        "--model-factory",
        "tests.factories:make_small_conv",
        "--input",
        "x:FP32:3,32,32",
        "--repo",
        str(tmp_path / "repo"),
        "--name",
        "conv",
        "--max-batch-size",
        "4",
    ]
    main(base + ["--target", "onnxruntime", "--precision", "fp16"])
    err = capsys.readouterr().err
    assert "fp16 variant + accuracy guard" in err and "fp16: cosine mean" in err
    with pytest.raises(SystemExit) as exit_info:
        main(
            base
            + [
                "--name",
                "conv8",
                "--target",
                "onnxruntime",
                "--precision",
                "int8",
                "--calib-data",
                str(tmp_path / "none.npz"),
            ]
        )
    assert exit_info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert lines == [
        f"error: calibration data {tmp_path / 'none.npz'} does not exist: pass --calib-data with an .npz file, "
        "a folder of .npz files or a text file"
    ]
    assert not (tmp_path / "repo" / "conv8").exists()


def test_the_check_samples_of_a_tensorrt_build_stay_within_its_profile(tmp_path):
    """Held-out calibration rows become the samples infer --check sends; for --target tensorrt only where their
    sizes fit the engine's profile (a 200-step row is past --max-dim 128: the engine would refuse it)."""
    from tritongen.build import build
    from tritongen.layout import SAMPLES_NAME

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8)).eval()  # per step: any length
    path = factories.save_model(net, tmp_path / "seq.pt", "torchscript-trace", (torch.randn(2, 16, 8),))
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(3).standard_normal((32, 200, 8)).astype(np.float32))
    shapes = {}
    for target in ("local", "tensorrt"):
        spec = build_spec_from_options(
            path, name=f"seq_{target}", inputs=["x:FP32:-1,8"], max_batch_size=8,
            repo=tmp_path / "repo", target=target, precision="int8", calib_data=calib, min_cosine=0.5,
        )  # fmt: skip
        build(spec)
        shapes[target] = np.load(tmp_path / "repo" / f"seq_{target}" / "1" / "tritongen" / SAMPLES_NAME)["x"].shape
    assert shapes["local"][1] == 200 and shapes["tensorrt"][1] == 64, shapes  # calibration rows / the build's OPT


def test_the_guard_holds_the_variant_to_its_bar_on_the_samples_infer_check_sends(tmp_path):
    """A variant that met the bar on held-out calibration rows but not on the samples the build saves (here
    --sample-inputs far outside the calibrated range) built, and its own `infer --check` read MISMATCH (a newcomer's
    MiniLM INT8 calibrated on random words: 0.9947 held out, 0.9875 on the saved sentences). The guard now holds
    the variant to its bar on those samples too."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    path = factories.save_model(net, tmp_path / "mlp.pt", "torchscript-trace", (torch.randn(2, 16),))
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((128, 16)).astype(np.float32))
    np.savez(tmp_path / "near.npz", x=rng.standard_normal((8, 16)).astype(np.float32))
    np.savez(tmp_path / "far.npz", x=(40 * rng.standard_normal((8, 16))).astype(np.float32))

    def spec(name, samples):
        return build_spec_from_options(
            path, name=name, inputs=["x:FP32:16"], max_batch_size=8, repo=tmp_path / "repo", target="onnxruntime",
            precision="int8", calib_data=tmp_path / "calib.npz", sample_inputs=tmp_path / samples,
        )  # fmt: skip

    record = build(spec("near", "near.npz")).precision
    assert record["ok"] and record["attempts"][0]["accuracy"]["ok"]  # data like calibration's: passes at once
    with pytest.raises(TritongenError) as err:
        build(spec("far", "far.npz"))
    assert "below the accuracy bar" in err.value.problem
    assert "attempt 1: kept 0 layer(s): output: mean cosine" in err.value.details
    assert "held-out row(s) and the 8 row(s) the build saves for infer --check" in err.value.details
    assert not (tmp_path / "repo" / "far").exists()


class TwoLayerGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(16, 32, num_layers=2, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(x)[0])


def test_a_variant_onnx_runtime_crashes_on_is_refused_in_one_line_and_nothing_is_left(tmp_path, monkeypatch, capsys):
    """A newcomer's two-layer GRU in FP16 killed the build with SIGSEGV (ONNX Runtime 1.32's graph optimiser on that
    graph), with no error line and its staging folders left behind. The first variant is opened in a child first."""
    from tritongen import ort_session
    from tritongen.cli import main

    assert ort_session.loads_in_a_child(Path("no-such.onnx")) is None  # a refusal is the in-process session's to say
    planted = tmp_path / "downloaded"  # a folder one builds from: its onnxruntime.py ran in the probe (python -c)
    planted.mkdir()
    (planted / "onnxruntime.py").write_text(f"open({str(tmp_path / 'PWNED')!r}, 'w').write('ran')\n")
    monkeypatch.chdir(planted)
    ort_session.loads_in_a_child(Path("no-such.onnx"))
    assert not (tmp_path / "PWNED").exists()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ort_session, "_LOAD_PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert ort_session.loads_in_a_child(Path("any.onnx")) == "signal SIGSEGV"
    torch.manual_seed(0)
    path = factories.save_model(
        TwoLayerGRU().eval(), tmp_path / "gru.pt", "torchscript-trace", (torch.randn(2, 5, 16),)
    )
    argv = ["build", str(path), "--input", "x:FP32:5,16", "--repo", str(tmp_path / "repo"), "--precision", "fp16"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)  # the probe as monkeypatched: every variant crashes
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 1 and len(errors) == 1, errors
    assert "opening the fp16 variant of this model in a child process, ended with signal SIGSEGV" in errors[0]
    assert "--precision fp32" in errors[0]
    assert not (tmp_path / "repo" / "gru").exists() and not list(tmp_path.glob(".tritongen-staging*"))
    monkeypatch.undo()
    # the real probe: this ONNX Runtime crashes on the FP16 GRU graph (a later one may not): never a dead build
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 0 or "opening the fp16 variant of this model in a child process" in err, err


def test_text_calibration_without_a_tokenizer_is_refused_before_the_export(tmp_path, conv):
    """It was refused after the export and the parity gate (8 s of a newcomer's build), and its fix did not say that
    --tokenizer turns the build into a text-in ensemble."""
    (tmp_path / "sentences.txt").write_text("one sentence\nanother one\n")
    for inputs, problem in (
        (["input_ids:INT64:-1"], "calibration data sentences.txt is text, which needs a tokenizer"),
        (
            ["x:FP32:3,32,32"],
            "calibration data sentences.txt is text, but the model takes an image (x FP32 [3, 32, 32])",
        ),
    ):
        lines: list[str] = []
        spec = _conv_spec(
            conv, tmp_path / "repo", precision="int8", calib_data=tmp_path / "sentences.txt", inputs=inputs
        )
        with pytest.raises(TritongenError) as err:
            build(spec, progress=lines.append)
        assert err.value.problem == problem
        assert not lines and not (tmp_path / "repo").exists()  # no stage began, nothing was made
        if "tokenizer" in problem:
            assert "an ensemble NAME of NAME_preprocess -> NAME_model -> NAME_postprocess" in err.value.fix


def test_the_reference_check_takes_rows_of_several_lengths_a_constant_flag_and_names_a_nan(tmp_path):
    """Found by an attacker: held-out batches of two lengths (the README's folder of .npz files for several sizes)
    ended every INT8/FP16 build in a traceback (np.concatenate of rows of two widths); a model with a constant
    validity flag beside a varying output could never be built in INT8 (no data can vary a constant); and a NaN in
    the FP32 answers was blamed on the variant."""
    from tritongen.errors import TritongenError
    from tritongen.precision.stage import check_references_differ

    rng = np.random.default_rng(0)
    calib = tmp_path / "calib"
    varying = [(rng.standard_normal((32, 24)),), (rng.standard_normal((32, 40)),)]
    check_references_differ(["y"], varying, calib)
    with_flag = [(rng.standard_normal((8, 4)), np.ones((8, 4))) for _ in range(2)]
    check_references_differ(["y", "valid"], with_flag, calib)
    constant = [(np.ones((8, 4)), np.zeros((8, 2))) for _ in range(2)]
    with pytest.raises(TritongenError, match=r"with the same 'y' \(16 rows\), and so in every other output"):
        check_references_differ(["y", "valid"], constant, calib)
    nan = [(np.array([[1.0, np.nan], [2.0, 3.0]]),)]
    with pytest.raises(TritongenError, match="answers NaN or Inf in 'y' on held-out samples"):
        check_references_differ(["y"], nan, calib)


def test_min_top1_without_a_class_output_is_refused_before_the_guard_runs(tmp_path):
    """Found by an attacker: every attempt of the guard (and its sensitivity pass) ran, then failed with "--min-top1
    is set but no output is shaped [batch, classes]" and a fix about calibration data."""
    from tests.test_bad_input import _assert_one_clean_line, _run

    torch.manual_seed(0)
    path = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(nn.Linear(16, 1).eval()), str(path))
    argv = ["build", str(path), "--input", "x:FP32:16", "--max-batch-size", "8", "--repo", str(tmp_path / "r")]
    code, out, err = _run([*argv, "--target", "onnxruntime", "--precision", "fp16", "--min-top1", "0.9"])
    _assert_one_clean_line(
        "top-1 of no classes", code, out, err, ("no output of the model is shaped", "leave --min-top1")
    )
    assert "attempt" not in err and not (tmp_path / "r").exists()
