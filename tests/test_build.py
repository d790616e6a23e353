"""The whole build stage chain on real models, into a temporary repository (no server needed)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests import factories
from tritongen.build import build
from tritongen.errors import TritongenError
from tritongen.manifest import sha256_file
from tritongen.spec import build_spec_from_options
from tritongen.validate import check_repository


@pytest.fixture(scope="module")
def conv_state_dict(tmp_path_factory) -> Path:
    return factories.save_model(factories.make_small_conv(), tmp_path_factory.mktemp("m") / "conv.pt", "state_dict")


def _spec(model: Path, repo: Path, **options):
    defaults = dict(
        inputs=["x:FP32:3,32,32"],
        outputs=["logits"],
        model_factory="tests.factories:make_small_conv",
        max_batch_size=4,
        repo=repo,
        name="conv",
    )
    defaults.update(options)
    return build_spec_from_options(model, **defaults)


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_build_writes_a_complete_validated_model(tmp_path, conv_state_dict):
    lines: list[str] = []
    result = build(_spec(conv_state_dict, tmp_path / "repo"), progress=lines.append)
    model_dir = tmp_path / "repo" / "conv"
    assert result.model_dir == model_dir and result.version == 1
    for rel in (
        "config.pbtxt",
        "warmup/x",
        "1/model.onnx",
        "1/model.onnx.data",
        "1/model.py",
        "1/tritongen/manifest.json",
        "1/tritongen/samples.npz",
        "1/tritongen/reference_outputs.npz",
    ):
        assert (model_dir / rel).is_file(), rel
    assert not [p for p in (tmp_path / "repo").iterdir() if p.name.startswith(".")], "staging folder left behind"
    assert oct(model_dir.stat().st_mode & 0o777) == oct(0o755 & ~_umask())
    check_repository(tmp_path / "repo")
    config = (model_dir / "config.pbtxt").read_text()
    assert 'backend: "python"' in config and "KIND_CPU" in config
    assert "preferred_batch_size: [ 2, 4 ]" in config and "max_queue_delay_microseconds: 500" in config
    assert (model_dir / "warmup" / "x").stat().st_size == 3 * 32 * 32 * 4  # one FP32 sample
    manifest = json.loads((model_dir / "1/tritongen/manifest.json").read_text())
    assert manifest["parity"]["ok"] and manifest["source"]["form"] == "state_dict"
    assert manifest["spec"]["outputs"] == [{"name": "logits", "dtype": "FP32", "dims": [10]}]
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["tools"])
    for rel, digest in manifest["files"].items():
        assert sha256_file(model_dir / rel) == digest, rel
    assert "1/model.onnx" in manifest["files"] and "config.pbtxt" in manifest["files"]
    reference = np.load(model_dir / "1/tritongen/reference_outputs.npz")
    assert reference["logits"].shape == (4, 10)
    assert any("parity gate" in line for line in lines)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_onnxruntime_target_config(tmp_path, conv_state_dict):
    result = build(
        _spec(
            conv_state_dict,
            tmp_path / "repo",
            target="onnxruntime",
            instance_count=2,
            preferred_batch_sizes=[4],
            max_queue_delay_us=100,
        )
    )
    config = result.config_path.read_text()
    assert 'backend: "onnxruntime"' in config and "KIND_GPU" in config and "count: 2" in config
    assert "preferred_batch_size: [ 4 ]" in config and "max_queue_delay_microseconds: 100" in config
    assert not (result.model_dir / "1" / "model.py").exists()


def test_existing_model_needs_force_and_new_version_adds_one(tmp_path, conv_state_dict):
    repo = tmp_path / "repo"
    build(_spec(conv_state_dict, repo))
    onnx_hash = sha256_file(repo / "conv/1/model.onnx")
    before = _listing(repo)
    with pytest.raises(TritongenError, match="already exists.*--force"):
        build(_spec(conv_state_dict, repo))
    assert _listing(repo) == before
    result = build(_spec(conv_state_dict, repo, new_version=True))
    assert result.version == 2 and (repo / "conv/2/model.onnx").is_file()
    assert sha256_file(repo / "conv/1/model.onnx") == onnx_hash, "version 1 must be untouched"
    check_repository(repo)
    replaced = build(_spec(conv_state_dict, repo, force=True, max_batch_size=2))
    assert replaced.version == 1 and not (repo / "conv/2").exists()
    assert "max_batch_size: 2" in (repo / "conv/config.pbtxt").read_text()


def test_failed_build_leaves_nothing_behind(tmp_path):
    class Broken(factories.DynamicSeq):
        def forward(self, x):
            return (x - 1e9).log()  # NaN: the parity gate must stop the build

    model = factories.save_model(Broken(), tmp_path / "nan.pt", "torchscript-trace", factories.dynamic_seq_inputs())
    repo = tmp_path / "repo"
    with pytest.raises(TritongenError, match="PyTorch's output 'output' holds NaN on the build's samples") as info:
        build(build_spec_from_options(model, inputs=["x:FP32:-1,8"], repo=repo))
    assert "PyTorch output holds NaN" in info.value.details
    assert not repo.exists(), "a repository folder created by a failed build must be removed"

    repo.mkdir()
    (repo / "keep").mkdir()
    with pytest.raises(TritongenError):
        build(build_spec_from_options(model, inputs=["x:FP32:-1,8"], repo=repo))
    assert _listing(repo) == ["keep"]


def test_repository_path_that_is_a_file(tmp_path, conv_state_dict):
    target = tmp_path / "repo"
    target.write_text("not a folder")
    with pytest.raises(TritongenError, match="is a file"):
        build(_spec(conv_state_dict, target))


def test_dynamic_dims_and_two_outputs_in_config(tmp_path):
    model = factories.save_model(
        factories.make_dynamic_seq(), tmp_path / "seq.pt", "torchscript-trace", factories.dynamic_seq_inputs()
    )
    result = build(build_spec_from_options(model, inputs=["x:FP32:-1,8"], repo=tmp_path / "repo", max_batch_size=0))
    config = result.config_path.read_text()
    assert "max_batch_size: 0" in config and "dims: [ -1, 8 ]" in config and "dynamic_batching" not in config
    pair = factories.save_model(
        factories.make_two_in_two_out(), tmp_path / "pair.pt2", "torch.export", factories.two_in_two_out_inputs()
    )
    result = build(
        build_spec_from_options(
            pair, inputs=["a:FP32:4", "b:FP32:4"], outputs=["sum", "product"], repo=tmp_path / "repo"
        )
    )
    assert [t.name for t in result.spec.outputs] == ["sum", "product"]
    check_repository(tmp_path / "repo")


def test_a_new_version_over_a_tuned_config_says_the_tuned_settings_go(tmp_path):
    import torch

    import tritongen
    from tritongen.layout import TUNED_CONFIG_HEADER

    net, example = torch.nn.Linear(4, 3), {"x": torch.randn(2, 4)}
    repo = tmp_path / "repo"
    tritongen.build(net, example_inputs=example, name="lin", repo=repo)
    config = repo / "lin" / "config.pbtxt"
    lines: list[str] = []
    tritongen.build(net, example_inputs=example, name="lin", repo=repo, new_version=True, progress=lines.append)
    assert not any("written by tritongen tune" in line for line in lines)  # a config the build wrote: no note
    config.write_text(TUNED_CONFIG_HEADER + config.read_text())
    lines.clear()
    tritongen.build(net, example_inputs=example, name="lin", repo=repo, new_version=True, progress=lines.append)
    assert any("lin/config.pbtxt was written by tritongen tune" in line and "tune again" in line for line in lines)


@pytest.mark.parametrize("target", ["onnxruntime", "local"])
def test_a_scalar_per_batch_item_gets_an_empty_reshape(tmp_path, target):
    """forward() returning [batch] (a score per item): dims [1] alone made the ONNX Runtime backend refuse the model
    ("the model expects 1 dimensions (shape [-1]) but the model configuration specifies 2"); with `reshape: { shape:
    [ ] }` the model writes [batch] and clients read [batch, 1], in every target alike."""
    import torch

    import tritongen
    from tritongen.validate import config_from_file

    class Score(torch.nn.Module):
        def forward(self, x):
            return x.sum(-1)

    result = tritongen.build(Score(), example_inputs={"x": torch.randn(2, 3)}, repo=tmp_path / "repo", target=target)
    assert result.parity.ok
    (output,) = config_from_file(result.config_path).output
    assert list(output.dims) == [1] and output.HasField("reshape") and list(output.reshape.shape) == []
    assert result.spec.outputs[0].scalar and result.spec.outputs[0].to_dict()["scalar"] is True
    check_repository(tmp_path / "repo")


class _IndexedScale(__import__("torch").nn.Module):
    """x [batch, 4] scaled by an embedding row chosen by t [batch]: one index per item, as a class label or a
    diffusion timestep is."""

    def __init__(self) -> None:
        import torch

        super().__init__()
        self.table = torch.nn.Embedding(10, 4)

    def forward(self, x, t):
        return x * self.table(t)


@pytest.mark.parametrize("target", ["onnxruntime", "local"])
def test_a_scalar_per_item_input_is_read_by_the_model_as_batch(tmp_path, target):
    """`--input t:INT64:` (nothing after the colon): the model reads t as [batch] and clients send [batch, 1]
    through Triton's empty reshape. Before, the model read [batch, 1] and the embedding answered [batch, 1, 4]."""
    import torch

    import tritongen
    from tritongen.layout import SAMPLES_NAME
    from tritongen.npz import arrays_from_npz
    from tritongen.validate import config_from_file

    path = tmp_path / "indexed.pt"
    torch.jit.save(torch.jit.script(_IndexedScale().eval()), str(path))
    result = tritongen.build(
        path, inputs=["x:FP32:4", "t:INT64:"], max_batch_size=8, repo=tmp_path / "repo", target=target
    )
    assert result.parity.ok
    config = config_from_file(result.config_path)
    x, t = config.input
    assert not x.HasField("reshape") and list(t.dims) == [1] and t.HasField("reshape") and not t.reshape.shape
    assert [list(o.dims) for o in config.output] == [[4]]  # [batch, 4], not [batch, 1, 4]
    assert result.spec.inputs[1].scalar and result.spec.inputs[1].shape == ()
    samples = arrays_from_npz(result.model_dir / "1" / "tritongen" / SAMPLES_NAME)
    assert samples["t"].ndim == 1 and samples["x"].shape == (len(samples["t"]), 4)
    check_repository(tmp_path / "repo")


