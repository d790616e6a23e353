"""Issue 10's corpus for strings that reach generated files, the repository boundary and ensemble integrity.

Through the real CLI entry point: labels (Hugging Face ``id2label``), model and tensor names with control
characters or beyond the length bound, a class index of 300000000, single-model builds onto an ensemble's
composing model, builds through symbolic links, and ``--host`` values that are not addresses. Every case ends
with exit code 1, exactly one ``error:`` line, no traceback, nothing written, earlier builds unchanged and no
marker file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import factories
from tests.test_bad_input import CONV, _assert_one_clean_line, _run, _snapshot
from tritongen.errors import TritongenError
from tritongen.hf import labels_from_config
from tritongen.layout import link_problems
from tritongen.names import MAX_LABELS, MAX_NAME_CHARS, check_host, check_label, check_name
from tritongen.validate import validate_repository

MARKER = "PWNED"


@dataclass
class World:
    """Files the cases point at, made once per module."""

    root: Path
    conv: Path = field(init=False)
    repo: Path = field(init=False)  # 'conv' and the ensemble 'ens' (= ens_model -> ens_postprocess)
    link_repo: Path = field(init=False)  # 'linked' -> outside/conv_copy; 'vlinked/2' -> outside/conv_copy/1
    outside: Path = field(init=False)  # must never change
    hf: Path = field(init=False)  # a small random-initialised Hugging Face text classifier

    def __post_init__(self) -> None:
        from tests.test_ensemble import save_text_classifier

        self.conv = factories.save_model(
            factories.make_small_conv(), self.root / "conv.pt", "torchscript-trace", factories.small_conv_inputs()
        )
        self.repo = self.root / "repo"
        assert _run(["build", str(self.conv), "--name", "conv", "--repo", str(self.repo), *CONV])[0] == 0
        ensemble = ["--name", "ens", "--postprocess", "softmax-topk", "--repo", str(self.repo), *CONV]
        assert _run(["build", str(self.conv), *ensemble])[0] == 0
        self.outside = self.root / "outside"
        shutil.copytree(self.repo / "conv", self.outside / "conv_copy")
        self.link_repo = self.root / "link_repo"
        shutil.copytree(self.repo / "conv", self.link_repo / "conv")
        (self.link_repo / "linked").symlink_to(self.outside / "conv_copy", target_is_directory=True)
        shutil.copytree(self.repo / "conv", self.link_repo / "vlinked")
        (self.link_repo / "vlinked" / "2").symlink_to(self.outside / "conv_copy" / "1", target_is_directory=True)
        self.hf = save_text_classifier(self.root / "hf_clf")

    def hf_with(self, name: str, **config) -> Path:
        """A copy of the classifier folder whose config.json has ``config`` applied (None removes a key)."""
        folder = self.root / name
        if not folder.exists():
            shutil.copytree(self.hf, folder)
            data = json.loads((self.hf / "config.json").read_text())
            for key, value in config.items():
                data.pop(key, None) if value is None else data.__setitem__(key, value)
            (folder / "config.json").write_text(json.dumps(data))  # json escapes control characters
        return folder

    def spec(self, name: str, text: str) -> Path:
        path = self.root / name
        path.write_text(text)
        return path


def _marker(world: World) -> str:
    return str(world.root / MARKER)


def _labels(*names: str) -> dict[str, str]:
    return {str(i): n for i, n in enumerate(names)}


def _build(w: World, *args: str, repo: Path | None = None) -> list[str]:
    return ["build", *args, "--repo", str(repo or w.repo)]


def _hf_build(w: World, name: str, **config) -> list[str]:
    return _build(w, str(w.hf_with(f"hf_{name}", **config)), "--name", name)


def _conv_build(w: World, *args: str, repo: Path | None = None) -> list[str]:
    return _build(w, str(w.conv), *CONV, *args, repo=repo)


SPEC_NAME_CR = 'name: "spec\\r"\ninputs:\n  - {name: x, dtype: FP32, dims: [3, 32, 32]}\n'
SPEC_TENSOR_LS = 'inputs:\n  - {name: "x\\u2028", dtype: FP32, dims: [3, 32, 32]}\n'

# (case id, argv builder, words the error line must contain)
CASES: list[tuple[str, Callable[[World], list[str]], tuple[str, ...]]] = [
    (
        "id2label name with \\r",
        lambda w: _hf_build(w, "cr", id2label=_labels("neg", "neu\rtral", "pos", "mixed")),
        ("U+000D", "id2label[1]"),
    ),
    (
        "id2label name with \\x85",
        lambda w: _hf_build(w, "nel", id2label=_labels("neg", "neu", "po\x85s", "mixed")),
        ("U+0085",),
    ),
    (
        "id2label name with \\u2029",
        lambda w: _hf_build(w, "ps", id2label=_labels("neg", "neu", "pos", "mi\u2029xed")),
        ("U+2029",),
    ),
    (
        "id2label key 300000000",
        lambda w: _hf_build(w, "huge", id2label={"0": "neg", "300000000": "pos"}),
        ("300000000", str(MAX_LABELS)),
    ),
    (
        "id2label key beyond num_labels",
        lambda w: _hf_build(w, "beyond", id2label={"0": "a", "7": "b"}, num_labels=4),
        ("outside 0..3",),
    ),
    ("id2label that is a list", lambda w: _hf_build(w, "listed", id2label=["neg", "pos"]), ("not a mapping",)),
    (
        "tensor name with \\n via --input",
        lambda w: _build(w, str(w.conv), "--input", "x\n:FP32:3,32,32", "--name", "nl"),
        ("tensor name", "U+000A"),
    ),
    (
        "tensor name with NUL via --output",
        lambda w: _conv_build(w, "--output", "logits\x00", "--name", "nul"),
        ("tensor name", "U+0000"),
    ),
    (
        "model name with \\u2028 via --name",
        lambda w: _conv_build(w, "--name", "conv\u2028two"),
        ("model name", "U+2028"),
    ),
    (
        "model name with \\n at the end via --name",
        lambda w: _conv_build(w, "--name", "conv\n"),
        ("model name", "U+000A"),
    ),
    (
        "model name with \\r via --spec",
        lambda w: _build(w, str(w.conv), "--spec", str(w.spec("names.yaml", SPEC_NAME_CR))),
        ("model name", "U+000D"),
    ),
    (
        "tensor name with \\u2028 via --spec",
        lambda w: _build(w, str(w.conv), "--name", "specx", "--spec", str(w.spec("tensor.yaml", SPEC_TENSOR_LS))),
        ("tensor name", "U+2028"),
    ),
    ("overlong model name", lambda w: _conv_build(w, "--name", "m" * 300), ("300 characters", str(MAX_NAME_CHARS))),
    (
        "overlong tensor name",
        lambda w: _build(w, str(w.conv), "--input", "x" * 200 + ":FP32:3,32,32", "--name", "long"),
        ("200 characters",),
    ),
    (
        "model path with \\n and \\r in the error message",
        lambda w: _build(w, str(w.root / "no\nsuch\rmodel.pt"), *CONV),
        ("no\\nsuch\\rmodel.pt",),
    ),
    (
        "--force onto an ensemble's composing model",
        lambda w: _conv_build(w, "--name", "ens_model", "--force"),
        ("ensemble 'ens'", "--force"),
    ),
    (
        "--new-version onto an ensemble's composing model",
        lambda w: _conv_build(w, "--name", "ens_model", "--new-version"),
        ("ensemble 'ens'", "--name ens"),
    ),
    (
        "--force onto an ensemble's post-processing step",
        lambda w: _conv_build(w, "--name", "ens_postprocess", "--force"),
        ("ensemble 'ens'",),
    ),
    (
        "--new-version onto a symlinked model folder",
        lambda w: _conv_build(w, "--name", "linked", "--new-version", repo=w.link_repo),
        ("symbolic link",),
    ),
    (
        "--force onto a symlinked model folder",
        lambda w: _conv_build(w, "--name", "linked", "--force", repo=w.link_repo),
        ("symbolic link",),
    ),
    (
        "--new-version onto a model whose version folder is a symlink",
        lambda w: _conv_build(w, "--name", "vlinked", "--new-version", repo=w.link_repo),
        ("version folder", "symbolic link"),
    ),
    ("validate: a symlinked model folder", lambda w: ["validate", str(w.link_repo)], ("problem",)),
    (
        "serve: --host with a shell command",
        lambda w: ["serve", str(w.repo), "--host", f"1.2.3.4; touch {_marker(w)}"],
        ("--host", "not an IP address"),
    ),
    ("serve: --host that is an option", lambda w: ["serve", str(w.repo), "--host", "-v"], ("--host '-v'",)),
    (
        "serve --docker: --host with a command substitution",
        lambda w: ["serve", str(w.repo), "--docker", "--host", f"$(touch {_marker(w)})"],
        ("--host",),
    ),
    (
        "serve: --host with an IPv6 zone holding a command",
        lambda w: ["serve", str(w.repo), "--host", f"fe80::1%;touch {_marker(w)}"],
        ("--host",),
    ),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("attacks_strings"))


@pytest.mark.parametrize("case, argv, words", CASES, ids=[c[0] for c in CASES])
def test_attack_gets_one_clean_line_and_writes_nothing(world, tmp_path, monkeypatch, case, argv, words):
    monkeypatch.chdir(tmp_path)  # the default repository folder is ./model_repository
    before = {root: _snapshot(root) for root in (world.repo, world.link_repo, world.outside)}
    links = {p.name: os.readlink(p) for p in world.link_repo.iterdir() if p.is_symlink()}
    start = time.monotonic()
    code, out, err = _run(argv(world))
    assert time.monotonic() - start < 30, "refused too slowly: something of the claimed size was built"
    _assert_one_clean_line(case, code, out, err, words)
    assert code == 1
    assert not list(tmp_path.iterdir()), "output left behind"
    for root, files in before.items():
        assert _snapshot(root) == files, f"{root.name} was changed"
        assert not [p for p in root.iterdir() if p.name.startswith(".")], "staging folder left behind"
    assert {p.name: os.readlink(p) for p in world.link_repo.iterdir() if p.is_symlink()} == links
    assert not (world.root / MARKER).exists(), "a command ran"


def test_links_inside_a_model_folder_are_refused_only_when_they_leave_the_repository(world, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(world.repo / "conv", repo / "conv")
    (repo / "conv" / "1" / "inside.onnx").symlink_to(repo / "conv" / "1" / "model.onnx")
    assert link_problems(repo, repo / "conv") == []
    (repo / "conv" / "1" / "outside.txt").symlink_to(world.outside / "conv_copy" / "config.pbtxt")
    found = link_problems(repo, repo / "conv")
    assert [p for p in found if "conv/1/outside.txt" in p and "outside the repository" in p], found
    assert not validate_repository(repo).ok


def test_corpus_has_the_cases_issue_10_asks_for():
    assert len(CASES) >= 9


def test_ensemble_rebuilt_with_force_may_replace_its_steps(world, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(world.repo, repo)
    code, _, err = _run(
        [
            "build",
            str(world.conv),
            *CONV,
            "--name",
            "ens",
            "--postprocess",
            "softmax-topk",
            "--top-k",
            "3",
            "--force",
            "--repo",
            str(repo),
        ]
    )
    assert code == 0, err
    assert "dims: [ 3 ]" in (repo / "ens_postprocess" / "config.pbtxt").read_text()
    code, _, err = _run(
        [
            "build",
            str(world.conv),
            *CONV,
            "--name",
            "ens",
            "--postprocess",
            "softmax-topk",
            "--top-k",
            "3",  # the interface every version shares (another top-k is refused: test_build)
            "--new-version",
            "--repo",
            str(repo),
        ]
    )
    assert code == 0, err
    assert sorted(p.name for p in (repo / "ens_model").iterdir() if p.name.isdigit()) == ["1", "2"]
    assert validate_repository(repo).ok


ENSEMBLE_OF_FILLER = """\
name: "hand"
platform: "ensemble"
max_batch_size: 4
input [{{ name: "IMAGE" data_type: TYPE_FP32 dims: [ 3, 32, 32 ] }}]
output [{{ name: "SCORES" data_type: TYPE_FP32 dims: [ {classes} ] }}]
ensemble_scheduling {{ step [{{ model_name: "filler" model_version: -1
  input_map {{ key: "x" value: "IMAGE" }} output_map {{ key: "logits" value: "SCORES" }} }}] }}
