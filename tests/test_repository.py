"""tritongen.repository: installs that go in whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tritongen.errors import TritongenError
from tritongen.repository import InstallPlan, Undo, install_model, installing


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its text."""
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def _model(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def test_an_install_that_fails_after_another_in_the_same_block_takes_the_first_back(tmp_path):
    """An ensemble's models go in one by one: the third failing (not a signal) left the first two of the new build
    beside the old ensemble."""
    repo, stage = tmp_path / "repo", tmp_path / "stage"
    _model(repo / "pre", {"config.pbtxt": "old pre", "1/model.py": "old"})
    staged_pre = _model(stage / "pre", {"config.pbtxt": "new pre", "1/model.py": "new"})
    staged_ens = _model(stage / "ens", {"config.pbtxt": "new ensemble", "1/.keep": ""})
    trash = stage / "trash"
    trash.mkdir()
    _model(repo / "ens", {"config.pbtxt": "appeared after planning"})  # a plan of "new" now meets a full folder
    before = _tree(repo)
    plans = [
        (staged_pre, InstallPlan(repo, repo / "pre", 1, "replace", ())),
        (staged_ens, InstallPlan(repo, repo / "ens", 1, "new", ())),
    ]
    with pytest.raises(OSError):
        with installing(repo) as undo:
            for staged, plan in plans:
                install_model(staged, plan, trash, undo)
    assert _tree(repo) == before  # the old pre is back, the other folder untouched
    assert _tree(stage / "pre")["config.pbtxt"] == "new pre"  # the staged one went back to the staging folder


def test_a_new_version_whose_shared_file_cannot_be_placed_leaves_the_model_as_it_was(tmp_path):
    """A new version's folder went in, then its shared files one by one: a failure on the second left version 2
    served with the old labels and the new config."""
    repo, stage = tmp_path / "repo", tmp_path / "stage"
    model = _model(repo / "m", {"config.pbtxt": "v1 config", "labels.txt": "v1 labels", "1/model.onnx": "one"})
    before = _tree(repo)
    staged = _model(stage / "m", {"config.pbtxt": "v2 config", "labels.txt/x": "a folder", "2/model.onnx": "two"})
    trash = stage / "trash"
    trash.mkdir()
    with pytest.raises(OSError):  # a folder cannot replace a file in one rename
        install_model(staged, InstallPlan(repo, model, 2, "new_version", ()), trash)
    assert _tree(repo) == before
    assert not (model / "2").exists()


def test_a_new_version_that_goes_in_whole_keeps_the_replaced_files_in_the_trash(tmp_path):
    repo, stage = tmp_path / "repo", tmp_path / "stage"
    model = _model(repo / "m", {"config.pbtxt": "v1 config", "tok/vocab.txt": "v1", "1/model.onnx": "one"})
    staged = _model(stage / "m", {"config.pbtxt": "v2 config", "labels.txt": "new", "tok/vocab.txt": "v2"})
    _model(staged, {"2/model.onnx": "two"})
    trash = stage / "trash"
    trash.mkdir()
    install_model(staged, InstallPlan(repo, model, 2, "new_version", ()), trash)
    assert _tree(model) == {
        "1/model.onnx": "one",
        "2/model.onnx": "two",
        "config.pbtxt": "v2 config",
        "labels.txt": "new",
        "tok/vocab.txt": "v2",
    }
    assert _tree(trash) == {"config.pbtxt": "v1 config", "tok/vocab.txt": "v1"}


def test_a_step_that_cannot_be_undone_is_named_and_the_error_says_so(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("x")
    with pytest.raises(TritongenError, match=r"could not be undone: .*b") as caught:
        with installing(tmp_path) as undo:
            undo.rename(a, b)
            os.remove(b)  # someone else took it
            raise OSError(28, "No space left on device")
    assert "No space left on device" in caught.value.problem and caught.value.fix


def test_undo_reverses_newest_first(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_text("x")
    undo = Undo()
    undo.rename(a, b)
    undo.rename(b, c)  # oldest first would move b back before it exists again
    assert undo.undo() == [] and a.read_text() == "x" and not b.exists() and not c.exists()
    assert undo.undo() == []  # nothing left to undo


def test_a_file_replace_that_fails_is_not_undone_as_if_it_had_happened(tmp_path):
    """A reviewer's catch: the step was recorded before the rename it stood for, so a failed rename was "undone" too,
    and a repository left as it was was reported as one that could not be put back."""
    target = tmp_path / "labels.txt"
    with pytest.raises(FileNotFoundError):  # the install's own error, not "could not be undone"
        with installing(tmp_path) as undo:
            undo.replace_file(tmp_path / "missing", target, tmp_path / "kept")
    assert not target.exists()
