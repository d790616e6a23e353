"""Export failures in one line (issue 16, item 4), through the real CLI entry point.

Each failing case ends with exactly one ``error: <problem>: <fix>`` line naming the operator, shape or line of
``forward()``, exit code 1, no traceback and no graph dump on the terminal, nothing written into any repository
or the working folder, and torch's whole output in the log file that the line names. ``--exporter`` chooses the
exporter; under ``auto`` a model the dynamo exporter cannot translate is built by the TorchScript exporter, and
the build says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests import factories
from tests.test_bad_input import _assert_one_clean_line, _run, _snapshot
from tritongen.errors import TritongenError
from tritongen.export import onnx_from_module
from tritongen.load import module_from_file
from tritongen.samples import sample_set_from_spec
from tritongen.spec import build_spec_from_options

LOG_RE = re.compile(r"torch's output is in (\S+\.log)")
CONV_INPUTS = "inputs: [{name: x, dims: [3, 32, 32]}]\n"


class FixedBatch(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(2, -1).sum(0, keepdim=True).expand(2, 4)


def _pickled(root: Path, model: torch.nn.Module, name: str) -> Path:
    path = root / f"{name}.pt"
    if not path.exists():
        factories.save_model(model, path, "pickled_module")
    return path


def _exported_fixed_batch(root: Path) -> Path:
    """A torch.export archive saved the plain way: its batch fixed at the example's 2."""
    path = root / "fixed.pt2"
    if not path.exists():
        torch.manual_seed(0)
        torch.export.save(torch.export.export(torch.nn.Linear(4, 3).eval(), (torch.randn(2, 4),)), str(path))
    return path


def _spec(root: Path, text: str) -> Path:
    path = root / f"spec-{abs(hash(text))}.yaml"
    path.write_text(text)
    return path


def _traced_conv(root: Path) -> Path:
    path = root / "conv_ts.pt"
    if not path.exists():
        factories.save_model(factories.make_small_conv(), path, "torchscript-trace", factories.small_conv_inputs())
    return path


