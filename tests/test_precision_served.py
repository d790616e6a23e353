"""FP16 and INT8 variants built with ``--target local``, served by the real Triton and checked through it.

``--target local`` serves the variant's own ``model.onnx`` with ONNX Runtime on the CPU (Python backend), so
``infer --check`` measures the served answers against the FP32 PyTorch reference with the guard's bar from the
manifest; a variant file changed after the build is refused before Triton boots.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tritongen
from bench.served_precision import served_throughput_rps
from tests import factories
from tests.conftest import free_ports
from tritongen.build import LOCAL_FP16_NOTE, build
from tritongen.cli import main as cli_main
from tritongen.errors import TritongenError
from tritongen.infer import InferSpec, infer_model
from tritongen.npz import arrays_from_npz
from tritongen.parity import compare_arrays
from tritongen.precision.accuracy import AccuracyReport
from tritongen.spec import build_spec_from_options
from tritongen.verify import check_verified

MIN_TOP1 = 0.9


def _spec(model: Path, repo: Path, precision: str, calib: Path | None):
    return build_spec_from_options(
        model,
        name=f"conv_{precision}",
        inputs=["x:FP32:3,32,32"],
        outputs=["logits"],
        max_batch_size=8,
        model_factory="tests.factories:make_small_conv",
        repo=repo,
        target="local",
        precision=precision,
        calib_data=calib,
        min_top1=MIN_TOP1,
    )


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    work = tmp_path_factory.mktemp("variants")
    conv = factories.save_model(factories.make_small_conv(), work / "conv.pt", "state_dict")
    calib = work / "calib.npz"  # the build's parity samples (seed 0 elsewhere) are not among these
    np.savez(calib, x=np.random.default_rng(7).standard_normal((128, 3, 32, 32)).astype(np.float32))
    said: dict[str, list[str]] = {}
    for precision in ("int8", "fp16"):
        said[precision] = []
        build(_spec(conv, work / "repo", precision, calib if precision == "int8" else None), said[precision].append)
    return work / "repo", said


def test_fp16_on_the_cpu_says_it_may_be_slow_and_int8_does_not(variants):
    _, said = variants
    assert any(LOCAL_FP16_NOTE in line for line in said["fp16"])
    assert not any(LOCAL_FP16_NOTE in line for line in said["int8"])


def test_an_int8_builds_check_samples_are_held_out_calibration_rows(variants):
    """infer --check of an INT8 image model failed its own bar: it sent the build's random samples (std 1), outside
    the range its calibration data covered ([-1, 1] pixels), while the guard had measured held-out calibration
    samples. The saved samples are now held-out calibration rows, with PyTorch FP32's outputs on them."""
    import torch

    repo, _ = variants
    artifacts = repo / "conv_int8" / "1" / "tritongen"
    sent = arrays_from_npz(artifacts / "samples.npz")["x"]
    calib = np.load(repo.parent / "calib.npz")["x"]
    rows = [int(np.flatnonzero((calib == row).all(axis=(1, 2, 3)))[0]) for row in sent]  # each is a calib row
    assert len(rows) == len(sent) > 1 and all(r % 4 == 3 for r in rows), rows  # every 4th sample is held out
    net = factories.make_small_conv()
    net.load_state_dict(torch.load(repo.parent / "conv.pt"))
    want = net.eval()(torch.from_numpy(sent)).detach().numpy()
    got = arrays_from_npz(artifacts / "reference_outputs.npz")["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    fp16 = arrays_from_npz(repo / "conv_fp16" / "1" / "tritongen" / "samples.npz")["x"]  # no calibration data
    assert not any((calib == row).all(axis=(1, 2, 3)).any() for row in fp16)


@pytest.mark.server
def test_served_variants_pass_the_guards_bar_against_pytorch_fp32(variants, server_install, capsys):
    repo, _ = variants
    http, grpc, metrics = free_ports(3)  # never the defaults: another server there would answer instead
    with tritongen.serve(repo, http_port=http, grpc_port=grpc, metrics_port=metrics) as server:
        for precision in ("int8", "fp16"):
            name = f"conv_{precision}"
            result = infer_model(InferSpec(name=name, repo=repo, url=server.grpc_url, check=True))
            check = result.check
            assert isinstance(check, AccuracyReport) and check.ok, result.text()
            assert result.precision == precision and f"check of the {precision} variant" in result.text()
            recorded = json.loads((repo / name / "1" / "tritongen" / "manifest.json").read_text())["precision"]
            assert (check.min_cosine, check.min_top1) == (recorded["accuracy"]["min_cosine"], MIN_TOP1)
            assert check.top1 is not None and check.top1 >= MIN_TOP1
            if precision == "int8":  # the server ran the INT8 graph: FP32's 1e-4 tolerance would reject its answers
                want = arrays_from_npz(repo / name / "1" / "tritongen" / "reference_outputs.npz")["logits"]
                assert not compare_arrays("served", "logits", result.outputs["logits"], want, 1e-4, 1e-3).ok
        cli_main(["infer", "conv_int8", "--check", "--repo", str(repo), "--url", server.grpc_url])  # exits on MISMATCH
        assert "check of the int8 variant" in capsys.readouterr().out
        # the served-throughput figure bench/precision.py prints: tritongen's perf engine, requests without errors
        assert served_throughput_rps(repo, "conv_int8", concurrency=4, duration_s=1.0, url=server.grpc_url) > 0


@pytest.mark.parametrize("file", ["model.onnx", "model.onnx.data"])
def test_a_changed_variant_file_is_refused_before_triton_boots(variants, tmp_path, file):
    repo = tmp_path / "repo"
    shutil.copytree(variants[0], repo, ignore=shutil.ignore_patterns("__pycache__"))  # as the build left it
    target = repo / "conv_int8" / "1" / file
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of the INT8 graph or its weights
    target.write_bytes(bytes(data))
    with pytest.raises(TritongenError, match=f"conv_int8/1/{file} does not match"):
        check_verified(repo)
    with pytest.raises(TritongenError, match=f"conv_int8/1/{file} does not match"):
        with tritongen.serve(repo):
            pass


def test_a_text_ensemble_with_a_variant_model_step_points_to_the_step_check(tmp_path):
    from tests.test_ensemble import save_text_classifier
    from tritongen.ensemble import build_ensemble

    model = save_text_classifier(tmp_path / "sentiment")
    build_ensemble(build_spec_from_options(model, repo=tmp_path / "repo", max_batch_size=4, precision="fp16"))
    # refused before any request (nothing listens on port 9): its saved answers are FP32 PyTorch's
    with pytest.raises(TritongenError, match=r"fp16 model step.*tritongen infer sentiment_model --check"):
        infer_model(InferSpec(name="sentiment", repo=tmp_path / "repo", url="127.0.0.1:9", check=True))


def test_an_int8_text_ensembles_model_step_keeps_the_build_sentences_as_its_samples(tmp_path):
    """The model step's saved samples (and so end_to_end.json, which pairs them with the build's sentences) stay the
    build's own sentences: calibration lines in their place made the end-to-end reference answer other texts."""
    from tests.test_ensemble import save_text_classifier
    from tritongen.ensemble import build_ensemble

    model = save_text_classifier(tmp_path / "sentiment")
    lines = [f"calibration line number {i} about the weather in some town" for i in range(80)]
    (tmp_path / "calib.txt").write_text("\n".join(lines) + "\n")
    spec = dict(repo=tmp_path / "repo", max_batch_size=4, precision="int8", calib_data=tmp_path / "calib.txt")
    build_ensemble(build_spec_from_options(model, min_cosine=0.5, **spec))
    fp32 = tmp_path / "fp32"
    build_ensemble(build_spec_from_options(model, repo=fp32, max_batch_size=4))
    step = "sentiment_model/1/tritongen/samples.npz"
    int8_ids, fp32_ids = arrays_from_npz(tmp_path / "repo" / step), arrays_from_npz(fp32 / step)
    np.testing.assert_array_equal(int8_ids["input_ids"], fp32_ids["input_ids"])  # the same sentences, tokenized