"""


@pytest.mark.parametrize("classes, ok", [(10, True), (5, False)])
def test_a_model_filling_a_hand_written_ensemble_is_checked_against_it(world, tmp_path, classes, ok):
    """The ensemble calls 'filler', which is missing (that alone is not the build's doing); the build of 'filler'
    is installed only if the ensemble is then valid."""
    repo = tmp_path / "repo"
    (repo / "hand" / "1").mkdir(parents=True)
    (repo / "hand" / "config.pbtxt").write_text(ENSEMBLE_OF_FILLER.format(classes=classes))
    code, _, err = _run(
        ["build", str(world.conv), *CONV, "--name", "filler", "--output", "logits", "--repo", str(repo)]
    )
    if ok:
        assert code == 0, err
        assert validate_repository(repo).ok
    else:
        _assert_one_clean_line("mismatch", code, "", err, ("ensemble 'hand' invalid", "SCORES"))
        assert sorted(p.name for p in repo.iterdir()) == ["hand"]


def test_labels_from_config_bounds_before_building_anything():
    start = time.monotonic()
    with pytest.raises(TritongenError, match="not a class count"):
        labels_from_config({"num_labels": 300_000_000})
    with pytest.raises(TritongenError, match="not a class index"):
        labels_from_config({"id2label": {"1e9": "x"}})
    with pytest.raises(TritongenError, match="twice"):
        labels_from_config({"id2label": {"1": "a", "01": "b"}})
    assert time.monotonic() - start < 1
    assert labels_from_config({"id2label": {"1": "pos", "0": "neg"}, "num_labels": 3}) == ("neg", "pos", "LABEL_2")


@pytest.mark.parametrize(
    "text",
    [
        "a\rb",
        "a\nb",
        "a\x00b",
        "a\x85b",
        "a\u2028b",
        "a\u2029b",
        "a\x0bb",
        "a\x1cb",
        "a\ufeffb",
        "a\u200eb",
        "a\ud800b",
    ],
)
def test_control_and_format_characters_are_refused_in_labels_and_names(text):
    with pytest.raises(TritongenError) as err:
        check_label(text, "id2label[0]")
    assert "\n" not in err.value.message and "U+" in err.value.message
    with pytest.raises(TritongenError):
        check_name(text, "model name")


def test_ordinary_unicode_labels_pass():
    for label in ("tr\u00e8s bien", "\u65e5\u672c\u8a9e", "mixed\u00a0feelings", "tab-free \u2713", ""):
        assert check_label(label, "id2label[0]") == label


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "fe80::1%lo"])
def test_addresses_and_resolvable_names_are_hosts(host):
    assert check_host(host) == host


@pytest.mark.parametrize(
    "host",
    [
        "",
        " 127.0.0.1",
        "-v",
        "--http-port=1",
        "a b",
        "host;id",
        "x`id`",
        "1.2.3.4\n",
        "no-such-host.invalid",
        "a" * 300,
    ],
)
def test_anything_else_is_not_a_host(host):
    with pytest.raises(TritongenError, match="--host"):
        check_host(host)