def test_a_scalar_per_item_stays_1_where_the_model_does_not_batch(tmp_path):
    """Without a batch dimension there is nothing for a scalar to ride on (Triton has no 0-d tensor): t is [1]."""
    import torch

    torch.jit.save(torch.jit.script(_IndexedScale().eval()), str(tmp_path / "m.pt"))
    spec = build_spec_from_options(
        tmp_path / "m.pt", inputs=["x:FP32:4", "t:INT64:"], max_batch_size=0, repo=tmp_path / "repo", name="m"
    )
    assert spec.inputs[1].dims == (1,) and not spec.inputs[1].scalar and spec.inputs[1].shape == (1,)


def test_a_model_of_max_batch_size_1_passes_its_gate_with_one_batch_1_case(tmp_path, conv_state_dict):
    """Both parity cases were labelled "batch 1" and the references are keyed by label: the first case was compared
    with the second case's reference, and every --max-batch-size 1 build failed its gate."""
    result = build(_spec(conv_state_dict, tmp_path / "repo", max_batch_size=1))
    assert result.parity.ok
    cases = [r.case for r in result.parity.results]
    assert cases == ["batch 1"]


def test_a_new_version_that_changes_the_shared_interface_is_refused_and_new_settings_are_said(
    tmp_path, conv_state_dict
):
    """config.pbtxt is one for all versions: a --new-version with a renamed input rewrote it for every version, and
    after a restart Triton served the unchecked new version (the recorded live one no longer loaded; its clients'
    input 'x' was refused; `rollback --to-version` failed)."""
    repo = tmp_path / "repo"
    build(_spec(conv_state_dict, repo))
    before = (repo / "conv" / "config.pbtxt").read_bytes()
    for options, words in (
        ({"inputs": ["image:FP32:3,32,32"]}, "input 'x' is gone; input 'image' is new"),
        ({"outputs": ["scores"]}, "output 'logits' is gone"),
        ({"max_batch_size": 0, "inputs": ["x:FP32:1,3,32,32"]}, "max_batch_size 4 -> 0 (batching turned on or off)"),
        # python's model.py runner beside version 1's onnxruntime-only folder (and KIND_GPU on a CPU host)
        ({"target": "onnxruntime"}, "backend 'python' -> 'onnxruntime'"),
    ):
        with pytest.raises(TritongenError) as err:
            build(_spec(conv_state_dict, repo, new_version=True, **options))
        problem = err.value.problem
        assert "version 2 of 'conv' changes the interface its other versions share in config.pbtxt: " in problem
        assert words in problem, problem
        assert "--name conv_v2" in err.value.fix and "--force" in err.value.fix
        assert (repo / "conv" / "config.pbtxt").read_bytes() == before and not (repo / "conv" / "2").exists()
    lines: list[str] = []
    result = build(
        _spec(conv_state_dict, repo, new_version=True, max_batch_size=8, instance_count=2), progress=lines.append
    )
    assert result.version == 2
    (note,) = [line for line in lines if "settings change for every version" in line]
    assert "max_batch_size 4 -> 8" in note and "instances 1 -> 2" in note and "tritongen rollout keeps" in note


def test_a_new_version_of_an_ensemble_that_changes_an_interface_is_refused(tmp_path):
    """The ensemble build installed a new version without the check: --top-k 5 over --top-k 3 changed the
    ensemble's LABELS/SCORES dims for every version, and a 5-class model over a 10-class one went in silently."""
    from tests.test_bad_input import CONV, _run

    conv = factories.save_model(
        factories.make_small_conv(), tmp_path / "conv.pt", "torchscript-trace", factories.small_conv_inputs()
    )
    base = ["build", str(conv), "--name", "ens", "--postprocess", "softmax-topk", "--repo", str(tmp_path / "r"), *CONV]
    code, out, err = _run([*base, "--top-k", "3"])
    assert code == 0, err
    before = (tmp_path / "r" / "ens" / "config.pbtxt").read_bytes()
    code, out, err = _run([*base, "--top-k", "5", "--new-version"])
    assert code == 1 and "changes the interface its other versions share in config.pbtxt" in err, err
    assert "dims [3] -> [5]" in err
    assert (tmp_path / "r" / "ens" / "config.pbtxt").read_bytes() == before and not (
        tmp_path / "r" / "ens" / "2"
    ).exists()