# (case id, argv builder(root, repo), words the error line must contain, whether a log file is named)
CASES: list[tuple[str, Callable[[Path, Path], list[str]], tuple[str, ...], bool]] = [
    (
        "operator no exporter translates",
        lambda r, repo: [
            "build",
            str(_pickled(r, factories.KthValue(), "kth")),
            "--input",
            "x:FP32:-1",
            "--allow-pickle",
            "--repo",
            str(repo),
        ],
        (
            "ONNX export failed (dynamo exporter)",
            "operator aten::kthvalue has no ONNX translation",
            "the torchscript exporter also failed",
            "replace aten::kthvalue",
        ),
        True,
    ),
    (
        "operator the dynamo exporter cannot translate, --exporter dynamo",
        lambda r, repo: [
            "build",
            str(_pickled(r, factories.PairwiseDistance(), "cdist")),
            "--input",
            "x:FP32:-1,4",
            "--allow-pickle",
            "--exporter",
            "dynamo",
            "--repo",
            str(repo),
        ],
        ("operator aten::_cdist_forward", "--exporter torchscript may succeed"),
        True,
    ),
    (
        "operator the torchscript exporter cannot translate, --exporter torchscript",
        lambda r, repo: [
            "build",
            str(_pickled(r, factories.KthValue(), "kth")),
            "--input",
            "x:FP32:-1",
            "--allow-pickle",
            "--exporter",
            "torchscript",
            "--repo",
            str(repo),
        ],
        ("ONNX export failed (torchscript exporter)", "aten::kthvalue", "--exporter dynamo may succeed"),
        True,
    ),
    (
        "dimension declared -1 that the model fixes",
        lambda r, repo: [
            "build",
            str(_pickled(r, factories.FixedWidth(), "fixed_width")),
            "--input",
            "x:FP32:-1",
            "--allow-pickle",
            "--dim-range",
            "x:0:16:16:16",
            "--repo",
            str(repo),
        ],
        ("fixes dimension 0 of input 'x' (declared -1) to 16", "declare that dimension as 16"),
        True,
    ),
    (
        "model that fails at the default size of a -1 dimension",
        lambda r, repo: [
            "build",
            str(_pickled(r, factories.FixedWidth(), "fixed_width")),
            "--input",
            "x:FP32:-1",
            "--allow-pickle",
            "--repo",
            str(repo),
        ],
        ("the model failed on inputs x[2, 64]", "default sizes 32/64/128", "pass --dim-range x:0:MIN:OPT:MAX"),
        False,
    ),
    (
        "batch dimension that the model fixes",
        lambda r, repo: [
            "build",
            str(_pickled(r, FixedBatch(), "fixed_batch")),
            "--input",
            "x:FP32:4",
            "--allow-pickle",
            "--repo",
            str(repo),
        ],
        ("fixes the batch dimension of input 'x' to 2", "--max-batch-size 0"),
        True,
    ),
    (
        "a torch.export archive exported with a fixed batch",
        lambda r, repo: ["build", str(_exported_fixed_batch(r)), "--input", "x:FP32:4", "--repo", str(repo)],
        ("batch dimension of input 'x' to 2", "batch = torch.export.Dim('batch'); dynamic_shapes={'x': {0: batch}}"),
        True,
    ),
    (
        "control flow on a tensor's value",
        lambda r, repo: [
            "build",
            str(_pickled(r, factories.DataDependent(), "data_dependent")),
            "--input",
            "x:FP32:4",
            "--allow-pickle",
            "--repo",
            str(repo),
        ],
        (
            "branches on a tensor's value at factories.py:",
            "if x.sum() > 0:",
            "turns a tensor into a Python boolean",
            "torch.where",
        ),
        True,
    ),
    (
        "--exporter dynamo on a TorchScript module",
        lambda r, repo: [
            "build",
            str(_traced_conv(r)),
            "--input",
            "x:FP32:3,32,32",
            "--exporter",
            "dynamo",
            "--repo",
            str(repo),
        ],
        ("--exporter dynamo cannot export a TorchScript module", "--exporter torchscript"),
        False,
    ),
    (
        "unknown exporter in the spec file",
        lambda r, repo: [
            "build",
            str(_traced_conv(r)),
            "--spec",
            str(_spec(r, f"{CONV_INPUTS}exporter: onnx2\n")),
            "--repo",
            str(repo),
        ],
        ("unknown exporter 'onnx2'", "auto, dynamo, torchscript"),
        False,
    ),
    (
        "exporter of the wrong type in the spec file",
        lambda r, repo: [
            "build",
            str(_traced_conv(r)),
            "--spec",
            str(_spec(r, f"{CONV_INPUTS}exporter: [dynamo]\n")),
            "--repo",
            str(repo),
        ],
        ("exporter is ['dynamo']", "non-empty string"),
        False,
    ),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export_attacks")


@pytest.fixture(scope="module")
def repo(root) -> Path:
    """A repository with one good build that no case may change."""
    repo = root / "repo"
    code, out, err = _run(
        [
            "build",
            str(_traced_conv(root)),
            "--name",
            "conv",
            "--input",
            "x:FP32:3,32,32",
            "--max-batch-size",
            "2",
            "--repo",
            str(repo),
        ]
    )
    assert code == 0, err
    return repo


@pytest.mark.parametrize("case, argv, words, logged", CASES, ids=[c[0] for c in CASES])
def test_export_failure_is_one_line_and_a_log(root, repo, tmp_path, monkeypatch, case, argv, words, logged):
    monkeypatch.chdir(tmp_path / ".")
    logs = root / "logs" / re.sub(r"\W+", "_", case)
    monkeypatch.setenv("TRITONGEN_LOG_DIR", str(logs))
    before = _snapshot(repo)
    code, out, err = _run(argv(root, repo))
    _assert_one_clean_line(case, code, out, err, words)
    assert code == 1
    assert "def forward" not in err and "Torch IR graph" not in err and "[torch.onnx]" not in err, err
    assert len(err.splitlines()) <= 8, err  # progress lines and the error, nothing of torch's
    assert _snapshot(repo) == before, "an earlier build was changed"
    assert not [p for p in repo.iterdir() if p.name.startswith(".")], "staging folder left behind"
    assert not list(tmp_path.iterdir()), "something was written into the working folder"
    named = LOG_RE.findall(err)
    if not logged:
        assert not named and not logs.exists()
        return
    assert len(named) == 1 and Path(named[0]).parent == logs, err
    text = Path(named[0]).read_text()
    assert "Traceback (most recent call last)" in text  # torch's own message and stack are kept there
    assert [p.name for p in logs.iterdir()] == [Path(named[0]).name]


def test_a_wrong_dtype_is_not_blamed_on_the_default_size_of_a_variable_dimension(root, tmp_path):
    """FP32 ids for an embedding: the fix is the dtype; --dim-range advice (as for a size) would mislead."""
    model = _pickled(root, torch.nn.Sequential(torch.nn.Embedding(100, 8), torch.nn.Linear(8, 2)), "embedding")
    argv = ["build", str(model), "--input", "input_ids:FP32:-1", "--allow-pickle", "--repo", str(tmp_path / "repo")]
    code, out, err = _run(argv)
    words = ("the model failed on inputs input_ids[2, 64] float32", "scalar types", "dtypes")
    _assert_one_clean_line("wrong dtype", code, out, err, words)
    assert "--dim-range" not in err and "default sizes" not in err, err


@pytest.mark.parametrize(
    "reason, sized",
    [
        ("mat1 and mat2 must have the same dtype, but got Long and Float", False),
        ("Input type (long int) and bias type (float) should be the same", False),
        ("Expected tensor for argument #1 'indices' to have one of the following scalar types: Long, Int", False),
        ("mixed dtype (CPU): all inputs must share same datatype.", False),
        ("\"softmax_lastdim_kernel_impl\" not implemented for 'Long'", False),
        ("RNN input dtype (torch.int64) does not match weight dtype (torch.float32)", False),
        ("result type Float can't be cast to the desired output type Long", False),
        ("mat1 and mat2 shapes cannot be multiplied (2x5 and 4x2)", True),
        ("Kernel size can't be greater than actual input size", True),
        ("shape '[2, 16]' is invalid for input of size 128", True),
    ],
)
def test_only_a_failure_that_is_not_a_dtype_gets_the_size_advice(tmp_path, reason, sized):
    from tritongen.export import _size_hint

    (tmp_path / "m.pt").write_bytes(b"")
    spec = build_spec_from_options(tmp_path / "m.pt", inputs=["x:FP32:-1"])
    hint = _size_hint(spec, reason)
    assert ("--dim-range x:0:MIN:OPT:MAX" in hint) is sized
    # a dtype failure names the dtypes declared and which a model usually takes (a newcomer got a generic hint)
    assert ("torch names a data type: the inputs were declared x FP32: give each the dtype" in hint) is not sized
    device = "Input type (torch.cuda.FloatTensor) and weight type (torch.FloatTensor) should be the same"
    assert _size_hint(spec, device) == ""  # a CPU/GPU mismatch: no dtype (nor size) advice


def test_unwritable_log_folder_still_gives_one_line(root, repo, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("TRITONGEN_LOG_DIR", str(blocker / "logs"))
    code, out, err = _run(
        [
            "build",
            str(_pickled(root, factories.KthValue(), "kth")),
            "--input",
            "x:FP32:-1",
            "--allow-pickle",
            "--repo",
            str(repo),
            "--name",
            "kth",
        ]
    )
    _assert_one_clean_line("unwritable log folder", code, out, err, ("aten::kthvalue", "could not be saved"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]


def test_fallback_to_torchscript_is_said_and_recorded(root, tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONGEN_LOG_DIR", str(tmp_path / "logs"))
    repo = tmp_path / "repo"
    cdist = _pickled(root, factories.PairwiseDistance(), "cdist")
    code, out, err = _run(
        ["build", str(cdist), "--input", "x:FP32:-1,4", "--allow-pickle", "--repo", str(repo), "--max-batch-size", "4"]
    )
    assert code == 0, err
    assert "torchscript exporter) in" in out
    assert "the torchscript exporter was used because the dynamo exporter failed: operator aten::_cdist_forward" in out
    assert "used the torchscript exporter because the dynamo exporter failed" in err
    manifest = json.loads((repo / "cdist" / "1" / "tritongen" / "manifest.json").read_text())
    assert manifest["export"]["requested"] == "auto" and manifest["export"]["exporter"] == "torchscript"
    assert "aten::_cdist_forward" in manifest["export"]["fallback"]
    assert manifest["parity"]["ok"] and all(r["ok"] for r in manifest["parity"]["results"])
    log = LOG_RE.search(manifest["export"]["fallback"])
    assert log and "_cdist_forward" in Path(log.group(1)).read_text()


def test_explicit_torchscript_keeps_a_trace_warning(tmp_path, monkeypatch):
    """Chosen by hand, the TorchScript exporter's trace warnings are reported instead of refusing the trace."""
    monkeypatch.setenv("TRITONGEN_LOG_DIR", str(tmp_path / "logs"))
    path = factories.save_model(factories.DataDependent(), tmp_path / "m.pt", "pickled_module")
    spec = build_spec_from_options(path, inputs=["x:FP32:4"], allow_pickle=True, exporter="torchscript")
    loaded = module_from_file(path, allow_pickle=True)
    result = onnx_from_module(loaded, spec, sample_set_from_spec(spec).export, tmp_path / "o", tmp_path / "r")
    assert result.exporter == "torchscript" and not result.fallback
    assert len(result.warnings) == 1 and "Python boolean at factories.py:" in result.warnings[0]
    assert not (tmp_path / "logs").exists()  # nothing failed, so no log


def test_explicit_torchscript_exports_a_plain_module(tmp_path):
    path = factories.save_model(factories.make_small_conv(), tmp_path / "m.pt", "state_dict")
    spec = build_spec_from_options(
        path, inputs=["x:FP32:3,32,32"], model_factory="tests.factories:make_small_conv", exporter="torchscript"
    )
    loaded = module_from_file(path, "tests.factories:make_small_conv")
    result = onnx_from_module(loaded, spec, sample_set_from_spec(spec).export, tmp_path / "o", tmp_path / "r")
    assert result.exporter == "torchscript" and result.onnx_path.is_file()


def test_unknown_exporter_flag_value_is_refused(tmp_path):
    path = factories.save_model(factories.make_small_conv(), tmp_path / "m.pt", "state_dict")
    with pytest.raises(TritongenError, match="unknown exporter 'tvm'"):
        build_spec_from_options(path, inputs=["x:FP32:3,32,32"], exporter="tvm")


def test_three_missing_arguments_are_listed_once_each():
    from tritongen.export import _size_hint

    reason = "M.forward() missing 3 required positional arguments: 'a', 'b', and 'c'"
    spec = build_spec_from_options(Path(__file__), inputs=["x:FP32:-1"])
    assert "forward() also takes 'a', 'b', 'c': declare one input" in _size_hint(spec, reason)


@pytest.mark.parametrize(
    "inputs, words",
    [
        (["a:FP32:4"], "forward() also takes 'b': declare one input per argument of forward(), in its order"),
        (["a:FP32:4", "b:FP32:4", "c:FP32:4"], "forward() takes 2 argument(s) and 3 input(s) are declared"),
    ],
)
def test_inputs_that_are_not_forwards_arguments_are_named_without_the_size_advice(tmp_path, inputs, words):
    """A forward(ids, mask) built with only --input ids was told to pass --dim-range for ids."""
    model = factories.save_model(factories.make_two_in_two_out(), tmp_path / "m.pt", "state_dict")
    argv = ["build", str(model), "--model-factory", "tests.factories:make_two_in_two_out", "--repo", str(tmp_path)]
    code, out, err = _run([*argv, *(arg for spec in inputs for arg in ("--input", spec))])
    _assert_one_clean_line("inputs that are not forward()'s", code, out, err, ("the model failed on inputs", words))
    assert "--dim-range" not in err and "default sizes" not in err, err
